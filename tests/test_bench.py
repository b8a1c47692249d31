"""The benchmark (benchmarks/) keeps working: a tiny end-to-end run,
open_clip_train's subprocess included, plus its parsing and reporting helpers."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import dataset, model_configs, per_image_loop, report, runner, targets, training
from benchmarks.settings import BenchSettings
from clipmg.errors import DataError


def _figures(model_result: dict) -> dict[str, float]:
    training, inference = model_result["training"], model_result["inference"]
    figures = {
        "clipmg samples/s": training["clipmg"]["samples_per_s"],
        "open_clip_train samples/s": training["open_clip_train"]["samples_per_s"],
        "training speed-up": training["speedup"],
        "test.py images/s": inference["test_py"]["images_per_s"],
        "test.py other --workers images/s": inference["test_py_other_workers"]["images_per_s"],
        "per-image loop images/s": inference["per_image_loop"]["images_per_s"],
        "loop speed-up": inference["loop_speedup"],
        "model-only images/s": inference["model_only"]["images_per_s"],
        "pipeline efficiency": inference["pipeline_efficiency"],
        "memory growth": inference["memory"]["growth"],
    }
    for rows, run in inference["memory"]["runs"].items():
        figures[f"peak RSS {rows} rows"] = run["peak_rss_mib"]
    return figures


@pytest.mark.skipif(importlib.util.find_spec("webdataset") is None,
                    reason="open_clip_train needs webdataset and braceexpand (pip install "
                           "'open_clip_torch[training]')")
def test_tiny_benchmark_reports_every_figure(tmp_path):
    settings = BenchSettings(
        out=tmp_path / "out", models=("openclip:clipmg-tiny",), frames=64, size=32, image_size=32,
        batch_size=8, workers=0, threads=1, warmup_steps=1, max_train_steps=2, loop_images=4,
        model_only_batches=2, repeats=2, memory_rows=(64, 128), work_dir=tmp_path / "work")
    results = runner.run_benchmark(settings)

    written = json.loads((tmp_path / "out" / report.RESULTS_JSON).read_text())
    assert written["models"].keys() == {"openclip:clipmg-tiny"}
    for key in ("cpu", "cores", "gpu", "torch", "device"):
        assert key in written["machine"]
    model = written["models"]["openclip:clipmg-tiny"]
    for name, value in _figures(model).items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, name
    assert model["training"]["open_clip_train"]["steps"] == 2  # warm-up step discarded
    assert model["inference"]["test_py"]["rows"] == 64
    runs = model["inference"]["test_py_images_per_s_runs"]
    assert len(runs) == 2 and model["inference"]["test_py"]["images_per_s"] == max(runs)
    # end to end against model-only: one ratio per back-to-back pair, the median counts
    pairs = model["inference"]["paired"]["pairs"]
    assert [p["test_py"]["images_per_s"] for p in pairs] == runs
    for pair in pairs:
        assert pair["ratio"] == pytest.approx(pair["test_py"]["images_per_s"] / pair["model_only_images_per_s"])
    assert model["inference"]["pipeline_efficiency"] == pytest.approx((pairs[0]["ratio"] + pairs[1]["ratio"]) / 2)
    # the target's loop pads only to the longest prompt; stock open_clip's (77 tokens) is beside it
    loops = model["inference"]["per_image_loops"]
    assert loops.keys() == {"longest", "context"} and model["inference"]["per_image_loop"] == loops["longest"]
    assert {model["inference"]["test_py"]["workers"], model["inference"]["test_py_other_workers"]["workers"]} == {0, 1}
    assert model["inference"]["memory"]["runs"]["128"]["rows"] == 128
    assert {t["key"] for t in model["targets"]} == {t.key for t in targets.TARGETS}
    specs = {t.key: t for t in targets.TARGETS}
    for target in model["targets"]:
        assert target["met"] == specs[target["key"]].met(target["value"])
        assert target["required"] == (not specs[target["key"]].clip_text_only)  # tiny text tower

    table = (tmp_path / "out" / report.RESULTS_MD).read_text()
    assert "| measurement | clipmg-tiny |" in table and "open_clip_train" in table
    assert table == report.render_markdown(results)


def test_open_clip_log_parsing_discards_warmup_steps():
    line = ("2026-01-01,00:00:00 | INFO | Train Epoch: 0 [ {n}/128 ({p}%)] Data (t): 0.001 Batch (t): 0.500, "
            "{rate}/s, {rate}/s/gpu LR: 0.000000 Logit Scale: 14.286 Contrastive_loss: 2.0794 (2.0794)")
    log = "\n".join(line.format(n=8 * i, p=i, rate=rate) for i, rate in enumerate([1.0, 16.0, 8.0], 1))
    rates = training.parse_open_clip_steps(log + "\nsome other line\n")
    assert rates == [1.0, 16.0, 8.0]
    # after the warm-up: 2 steps of 8 samples in 0.5 s + 1 s
    assert training.samples_per_s_after_warmup(rates, batch_size=8, warmup_steps=1) == pytest.approx(16 / 1.5)


def test_targets_are_computed_from_the_measurements():
    result = {"training": {"speedup": 1.49}, "inference": {"loop_speedup": 31.0, "pipeline_efficiency": 0.8,
                                                           "memory": {"growth": 1.11}}}
    verdicts = {t["key"]: (t["met"], t["required"]) for t in targets.evaluate_targets(result, clip_text=True)}
    assert verdicts == {"training_speedup": (False, True), "loop_speedup": (True, True),
                        "pipeline_efficiency": (True, True), "memory_growth": (False, True)}
    small = {t["key"]: t["required"] for t in targets.evaluate_targets(result, clip_text=False)}
    assert small == {"training_speedup": False, "loop_speedup": False, "pipeline_efficiency": True,
                     "memory_growth": True}


def test_demo_layout_has_imigues_classes_when_the_frames_allow():
    assert dataset.demo_layout(2000)["classes"] == 32
    assert dataset.demo_layout(2000, classes=12)["classes"] == 12
    assert dataset.demo_layout(64)["classes"] == 4  # 16 clips: 4 a class


def test_clip_sized_text_tower_is_read_from_the_config():
    assert model_configs.has_clip_sized_text("openclip:clipmg-small-cliptext")
    assert not model_configs.has_clip_sized_text("openclip:clipmg-small")


def test_update_doc_replaces_only_between_the_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n{report.DOC_BEGIN}\nold table\n{report.DOC_END}\nafter\n")
    report.update_doc(doc, "| new |\n")
    assert doc.read_text() == f"# Title\n{report.DOC_BEGIN}\n| new |\n{report.DOC_END}\nafter\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(DataError, match="plain.md"):
        report.update_doc(tmp_path / "plain.md", "x")


@pytest.mark.parametrize("change, message", [
    ({"models": ("hybrid",)}, "not an openclip"),
    ({"memory_rows": (20, 10)}, "memory-rows"),
    ({"frames": 8}, "frames"),
    ({"batch_size": 0}, "batch-size"),
    ({"classes": 33}, "classes"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(DataError, match=message):
        BenchSettings(**change).validate()


def test_both_loop_text_encodings_give_the_same_class_embeddings():
    import torch

    from clipmg.models import create_model
    from clipmg.prompts import PromptSet, build_class_embeddings

    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny").eval()
    encoders = per_image_loop.loop_text_encoders(model)
    assert set(encoders) == {"longest", "context"} and encoders["longest"] is model
    stock = encoders["context"]
    tokens = model.tokenizer(["a photo of folding arms"])
    assert tokens.shape[1] == model.clip.context_length  # stock open_clip pads to the full context
    names = ["Folding arms", "Scratching head", "Touching nose"]
    with torch.no_grad():
        original = build_class_embeddings(stock, names, PromptSet())
        trimmed = build_class_embeddings(model, names, PromptSet())
    torch.testing.assert_close(original, trimmed, rtol=1e-5, atol=1e-5)


def test_temporal_benchmark_prints_clip_throughput_against_the_frame_models(tmp_path, capsys):
    """benchmarks/temporal.py at a tiny size: every figure there and positive (its values are
    measurements, not checked against targets)."""
    from benchmarks import temporal

    out = tmp_path / "temporal.json"
    assert temporal.main(["--model", "openclip:clipmg-tiny", "--clips", "8", "--frames-per-clip", "4",
                          "--clip-frames", "4", "--steps", "1", "--warmup-steps", "0",
                          "--batch-clips", "2", "--heads", "transformer", "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| clip model, transformer |" in printed and "clips/s" in printed
    results = json.loads(out.read_text())
    row = results["clip"]["transformer"]
    for value in (row["training_ratio"], row["test_py_ratio"], row["training"]["samples_per_s"],
                  results["frame"]["training"]["samples_per_s"], results["frame"]["test_py"]["images_per_s"]):
        assert math.isfinite(value) and value > 0
    assert row["test_py"]["n_clips"] == 8


def test_recipe_benchmark_prints_the_defaults_against_the_former_settings(tmp_path, capsys):
    """benchmarks/recipe.py at a tiny size: a positive figure and ratio for every recipe, the
    baseline's ratio 1, and the data workers each recipe ran with."""
    from benchmarks import recipe

    out = tmp_path / "recipe.json"
    assert recipe.main(["--clips", "24", "--frames-per-clip", "6", "--steps", "1", "--warmup-steps", "1",
                        "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert "| former defaults | 2 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["recipes"]
    assert set(rows) == set(recipe.RECIPES) and rows[recipe.BASELINE]["ratio"] == 1
    for row in rows.values():
        assert math.isfinite(row["ratio"]) and row["best"]["samples_per_s"] > 0
    assert rows["former demo"]["best"]["workers"] == 0


def test_the_step_limits_reach_the_trainer_that_runs_them(tiny_train_settings):
    """The trainer holds its own copy of the config (with the resolved learning rates): limits set
    on the caller's copy would be ignored and whole epochs timed."""
    from clipmg.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(**{**tiny_train_settings, "batch_size": 2}).validate())
    trainer.setup()
    training.train_after_warm_up(trainer, warmup_steps=1, steps=2)
    assert trainer.state.global_step == 3
