"""One self-contained HTML page of a checkpoint's results (`test.py --report`, `clipmg evaluate
--report`): the headline metrics, per-class recall and support as bars, the confusion matrix as a
heat map, and the misclassified frames (thumbnails with the true and top-3 predicted classes)
grouped by true class.

The page needs nothing outside itself: inline CSS, images as data: URIs, no script, so it opens
offline in any browser and can be mailed as one file. It is built from the files a run writes
(metrics.json with its per-class table, confusion.csv) and the gallery that `predict_csv` /
`evaluate_checkpoint` keep with `gallery_per_class`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clipmg import data as cdata
from clipmg.errors import ClipmgError
from clipmg.inference import thumbnail
from clipmg.utils import atomic_write_text, logger

DEFAULT_GALLERY_PER_CLASS = 8
THUMB_SIZE = 112
HEADLINE = (("top1", "top-1"), ("top5", "top-5"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro-F1"), ("clip_top1", "clip-level top-1"), ("clip_top5", "clip-level top-5"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
 padding:0 16px;color:#1d232b;background:#fff}
h1{font-size:1.5em;margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
h3{font-size:1em;margin:22px 0 8px}.meta{color:#5b6570;font-size:.9em}.meta code{font-size:.95em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{border:1px solid #dde2e8;border-radius:8px;padding:10px 16px;min-width:120px}
.card .v{font-size:1.6em;font-weight:600}.card .k{color:#5b6570;font-size:.85em}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;text-align:left;white-space:nowrap}
table.classes tr:nth-child(even){background:#f6f8fa}
.bar{position:relative;height:14px;width:180px;background:#eef1f4;border-radius:3px}
.bar span{position:absolute;left:0;top:0;bottom:0;border-radius:3px}
.bar.recall span{background:#2f7ed8}.bar.support span{background:#8a96a3}.num{text-align:right}
.heat td{width:20px;height:20px;padding:0;text-align:center;font-size:.7em;border:1px solid #fff}
.heat th{font-weight:normal;font-size:.75em;padding:0 4px}.heat th.col{writing-mode:vertical-rl;
 transform:rotate(180deg);height:auto;padding:4px 0}.heat td.diag{outline:1px solid #1d232b;outline-offset:-1px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure.miss{margin:0;width:%(thumb)dpx;font-size:.72em;line-height:1.3}
figure.miss img{width:%(thumb)dpx;height:%(thumb)dpx;display:block;border-radius:4px;background:#eef1f4}
figure.miss .missing{width:%(thumb)dpx;height:%(thumb)dpx;background:#eef1f4;display:flex;align-items:center;
 justify-content:center;color:#8a96a3;border-radius:4px}
figcaption .t{color:#1a7f37}figcaption ol{margin:2px 0 0;padding-left:16px;color:#b3261e}
figcaption li.hit{color:#1a7f37;font-weight:600}figcaption .row{color:#5b6570}
"""


def write_html_report(path: str | os.PathLike, metrics_files: Mapping[str, str | os.PathLike],
                      gallery: Mapping | None = None, title: str | None = None,
                      thumb_size: int = THUMB_SIZE) -> Path:
    """Write the report page to `path` from a run's metrics.json and confusion.csv
    (`metrics_files`, as `predict_csv` and `evaluate_checkpoint` return them) and the gallery of
    misclassified frames (their `gallery`; None: no gallery). Returns `path`."""
    document, confusion, labels = read_results(metrics_files)
    page = report_html(document, confusion, labels, gallery, title=title, thumb_size=thumb_size)
    path = Path(path)
    atomic_write_text(path, page)
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def read_results(metrics_files: Mapping[str, str | os.PathLike]) -> tuple[dict, np.ndarray, list[str]]:
    """(metrics.json as written, the confusion counts, its class labels)."""
    try:
        document = json.loads(Path(metrics_files["metrics"]).read_text(encoding="utf-8"))
        table = pd.read_csv(metrics_files["confusion"], index_col=0)
    except (OSError, ValueError, KeyError) as error:
        raise ClipmgError(f"cannot read the results the report is made from: {error}") from error
    return document, table.to_numpy(dtype=np.int64), [str(label) for label in table.columns]


