"""The HTML report (`test.py --report`, `clipmg evaluate --report`): the gallery keeps the most
confident mistakes per true class while predictions stream, and the page is self-contained
(checked here structurally with the standard library; tests/test_report_browser.py renders it)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.inference import evaluate_checkpoint, predict_csv
from clipmg.inference.gallery import MisclassifiedGallery
from clipmg.models import create_model
from clipmg.prompts import PromptSet
from clipmg.visual import write_html_report

REPO = Path(__file__).resolve().parent.parent
PER_CLASS = 2
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset) -> Path:
    """Untrained, so that most frames are misclassified."""
    from clipmg.data import load_labels

    labels = load_labels(tiny_dataset / "Clip_label.csv")
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, {
        "class_ids": list(labels), "class_names": list(labels.values()),
        "prompts": PromptSet(templates=["{}"]).to_dict(), "preprocess": model.preprocess_config})


@pytest.fixture(scope="module")
def predicted(checkpoint, tiny_dataset, tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    out = tmp_path_factory.mktemp("pred") / "predictions.csv"
    summary = predict_csv(checkpoint, tiny_dataset / "training" / "train.xlsx", output=out, device="cpu",
                          workers=0, gallery_per_class=PER_CLASS, chunk_rows=7)  # several chunks
    return summary, pd.read_csv(out)


class PageParser(HTMLParser):
    """Tags, attributes and classes of a page, to check it without a browser."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def having(self, tag: str, css_class: str | None = None) -> list[dict]:
        return [a for t, a in self.tags if t == tag and (css_class is None or css_class in (a.get("class") or "").split())]


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_gallery_keeps_the_most_confident_mistakes_per_true_class(predicted):
    summary, predictions = predicted
    gallery = summary["gallery"]
    wrong = predictions[predictions["pred_class"] != predictions["Class"]]
    class_ids = sorted(predictions["Class"].unique())
    assert gallery["counts"] == [int((wrong["Class"] == cid).sum()) for cid in class_ids]
    assert len(wrong) > PER_CLASS  # the test needs mistakes to choose among
    for index, cid in enumerate(class_ids):
        kept = [e for e in gallery["entries"] if e["true"] == index]
        mine = wrong[wrong["Class"] == cid]
        assert len(kept) == min(PER_CLASS, len(mine))
        # the kept ones are the most confident mistakes, most confident first
        expected = mine.sort_values("score", ascending=False, kind="stable")["score"].to_numpy()[:PER_CLASS]
        np.testing.assert_allclose([e["top"][0][1] for e in kept], expected, atol=1e-6)
        for entry in kept:  # top-3 as predictions.csv says for that row
            row = predictions.iloc[entry["row"] - 2]
            assert [class_ids[c] for c, _ in entry["top"]] == [row[f"top{k}_class"] for k in (1, 2, 3)]
            assert Path(entry["file"]).is_file()


def test_gallery_streamed_in_chunks_equals_one_pass():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 6, generator=generator) * 3
    targets = torch.randint(0, 6, (500,), generator=generator).numpy()
    targets[::17] = -1  # rows without a label
    paths, rows = [f"f{i}.jpg" for i in range(500)], np.arange(2, 502)
    whole = MisclassifiedGallery(3, 6)
    whole.add(logits, targets, paths, rows)
    streamed = MisclassifiedGallery(3, 6)
    for start in range(0, 500, 64):
        part = slice(start, start + 64)
        streamed.add(logits[part], targets[part], paths[part], rows[part])
    assert streamed.to_dict() == whole.to_dict()
    assert len(whole.to_dict()["entries"]) == 18  # bounded: 3 per class, whatever the rows
    wrong = (logits.argmax(1).numpy() != targets) & (targets >= 0)
    assert sum(whole.to_dict()["counts"]) == int(wrong.sum())


def test_report_is_one_self_contained_page(predicted, tmp_path):
    summary, predictions = predicted
    page = write_html_report(tmp_path / "report.html", summary["metrics_files"], summary["gallery"])
    parsed = parse(page)
    text = page.read_text(encoding="utf-8")
    assert not parsed.having("script") and not parsed.having("link") and not parsed.having("iframe")
    sources = [a.get("src", "") for _, a in parsed.tags if "src" in a] + \
              [a.get("href", "") for _, a in parsed.tags if "href" in a]
    assert sources and all(s.startswith("data:") for s in sources)
    assert "url(" not in text and "@import" not in text
    # headline, per-class bars, a C x C heat map
    assert f"{summary['metrics']['top1']:.3f}" in text and "balanced accuracy" in text
    classes = predictions["Class"].nunique()
    assert len(parsed.having("tr", "class-row")) == classes
    assert len(parsed.having("div", "recall")) == classes and len(parsed.having("div", "support")) == classes
    assert len([a for t, a in parsed.tags if t == "td" and "background:rgb(" in a.get("style", "")]) == classes ** 2
    # the gallery: one thumbnail per kept mistake, grouped by class, each a JPEG that decodes
    figures = parsed.having("figure", "miss")
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(figures) == len(images) == len(summary["gallery"]["entries"])
    assert len(parsed.having("section", "true-class")) == sum(1 for c in summary["gallery"]["counts"] if c)
    for image in images:
        data = base64.b64decode(image["src"].split(",", 1)[1])
        assert Image.open(io.BytesIO(data)).size == (112, 112)


def test_cli_evaluate_and_test_py_write_the_report(checkpoint, tiny_dataset, tmp_path, capsys):
    metadata = tiny_dataset / "training" / "train.xlsx"
    report = tmp_path / "eval.html"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--metadata", str(metadata), "--out",
                 str(tmp_path / "eval"), "--workers", "0", "--device", "cpu", "--report", str(report),
                 "--report-per-class", "1"]) == 0
    assert str(report) in capsys.readouterr().out
    metrics = evaluate_checkpoint(checkpoint, metadata, out_dir=tmp_path / "again", workers=0, device="cpu",
                                  gallery_per_class=1)
    assert len(parse(report).having("figure", "miss")) == len(metrics["gallery"]["entries"]) > 0

    unlabelled = tmp_path / "paths.csv"
    pd.DataFrame({"Path": pd.read_excel(metadata)["Path"]}).to_csv(unlabelled, index=False)
    result = subprocess.run([sys.executable, str(REPO / "test.py"), "-q", "--imagepathscsv", str(unlabelled),
                             "--image-root", str(tiny_dataset / "training"), "--checkpoint", str(checkpoint),
                             "--workers", "0", "--device", "cpu", "--report", str(tmp_path / "none.html")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no report" in result.stdout and not (tmp_path / "none.html").exists()
