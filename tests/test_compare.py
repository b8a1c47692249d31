"""`clipmg compare` in quick mode on the tiny dataset: one row per approach, each row's figures
those of `evaluate_checkpoint` on its checkpoint, every approach on the same split."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from clipmg import jobs
from clipmg.checkpoint import read_checkpoint_config
from clipmg.cli.compare import add_compare_arguments
from clipmg.errors import DataError
from clipmg.inference import evaluate_checkpoint
from clipmg.jobs import compare as cmp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

APPROACHES = ["contrastive", "linear-efficientnetv2_b0", "zeroshot-head", "linear-probe", "frame-average",
              "clip-mean", "clip-attention", "clip-transformer"]


@pytest.fixture(scope="module")
def comparison(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    table = cmp.compare(tiny_dataset / "training" / "train.xlsx", tiny_dataset / "Clip_label.csv", None,
                        APPROACHES, out, {"seed": 1}, mode="quick")
    return table, out


def test_table_has_one_row_per_approach_with_the_metrics(comparison):
    table, out = comparison
    assert list(table["approach"]) == APPROACHES
    for column in (*cmp.METRIC_COLUMNS, "train_seconds", "budget"):
        assert column in table and table[column].notna().all(), column
    written = pd.read_csv(out / "comparison.csv")
    assert list(written["approach"]) == APPROACHES
    markdown = (out / "comparison.md").read_text()
    assert all(f"| {name} |" in markdown for name in APPROACHES)


def test_each_row_is_evaluate_checkpoint_on_the_shared_split(comparison, tmp_path):
    table, out = comparison
    split = out / "split.csv"
    for row in table.itertuples(index=False):
        metrics = evaluate_checkpoint(row.checkpoint, split, split=split, subset="val", workers=0,
                                      out_dir=tmp_path / row.approach)
        for key in cmp.METRIC_COLUMNS:
            assert getattr(row, key) == pytest.approx(metrics[key], abs=1e-9), (row.approach, key)
        train = read_checkpoint_config(row.checkpoint)["train"]
        assert train["split"] == str(split)  # same split CSV for every approach


def test_dependent_approaches_start_from_the_contrastive_run(comparison):
    table, out = comparison
    contrastive = table.set_index("approach").loc["contrastive", "checkpoint"]
    assert read_checkpoint_config(out / "zeroshot-head" / "best")["train"]["init_from"] == contrastive
    assert read_checkpoint_config(out / "linear-probe" / "checkpoint")["probe"]["source"] == contrastive


def test_clip_rows_are_clip_models_from_the_contrastive_run(comparison):
    table, out = comparison
    rows = table.set_index("approach")
    assert rows.loc["frame-average", "checkpoint"] == rows.loc["contrastive", "checkpoint"]
    assert rows.loc["frame-average", ["clip_model_top1"]].isna().all()
    for name, temporal in (("clip-mean", "mean"), ("clip-attention", "attention"),
                           ("clip-transformer", "transformer")):
        config = read_checkpoint_config(rows.loc[name, "checkpoint"])
        assert (config["model"]["temporal"], config["model"]["clip_frames"]) == (temporal, 8)
        assert config["train"]["init_from"] == rows.loc["contrastive", "checkpoint"]
        assert rows.loc[name, ["clip_model_top1", "clip_model_balanced_accuracy"]].notna().all()
    assert "| clip_model_top1 |" in (out / "comparison.md").read_text()


def test_clip_approaches_are_not_among_the_defaults():
    from clipmg.cli.compare import default_approaches

    assert "contrastive" in default_approaches() and not {"frame-average", "clip-mean"} & set(default_approaches())


def test_registry_takes_new_approaches_and_rejects_unknown_ones(tiny_dataset, tmp_path, monkeypatch):
    approaches = jobs.approaches
    monkeypatch.setitem(approaches.APPROACHES, "reuse-contrastive", None)  # removed again after the test
    calls = []

    @approaches.register_approach("reuse-contrastive", description="a test approach")
    def reuse(ctx):
        calls.append(ctx.settings("x", epochs=3)["epochs"])
        return approaches.ApproachResult(ctx.run("contrastive").checkpoint, budget="none")

    table = cmp.compare(tiny_dataset / "training" / "train.xlsx", tiny_dataset / "Clip_label.csv", None,
                        ["reuse-contrastive", "contrastive"], tmp_path, {"seed": 1}, mode="quick",
                        epochs={"x": 2})
    assert calls == [2]  # the per-approach budget wins over the approach's own setting
    assert table["checkpoint"].nunique() == 1 and table.loc[0, "train_seconds"] < table.loc[1, "train_seconds"]
    with pytest.raises(DataError, match="unknown approach"):
        cmp.compare(tiny_dataset / "training" / "train.xlsx", tiny_dataset / "Clip_label.csv", None, ["nope"],
                    tmp_path, mode="quick")


def test_compare_command_function_parses_budgets():
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    args = parser.parse_args(["--out", "x", "--epochs", "linear-alexnet=3", "--approaches", "contrastive"])
    assert dict(args.epochs) == {"linear-alexnet": 3} and args.mode == "demo"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--epochs", "linear-alexnet"])
