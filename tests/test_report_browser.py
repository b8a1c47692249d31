"""The HTML report in a real browser: headless Chromium (through Playwright, scripts/check_report.py)
renders it with no console error, no failed or external request, every gallery thumbnail decoded
and as many as the gallery holds. Skipped where no Playwright or no Chromium is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from clipmg.checkpoint import save_checkpoint
from clipmg.inference import predict_csv
from clipmg.models import create_model
from clipmg.prompts import PromptSet
from clipmg.visual import write_html_report

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("playwright.sync_api", reason="the browser extra (playwright) is not installed")


def load_checker():
    spec = importlib.util.spec_from_file_location("check_report", REPO / "scripts" / "check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(checker, page: Path, screenshot: Path | None = None) -> dict:
    try:
        return checker.check_report(page, screenshot)
    except Exception as error:  # playwright's Error when it has no browser to launch
        if checker.find_chromium() is None and "Executable doesn't exist" in str(error):
            pytest.skip("no Chromium: install one (apt install chromium, or playwright install chromium)")
        raise


def test_chromium_renders_the_report_cleanly(tiny_dataset, tmp_path):
    from clipmg.data import load_labels

    labels = load_labels(tiny_dataset / "Clip_label.csv")
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    checkpoint = save_checkpoint(tmp_path / "best", model, {
        "class_ids": list(labels), "class_names": list(labels.values()),
        "prompts": PromptSet(templates=["{}"]).to_dict(), "preprocess": model.preprocess_config})
    summary = predict_csv(checkpoint, tiny_dataset / "training" / "train.xlsx", output=tmp_path / "p.csv",
                          device="cpu", workers=0, gallery_per_class=3)
    page = write_html_report(tmp_path / "report.html", summary["metrics_files"], summary["gallery"])
    result = render(load_checker(), page, tmp_path / "report.png")
    assert result["problems"] == []
    assert result["thumbnails"] == len(summary["gallery"]["entries"]) > 0
    assert result["broken"] == 0
    assert result["classes"] == len(labels) and result["cells"] == len(labels) ** 2
    assert (tmp_path / "report.png").stat().st_size > 10_000
