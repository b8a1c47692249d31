"""The results on disk: `benchmark.json` with every figure, and the Markdown table
(`benchmark.md`, and between the markers of docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from clipmg.errors import DataError

RESULTS_JSON = "benchmark.json"
RESULTS_MD = "benchmark.md"
DOC_BEGIN = "<!-- bench:begin -->"
DOC_END = "<!-- bench:end -->"


def settings_parser(script: str, doc: str, defaults,
                    **flag_options: dict) -> argparse.ArgumentParser:
    """A single-measurement script's flags: one for each field of its settings dataclass
    `defaults` (typed as its default, or declared by `flag_options[field]`), --out and
    --work-dir."""
    parser = argparse.ArgumentParser(prog=script, description=doc.split("\n\n")[0])
    for name, value in asdict(defaults).items():
        options = flag_options.get(name) or {"type": type(value) if value is not None else int,
                                             "default": value}
        parser.add_argument("--" + name.replace("_", "-"), **options)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--work-dir", type=Path,
                        help="keep the data and runs here (default: a temporary folder)")
    return parser


def run_and_print(run: Callable[[object, Path], dict], settings, render: Callable[[dict], str], command: list[str],
                  out: Path | None, work_dir: Path | None) -> int:
    """A single-measurement script's end: `run(settings, work)` in `work_dir` (or a temporary
    folder), its figures printed by `render` and, with `out`, written to that JSON file."""
    with tempfile.TemporaryDirectory() as tmp:
        results = run(settings, work_dir or Path(tmp))
    results["command"] = shlex.join(command)
    print(render(results))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / RESULTS_JSON, out / RESULTS_MD
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _target_cell(value: float, target: dict, unit: str = "x") -> str:
    verdict = "met" if target["met"] else "**missed**"
    required = "" if target["required"] else ", not required for this model"
    return f"{value:.2f}{unit} (target {target['target']}{unit}: {verdict}{required})"


def _loop_cell(result: dict, encoding: str) -> str:
    run = result["inference"].get("per_image_loops", {}).get(encoding)
    return _number(run["images_per_s"]) if run else "n/a"


def _speedup_cell(result: dict, encoding: str) -> str:
    value = result["inference"].get("loop_speedups", {}).get(encoding)
    return f"{value:.2f}x" if value else "n/a"


def render_markdown(results: dict) -> str:
    models = results["models"]
    names = [m.split(":", 1)[1] for m in models]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell) -> None:
        rows.append((label, [cell(r, {t["key"]: t for t in r["targets"]}) for r in models.values()]))

    memory_rows = results["settings"]["memory_rows"]
    row("text tower (width x layers)", lambda r, t: f"{r['text_tower']['width']} x {r['text_tower']['layers']}")
    row("train samples/s: clipmg (captions, batch contrast)",
        lambda r, t: _number(r["training"]["clipmg"]["samples_per_s"]))
    row("train samples/s: open_clip_train", lambda r, t: _number(r["training"]["open_clip_train"]["samples_per_s"]))
    row("training speed-up", lambda r, t: _target_cell(r["training"]["speedup"], t["training_speedup"]))
    row("test.py images/s (its default decoding workers)",
        lambda r, t: f"{_number(r['inference']['test_py']['images_per_s'])} "
                     f"({r['inference']['test_py']['workers']} workers)")
    row("test.py images/s with the other --workers (0: decoding in the main process)",
        lambda r, t: f"{_number(r['inference']['test_py_other_workers']['images_per_s'])} "
                     f"({r['inference']['test_py_other_workers']['workers']} workers)")
    row("per-image loop images/s (prompts re-encoded, batch 1, padded to the longest prompt)",
        lambda r, t: _number(r["inference"]["per_image_loop"]["images_per_s"]))
    row("test.py speed-up over the loop", lambda r, t: _target_cell(r["inference"]["loop_speedup"], t["loop_speedup"]))
    row("the loop on stock open_clip (prompts padded to 77 tokens) images/s", lambda r, t: _loop_cell(r, "context"))
    row("test.py speed-up over the stock open_clip loop (not a target)", lambda r, t: _speedup_cell(r, "context"))
    row("model-only images/s (random tensors, best thread count)",
        lambda r, t: f"{_number(r['inference']['model_only']['images_per_s'])} "
                     f"({r['inference']['model_only']['best_threads']} threads)")
    row("test.py / model-only: median of back-to-back pairs (each pair's ratio)",
        lambda r, t: _target_cell(r["inference"]["pipeline_efficiency"], t["pipeline_efficiency"], unit="")
        + " (" + ", ".join(f"{p['ratio']:.2f}" for p in r["inference"]["paired"]["pairs"]) + ")")
    for rows_count in memory_rows:
        row(f"test.py peak RSS, {rows_count:,} rows: process / largest child (MiB)",
            lambda r, t, n=rows_count: "{:,.0f} / {:,.0f}".format(
                r["inference"]["memory"]["runs"][str(n)]["peak_rss_mib"],
                r["inference"]["memory"]["runs"][str(n)]["peak_rss_children_mib"]))
    row("memory growth", lambda r, t: _target_cell(r["inference"]["memory"]["growth"], t["memory_growth"]))

    machine, settings, data = results["machine"], results["settings"], results["data"]
    lines = [f"_{settings['note']}_", ""] if settings.get("note") else []
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, GPU {machine['gpu'] or 'none'} "
        f"(device {machine['device']}), torch {machine['torch']}, open_clip {machine['open_clip']}; "
        f"1-min load average {machine['load_average_1min_at_start']} at the start, "
        f"{machine.get('load_average_1min_at_end')} at the end.",
        f"Data: {data['frames']:,} demo frames of {data['frame_size']} px, {data['classes']} classes "
        f"({data['train_frames']:,} training frames); batch {settings['batch_size']}, "
        f"model input {settings['image_size'] or 'each config’s own'}, precision "
        f"{settings['precision']['clipmg']} (open_clip_train {settings['precision']['open_clip_train']}), "
        f"{settings['workers']} data workers and {settings['train_threads']} threads on both training sides, "
        f"{settings['warmup_steps']} warm-up steps; whole run {results['seconds']:,.0f} s.",
        "",
        "| measurement | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines.append("")
    return "\n".join(lines)


def update_doc(doc: Path, fragment: str) -> None:
    """Replace the text between the bench markers of `doc` with `fragment`."""
    text = doc.read_text(encoding="utf-8")
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise DataError(f"{doc}: no {DOC_BEGIN} ... {DOC_END} markers to put the table between")
    doc.write_text(text[:begin + len(DOC_BEGIN)] + "\n" + fragment + text[end:], encoding="utf-8")
