"""Real-data benchmark: `clipmg train` with its defaults, then `python test.py` on frames of people
(or sessions) never seen in training, against the peer a user would pick instead: open_clip_train
with a tiny CLIP, on the same training frames, for the same epochs, on the same machine, one after
the other.

    python benchmarks/real_data.py --out runs/real_data                 # every set found, 10 epochs
    python benchmarks/real_data.py --out runs/real_data_s1 --seed 1     # another training seed, both sides
    python benchmarks/real_data.py --dataset name=webcam,metadata=M,labels=L,group=Session --sets webcam

Each set is split three ways by the library (`clipmg.data.split_dataset`): a test part by group
(person or session), then validation by clip inside the rest. clipmg chooses best/ on validation;
both are scored on the test part. Sets: the `../shared` development sets where present
(webcam-gestures by session, driver-actions by person), two variants derived from each (the same
frames at 48x48 grayscale; class names that differ in one token, "letter A" ...), the demo, and a
generated 24-class set whose class names differ in one token. Prints a table and writes
`results.json`. Figures: docs/benchmarks.md ("Real data against open_clip_train").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLIPMG_SHARED", ROOT.parent / "shared"))
PEER_CONFIG_DIR = Path(__file__).resolve().parent / "peer_configs"
PEER_MODEL = "peer-tiny-vit"
PEER_LR = 1e-3
PEER_BATCH = 64
TEST_FRACTION = 0.3
VAL_FRACTION = 0.2


@dataclass
class DataSet:
    name: str
    metadata: Path
    labels: Path
    image_root: Path
    group: str | None = None  # test people/sessions come from this column; None: by clip
    notes: str = ""


@dataclass
class Prepared:
    data: DataSet
    split_csv: Path
    test_csv: Path
    peer_train_csv: Path
    class_names: dict
    counts: dict = field(default_factory=dict)


# ---------------------------------------------------------------- data sets
def shared_sets() -> list[DataSet]:
    sets = []
    for name, folder, group in (("webcam", "webcam-gestures", "Session"), ("driver", "driver-actions", "Subject")):
        root = SHARED / folder
        if (root / "training" / "train.xlsx").is_file():
            sets.append(DataSet(name, root / "training" / "train.xlsx", root / "Clip_label.csv", root / "training",
                                group, f"../shared/{folder}, test part by {group}"))
    return sets


def generated_sets(work: Path) -> list[DataSet]:
    from clipmg.jobs.demo import demo_data_settings
    from clipmg.synthetic import make_demo_data

    sets = []
    demo = work / "data" / "demo"
    if not (demo / "Clip_label.csv").is_file():
        make_demo_data(demo, seed=0, **demo_data_settings("frames"))
    sets.append(DataSet("demo", demo / "training" / "train.xlsx", demo / "Clip_label.csv", demo / "training",
                        None, "the demo's generated frames, test part by clip"))
    letters = work / "data" / "letters24"
    if not (letters / "Clip_label.csv").is_file():
        make_demo_data(letters, classes=24, clips=480, frames_per_clip=2, size=64, seed=0, subjects=7)
    sets.append(one_token_names(DataSet("letters24", letters / "training" / "train.xlsx", letters / "Clip_label.csv",
                                        letters / "training", "Subject",
                                        "generated, 24 classes among 7 people, test part by person"), work,
                                suffix=""))
    return sets


def one_token_names(data: DataSet, work: Path, suffix: str = "-letters") -> DataSet:
    """The same frames, the classes renamed "letter A", "letter B", ... (captions too)."""
    out = work / "data" / f"{data.name}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(data.labels, encoding="utf-8-sig")
    labels.columns = [c.strip() for c in labels.columns]
    names = {int(i): f"letter {string.ascii_uppercase[k]}" for k, i in enumerate(labels["id"])}
    pd.DataFrame({"id": list(names), "name": list(names.values())}).to_csv(out / "Clip_label.csv", index=False)
    frames = read_table(data.metadata)
    frames["Caption"] = frames["Class"].map(names)
    frames.to_csv(out / "train.csv", index=False)
    return replace(data, name=f"{data.name}{suffix}", metadata=out / "train.csv", labels=out / "Clip_label.csv",
                   notes=data.notes + "; class names differ in one token")


def small_grayscale(data: DataSet, work: Path, size: int = 48) -> DataSet:
    """The same frames, center-cropped square, 48x48, grayscale."""
    from PIL import Image, ImageOps

    out = work / "data" / f"{data.name}-gray{size}"
    frames = read_table(data.metadata)
    for rel in frames["Path"]:
        target = out / "training" / rel
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(data.image_root / rel) as image:
            ImageOps.fit(image.convert("L"), (size, size), Image.Resampling.LANCZOS).save(target, quality=95)
    frames.to_csv(out / "train.csv", index=False)
    return replace(data, name=f"{data.name}-gray{size}", metadata=out / "train.csv", image_root=out / "training",
                   notes=data.notes + f"; {size}x{size} grayscale")


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_excel(path) if path.suffix in (".xlsx", ".xls") else pd.read_csv(path)


def all_sets(work: Path, extra: list[DataSet]) -> list[DataSet]:
    sets = []
    for data in [*shared_sets(), *extra]:
        sets += [data, small_grayscale(data, work), one_token_names(data, work)]
    return sets + generated_sets(work)


# ------------------------------------------------------------------- splits
def prepare(data: DataSet, work: Path, seed: int = 0) -> Prepared:
    """A test part by group (or clip), then validation by clip inside the rest; the split CSV
    (train/val/test rows), the test frames for test.py and the peer's training CSV."""
    from clipmg import data as cdata
    from clipmg.data.splits import to_original_columns

    out = work / "prepared" / data.name
    out.mkdir(parents=True, exist_ok=True)
    labels = cdata.load_labels(data.labels)
    frames = cdata.read_metadata(data.metadata, labels=labels)
    outer = cdata.split_dataset(frames, by="subject" if data.group else "clip", val_fraction=TEST_FRACTION,
                                seed=seed, subject_column=data.group)
    rest = frames.iloc[outer.train_index].reset_index(drop=True)
    inner = cdata.split_dataset(rest, by="clip", val_fraction=VAL_FRACTION, seed=seed)
    part = np.full(len(rest), "train", dtype=object)
    part[inner.val_index] = "val"
    rest["split"] = part
    test = frames.iloc[outer.val_index].reset_index(drop=True).assign(split="test")
    table = pd.concat([rest, test], ignore_index=True)
    original = to_original_columns(table)
    original["split"] = table["split"].to_numpy()
    split_csv = out / "split.csv"  # train and val rows: test.py scores the test part, once
    original[original["split"] != "test"].to_csv(split_csv, index=False)
    test_csv = out / "test.csv"
    original[original["split"] == "test"].drop(columns="split").to_csv(test_csv, index=False)
    train = table[table["split"] == "train"]
    peer_csv = out / "peer_train.csv"
    pd.DataFrame({"filepath": [str((data.image_root / p).resolve()) for p in train["path"]],
                  "title": [labels[c] for c in train["class_id"]]}).to_csv(peer_csv, index=False)
    counts = {k: int((table["split"] == k).sum()) for k in ("train", "val", "test")}
    counts["classes"] = len(labels)
    if data.group:
        counts["test_groups"] = int(test[data.group].nunique()) if data.group in test else None
    return Prepared(data, split_csv, test_csv, peer_csv, dict(labels), counts)


