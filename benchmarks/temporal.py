"""What a clip model's temporal head costs: clips/s of clip models against the frame model's
frames/s / K, in training and in test.py, on the same frames (a measurement that prints its
figures; nothing is asserted about them).

    python benchmarks/temporal.py [--model openclip:clipmg-small --clips 48 --clip-frames 8 ...]

Training: the frame model trains on batches of `batch_clips * K` frames, each clip model on
batches of `batch_clips` clips of K frames (the same images per step); the ratio
`clips/s * K / frames/s` is 1 when the temporal head (and batching clips) costs nothing. Every
model is measured `repeats` times, interleaved, and its fastest run counts.
test.py: every frame of a clip is encoded once for its own prediction and, when it is one of
its clip's K, for the clip's; the ratio `clips/s * frames per clip / frames/s` is 1 when the
clip predictions cost nothing beside the frames'.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import run_and_print, settings_parser  # noqa: E402
from clipmg.utils import keep_freed_memory_for_reuse, set_progress  # noqa: E402

HEADS = ("mean", "attention", "transformer")


@dataclass
class TemporalBenchSettings:
    model: str = "openclip:clipmg-small"
    image_size: int | None = 64
    clips: int = 48
    frames_per_clip: int = 8
    clip_frames: int = 8
    batch_clips: int = 4
    steps: int = 6
    warmup_steps: int = 1
    heads: tuple[str, ...] = HEADS
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    repeats: int = 2


def _train_config(settings: TemporalBenchSettings, data: dict, output: Path, head: str | None):
    from clipmg.training import TrainConfig

    clip = {"clip_frames": settings.clip_frames, "temporal": head} if head else {}
    batch = settings.batch_clips if head else settings.batch_clips * settings.clip_frames
    return TrainConfig(metadata=data["metadata"], labels=data["labels"], model=settings.model,
                       image_size=settings.image_size, batch_size=batch, epochs=2, workers=settings.workers,
                       device=settings.device, output=str(output), tensorboard=False, seed=settings.seed,
                       precision="auto", **clip).validate()


def measure_training(settings: TemporalBenchSettings, data: dict, output: Path, head: str | None) -> dict:
    """samples/s (frames, or clips for a clip model) of `steps` training steps after a warm-up;
    leaves the model in `output/bench` for test.py."""
    from benchmarks.training import train_after_warm_up
    from clipmg.training import Trainer

    cfg = _train_config(settings, data, output, head)
    trainer = Trainer(cfg)
    trainer.setup()
    stats = train_after_warm_up(trainer, settings.warmup_steps, settings.steps)
    trainer.save("bench", with_state=False)
    return {"samples_per_s": stats["samples_per_s"], "batch_size": cfg.optim.batch_size,
            "checkpoint": str(output / "bench")}


def measure_test_py(checkpoint: str, frames_csv: Path, output: Path, settings: TemporalBenchSettings) -> dict:
    from clipmg.inference import predict_csv

    summary = predict_csv(checkpoint, frames_csv, output=output, device=settings.device, workers=settings.workers)
    return {"images_per_s": summary["images_per_s"], "clips_per_s": summary["n_clips"] / summary["seconds"],
            "seconds": summary["seconds"], "n_clips": summary["n_clips"]}


def run(settings: TemporalBenchSettings, work: Path) -> dict:
    import pandas as pd

    from clipmg.synthetic import make_demo_data

    data = make_demo_data(work / "data", classes=4, clips=settings.clips, frames_per_clip=settings.frames_per_clip,
                          size=64, seed=settings.seed, motion=settings.frames_per_clip >= 8)
    frames_csv = work / "data" / "frames.csv"
    pd.read_excel(data["metadata"]).to_csv(frames_csv, index=False)
    results = {"settings": asdict(settings), "frame": {"runs": []}, "clip": {head: {"runs": []} for head in settings.heads}}
    # Every model `repeats` times, interleaved (frame model, each head, frame model, ...), and each
    # model's fastest run counts: the machine's drift and warm-up fall on all of them alike.
    for repeat in range(settings.repeats):
        for head in (None, *settings.heads):
            name = f"{head or 'frame'}_{repeat}"
            training = measure_training(settings, data, work / name, head)
            run = {"training": training, "test_py": measure_test_py(training["checkpoint"], frames_csv,
                                                                    work / f"{name}.csv", settings)}
            (results["clip"][head] if head else results["frame"])["runs"].append(run)
    for row in (results["frame"], *results["clip"].values()):
        row["training"] = max((run["training"] for run in row["runs"]), key=lambda r: r["samples_per_s"])
        row["test_py"] = max((run["test_py"] for run in row["runs"]), key=lambda r: r["images_per_s"])
    frames_per_s = results["frame"]["training"]["samples_per_s"]
    test_frames_per_s = results["frame"]["test_py"]["images_per_s"]
    for row in results["clip"].values():
        row["training_ratio"] = row["training"]["samples_per_s"] * settings.clip_frames / frames_per_s
        row["test_py_ratio"] = row["test_py"]["clips_per_s"] * settings.frames_per_clip / test_frames_per_s
    return results


def render(results: dict) -> str:
    s = results["settings"]
    frame = results["frame"]
    lines = [f"{s['model']}, {s['clips']} clips x {s['frames_per_clip']} frames, K = {s['clip_frames']}, "
             f"training batches of {s['batch_clips']} clips (frame model: {s['batch_clips'] * s['clip_frames']} frames)",
             "",
             "| model | training | training ratio | test.py | test.py ratio |",
             "|---|---|---|---|---|",
             f"| frame model | {frame['training']['samples_per_s']:.1f} frames/s | 1 | "
             f"{frame['test_py']['images_per_s']:.1f} frames/s | 1 |"]
    for head, row in results["clip"].items():
        lines.append(f"| clip model, {head} | {row['training']['samples_per_s']:.2f} clips/s | "
                     f"{row['training_ratio']:.2f} | {row['test_py']['clips_per_s']:.2f} clips/s "
                     f"({row['test_py']['images_per_s']:.1f} frames/s) | {row['test_py_ratio']:.2f} |")
    lines += ["", "ratio: clips/s x frames per clip / the frame model's frames/s (1: the clip model costs "
                  "nothing more per frame)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = TemporalBenchSettings()
    heads = {"nargs": "+", "choices": HEADS, "default": list(defaults.heads)}
    parser = settings_parser("benchmarks/temporal.py", __doc__, defaults, heads=heads)
    args = parser.parse_args(argv)
    keep_freed_memory_for_reuse()
    set_progress(False)
    settings = TemporalBenchSettings(**{k: (tuple(v) if k == "heads" else v) for k, v in vars(args).items()
                                        if k in asdict(defaults)})
    return run_and_print(run, settings, render, ["python", "benchmarks/temporal.py", *argv], args.out, args.work_dir)


if __name__ == "__main__":
    sys.exit(main())