def report_html(document: Mapping, confusion: np.ndarray, labels: Sequence[str], gallery: Mapping | None = None,
                title: str | None = None, thumb_size: int = THUMB_SIZE) -> str:
    """The page as a string (see the module's doc)."""
    per_class = list(document.get("per_class") or [])
    names = [str(row.get("name", "")) for row in per_class] or list(labels)
    ids = [row.get("class_id", row.get("class_index")) for row in per_class] or list(range(len(labels)))
    title = title or "clipmg report"
    body = [f"<h1>{_e(title)}</h1>", _meta(document), _headline(document, per_class),
            "<h2>Per class</h2>", _class_table(per_class),
            "<h2>Confusion matrix</h2>", _heat_map(confusion, ids, names)]
    if gallery is not None:
        body += ["<h2>Misclassified frames</h2>", _gallery(gallery, ids, names, per_class, thumb_size)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS % {'thumb': thumb_size}}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _meta(document: Mapping) -> str:
    parts = []
    for key, label in (("checkpoint", "checkpoint"), ("source", "frames"), ("metadata", "frames"),
                       ("split", "split"), ("subset", "subset"), ("label_column", "labels from column")):
        if document.get(key):
            parts.append(f"{label} <code>{_e(document[key])}</code>")
    skipped = document.get("n_skipped")
    if skipped:
        parts.append(f"{_e(skipped)} unreadable or missing images left out")
    unlabelled = document.get("n_unlabelled")
    if unlabelled:
        parts.append(f"{_e(unlabelled)} predicted rows without a label not scored")
    return f"<p class=\"meta\">{' &middot; '.join(parts)}</p>" if parts else ""


def _headline(document: Mapping, per_class: Sequence[Mapping]) -> str:
    cards = [("frames", _fmt(document.get("n_images")))]
    if "n_clips" in document:
        cards.append(("clips", _fmt(document.get("n_clips"))))
    cards += [(label, _fmt(document.get(key))) for key, label in HEADLINE if key in document]
    present = sum(1 for row in per_class if (row.get("support") or 0) > 0)
    if present:
        cards.append(("chance (1 / classes present)", _fmt(1.0 / present)))
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><div class=\"v\">{_e(v)}</div><div class=\"k\">{_e(k)}</div></div>" for k, v in cards
    ) + "</div>"


def _bar(kind: str, fraction: float, text: str) -> str:
    width = 0.0 if fraction is None or math.isnan(fraction) else max(0.0, min(1.0, fraction)) * 100
    return (f"<div class=\"bar {kind}\" title=\"{_e(text)}\"><span style=\"width:{width:.1f}%\"></span></div>")


def _class_table(per_class: Sequence[Mapping]) -> str:
    if not per_class:
        return "<p>metrics.json has no per-class table.</p>"
    most = max((row.get("support") or 0) for row in per_class) or 1
    rows = ["<tr><th>id</th><th>class</th><th>recall</th><th></th><th>support (frames)</th><th></th>"
            "<th>predicted</th><th>precision</th><th>F1</th></tr>"]
    for row in per_class:
        recall, support = row.get("recall"), row.get("support") or 0
        recall_value = float("nan") if recall is None else float(recall)
        rows.append(
            f"<tr class=\"class-row\"><td>{_e(row.get('class_id', row.get('class_index')))}</td>"
            f"<td>{_e(row.get('name'))}</td>"
            f"<td>{_bar('recall', recall_value, f'recall {_fmt(recall)}')}</td><td class=\"num\">{_fmt(recall)}</td>"
            f"<td>{_bar('support', support / most, f'{support} frames')}</td><td class=\"num\">{support}</td>"
            f"<td class=\"num\">{_e(row.get('predicted', ''))}</td><td class=\"num\">{_fmt(row.get('precision'))}</td>"
            f"<td class=\"num\">{_fmt(row.get('f1'))}</td></tr>")
    return "<table class=\"classes\">" + "".join(rows) + "</table>"


def _heat_color(rate: float) -> str:
    """White to dark blue; text turns white on dark cells."""
    low, high = np.array([255, 255, 255]), np.array([8, 69, 148])
    r, g, b = (low + (high - low) * rate).round().astype(int)
    return f"background:rgb({r},{g},{b});color:{'#fff' if rate > 0.5 else '#1d232b'}"