# ------------------------------------------------------------------- clipmg
def run_clipmg(prep: Prepared, work: Path, epochs: int, extra_args: list[str]) -> dict:
    run_dir = work / "runs" / prep.data.name / "clipmg"
    train_cmd = [str(Path(sys.executable).parent / "clipmg"), "-q", "train", "--metadata", str(prep.split_csv),
                 "--labels", str(prep.data.labels), "--image-root", str(prep.data.image_root),
                 "--split", str(prep.split_csv), "--epochs", str(epochs), "--output", str(run_dir),
                 *extra_args]
    start = time.time()
    done = run_logged(train_cmd, run_dir.parent / "clipmg_train.log")
    train_wall = time.time() - start
    summary = json.loads(done[done.index("{"):])
    predictions = run_dir / "test_predictions.csv"
    test_cmd = [sys.executable, str(ROOT / "test.py"), "-q", "--imagepathscsv", str(prep.test_csv), "--columnname",
                "Path", "--checkpoint", str(run_dir / "best"), "--image-root", str(prep.data.image_root),
                "--output", str(predictions)]
    start_test = time.time()
    run_logged(test_cmd, run_dir.parent / "clipmg_test.log")
    test_wall = time.time() - start_test
    metrics = json.loads(Path(f"{predictions.with_suffix('')}_metrics.json").read_text())
    history = summary.get("history", [])
    return {"top1": metrics["top1"], "balanced_accuracy": metrics["balanced_accuracy"],
            "clip_top1": metrics.get("clip_top1"), "clip_model_top1": metrics.get("clip_model_top1"),
            "train_s": train_wall, "test_s": test_wall, "wall_s": train_wall + test_wall,
            "samples_per_s": float(np.mean([h["train_samples_per_s"] for h in history])) if history else None,
            "best_epoch": summary.get("best_epoch"),
            "val_by_epoch": [(h["epoch"], h.get("val_top1"), h.get("finished_at", start) - start) for h in history]}


def time_to_accuracy(val_by_epoch: list, target: float) -> float | None:
    """Seconds from launch until clipmg's validation top-1 first reached `target`."""
    return next((seconds for _, top1, seconds in val_by_epoch if top1 is not None and top1 >= target), None)


# --------------------------------------------------------------------- peer
PEER_SHIM = """\
import sys
import open_clip
import torch
torch.set_num_threads(int(sys.argv[1]))
open_clip.add_model_config(sys.argv[2])
from open_clip_train.main import main
sys.exit(main(sys.argv[3:]))
"""


def run_peer(prep: Prepared, work: Path, epochs: int, threads: int, seed: int = 0) -> dict:
    run_dir = work / "runs" / prep.data.name / "peer"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = len(pd.read_csv(prep.peer_train_csv))
    steps = max(1, rows // PEER_BATCH) * epochs
    command = [sys.executable, "-c", PEER_SHIM, str(threads), str(PEER_CONFIG_DIR),
               "--train-data", str(prep.peer_train_csv), "--dataset-type", "csv", "--csv-separator", ",",
               "--csv-img-key", "filepath", "--csv-caption-key", "title", "--model", PEER_MODEL,
               "--precision", "fp32", "--device", "cpu", "--batch-size", str(PEER_BATCH), "--lr", str(PEER_LR),
               "--warmup", str(max(1, round(0.05 * steps))), "--epochs", str(epochs), "--workers", str(threads),
               "--save-frequency", str(epochs), "--zeroshot-frequency", "0", "--val-frequency", "0",
               "--logs", str(run_dir), "--name", "run", "--seed", str(seed), "--log-every-n-steps", "1000"]
    start = time.time()
    run_logged(command, run_dir / "train.log", cwd=run_dir, replace_dir=run_dir / "run")
    train_wall = time.time() - start
    checkpoint = run_dir / "run" / "checkpoints" / f"epoch_{epochs}.pt"
    start_test = time.time()
    out = run_logged([sys.executable, "-m", "benchmarks.real_data", "peer-eval", "--checkpoint", str(checkpoint),
                      "--csv", str(prep.test_csv), "--labels", str(prep.data.labels), "--image-root",
                      str(prep.data.image_root), "--threads", str(threads)], run_dir / "eval.log", cwd=ROOT)
    test_wall = time.time() - start_test
    metrics = json.loads(out.strip().splitlines()[-1])
    return {**metrics, "train_s": train_wall, "test_s": test_wall, "wall_s": train_wall + test_wall,
            "samples_per_s": rows * epochs / train_wall, "steps": steps}


def peer_eval(args) -> None:
    """Zero-shot classification of the test frames with the peer's checkpoint and the class names."""
    import open_clip
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    open_clip.add_model_config(str(PEER_CONFIG_DIR))
    model, _, preprocess = open_clip.create_model_and_transforms(PEER_MODEL, pretrained=args.checkpoint)
    tokenizer = open_clip.get_tokenizer(PEER_MODEL)
    labels = pd.read_csv(args.labels, encoding="utf-8-sig")
    labels.columns = [c.strip() for c in labels.columns]
    ids = [int(i) for i in labels["id"]]
    names = [str(n).strip() for n in labels["name"]]
    frames = pd.read_csv(args.csv)
    model.eval()
    predictions = []
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(names)), dim=-1)
        for start in range(0, len(frames), 256):
            paths = frames["Path"].iloc[start:start + 256]
            images = torch.stack([preprocess(Image.open(Path(args.image_root) / p).convert("RGB")) for p in paths])
            features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
            predictions += [ids[i] for i in (features @ text.T).argmax(dim=1).tolist()]
    truth = frames["Class"].astype(int).to_numpy()
    predictions = np.asarray(predictions)
    # sklearn's balanced accuracy (mean recall over the classes in the truth) without its import,
    # which clipmg's test.py does not pay either
    recalls = [float((predictions[truth == c] == c).mean()) for c in np.unique(truth)]
    print(json.dumps({"top1": float((predictions == truth).mean()), "balanced_accuracy": float(np.mean(recalls))}))