def _heat_map(confusion: np.ndarray, ids: Sequence, names: Sequence[str]) -> str:
    n = len(confusion)
    if not n:
        return "<p>no confusion matrix.</p>"
    support = confusion.sum(axis=1)
    rows = ["<tr><th>true \\ predicted</th>" + "".join(
        f"<th class=\"col\" title=\"{_e(names[j])}\">{_e(ids[j])}</th>" for j in range(n)) + "</tr>"]
    for i in range(n):
        cells = []
        for j in range(n):
            count = int(confusion[i, j])
            rate = count / support[i] if support[i] else 0.0
            tip = f"true {ids[i]} {names[i]} -> predicted {ids[j]} {names[j]}: {count} ({rate:.0%} of the true class)"
            diag = " class=\"diag\"" if i == j else ""
            cells.append(f"<td{diag} style=\"{_heat_color(rate)}\" title=\"{_e(tip)}\">{count or ''}</td>")
        rows.append(f"<tr><th>{_e(ids[i])} {_e(names[i][:32])} ({int(support[i])})</th>" + "".join(cells) + "</tr>")
    return ("<p class=\"meta\">Rows: true class (frames); columns: predicted class id. A cell's colour is the "
            "fraction of the row's frames; hover for names and counts.</p><table class=\"heat\">"
            + "".join(rows) + "</table>")


def _gallery(gallery: Mapping, ids: Sequence, names: Sequence[str], per_class: Sequence[Mapping],
             thumb_size: int) -> str:
    entries = list(gallery.get("entries") or [])
    counts = list(gallery.get("counts") or [])
    if not entries:
        return "<p>No frame was misclassified.</p>"
    cap = gallery.get("per_class")
    parts = [f"<p class=\"meta\">Per true class, the {_e(cap)} most confident mistakes (highest probability of "
             "the wrong class); the top-3 predicted classes with their probabilities.</p>"]
    by_class: dict[int, list] = {}
    for entry in entries:
        by_class.setdefault(int(entry["true"]), []).append(entry)
    for index, group in sorted(by_class.items()):
        total = counts[index] if index < len(counts) else len(group)
        support = per_class[index].get("support") if index < len(per_class) else None
        of = f" of {support} frames" if support is not None else ""
        parts.append(f"<section class=\"true-class\" data-class=\"{_e(ids[index])}\"><h3>{_e(ids[index])} "
                     f"{_e(names[index])}: {len(group)} shown of {total} misclassified{of}</h3>"
                     "<div class=\"gallery\">" + "".join(_figure(e, ids, names, thumb_size) for e in group)
                     + "</div></section>")
    return "\n".join(parts)


def _figure(entry: Mapping, ids: Sequence, names: Sequence[str], thumb_size: int) -> str:
    true = int(entry["true"])
    uri = _thumbnail_uri(entry.get("file") or entry["path"], thumb_size)
    image = (f"<img src=\"{uri}\" alt=\"{_e(entry['path'])}\" title=\"{_e(entry['path'])}\">" if uri else
             f"<div class=\"missing\" title=\"{_e(entry['path'])}\">image not found</div>")
    hit = ' class="hit"'
    top = "".join(f"<li{hit if c == true else ''}>{_e(ids[c])} {_e(names[c][:28])} {p:.2f}</li>"
                  for c, p in entry["top"])
    return (f"<figure class=\"miss\">{image}<figcaption><div class=\"t\">true: {_e(ids[true])} "
            f"{_e(names[true][:28])}</div><ol>{top}</ol><div class=\"row\">row {_e(entry['row'])}</div>"
            "</figcaption></figure>")


def _thumbnail_uri(path: str, size: int) -> str | None:
    """A JPEG data: URI of the image's centre square at `size` pixels; None when unreadable."""
    from PIL import Image

    try:
        pixels = cdata.load_image(path, max_size=size)
    except (ClipmgError, OSError) as error:
        logger.warning("report: %s", error)
        return None
    buffer = io.BytesIO()
    Image.fromarray(thumbnail(pixels, size)).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