# ------------------------------------------------------------------ running
def run_logged(command: list[str], log: Path, cwd: Path | None = None, replace_dir: Path | None = None) -> str:
    """Run `command`, its stderr to `log`; returns its stdout; a failure raises with the log's end."""
    import shutil

    log.parent.mkdir(parents=True, exist_ok=True)
    if replace_dir is not None:
        shutil.rmtree(replace_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w", encoding="utf-8") as err:
        done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(command[:4])} ... failed (exit {done.returncode}); {log}:\n{tail}")
    return done.stdout


def compare(prep: Prepared, work: Path, epochs: int, extra_args: list[str], threads: int, peer: bool,
            seed: int = 0) -> dict:
    row = {"set": prep.data.name, "notes": prep.data.notes, "counts": prep.counts,
           "clipmg": run_clipmg(prep, work, epochs, ["--seed", str(seed), *extra_args])}
    if peer:
        row["peer"] = run_peer(prep, work, epochs, threads, seed)
        c, p = row["clipmg"], row["peer"]
        row["ratios"] = {"top1": c["top1"] / max(p["top1"], 1e-9),
                         "balanced_accuracy": c["balanced_accuracy"] / max(p["balanced_accuracy"], 1e-9),
                         "wall": c["wall_s"] / p["wall_s"], "samples_per_s": (c["samples_per_s"] or 0) / p["samples_per_s"]}
        row["clipmg"]["time_to_peer_top1_s"] = time_to_accuracy(c["val_by_epoch"], p["top1"])
    return row


def table(rows: list[dict]) -> str:
    lines = ["| set | clipmg top-1 | bal. acc | wall s | samples/s | peer top-1 | bal. acc | wall s | samples/s "
             "| wall ratio | clipmg reaches peer top-1 (s) |", "|" + "---|" * 11]
    for row in rows:
        c, p = row["clipmg"], row.get("peer") or {}
        fmt = lambda v, f="{:.3f}": "" if v is None else f.format(v)  # noqa: E731
        lines.append(f"| {row['set']} | {fmt(c['top1'])} | {fmt(c['balanced_accuracy'])} | {fmt(c['wall_s'], '{:.0f}')} "
                     f"| {fmt(c['samples_per_s'], '{:.0f}')} | {fmt(p.get('top1'))} | {fmt(p.get('balanced_accuracy'))} "
                     f"| {fmt(p.get('wall_s'), '{:.0f}')} | {fmt(p.get('samples_per_s'), '{:.0f}')} "
                     f"| {fmt((row.get('ratios') or {}).get('wall'), '{:.2f}')} "
                     f"| {fmt(c.get('time_to_peer_top1_s'), '{:.0f}') or ('never' if p else '')} |")
    return "\n".join(lines)


def parse_dataset(text: str) -> DataSet:
    """name=N,metadata=M,labels=L[,image_root=R][,group=COLUMN]"""
    values = dict(item.split("=", 1) for item in text.split(","))
    metadata = Path(values["metadata"])
    image_root = Path(values.get("image_root") or metadata.parent)
    return DataSet(values["name"], metadata, Path(values["labels"]), image_root, values.get("group"),
                   values.get("notes", values["name"]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "peer-eval":
        p = argparse.ArgumentParser()
        for name in ("--checkpoint", "--csv", "--labels", "--image-root"):
            p.add_argument(name, required=True)
        p.add_argument("--threads", type=int, default=os.cpu_count())
        peer_eval(p.parse_args(argv[1:]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/real_data")
    p.add_argument("--dataset", action="append", default=[], help=parse_dataset.__doc__)
    p.add_argument("--sets", help="comma-separated names to run (default all)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--clipmg-args", default="", help="extra `clipmg train` flags (default: none, the defaults)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="training seed of both sides (the split stays seed 0's)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    work = Path(args.out).resolve()
    sets = all_sets(work, [parse_dataset(d) for d in args.dataset])
    if args.sets:
        wanted = args.sets.split(",")
        sets = [s for s in sets if s.name in wanted]
    rows = []
    for data in sets:
        row = compare(prepare(data, work), work, args.epochs, shlex.split(args.clipmg_args), args.threads,
                      not args.no_peer, args.seed)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        (work / "results.json").write_text(json.dumps({"epochs": args.epochs, "seed": args.seed, "clipmg_args": args.clipmg_args,
                                                       "rows": rows}, indent=2, default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
