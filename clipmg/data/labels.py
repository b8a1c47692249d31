"""The label file (`Clip_label.csv`: `id,name`) and class-name cleaning.

Class ids are those of the label file and never change; cleaning only touches how a name is
written (whitespace, known misspellings, capitalisation), so captions written with the raw
names still match.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from clipmg.errors import DataError

# Misspellings found in the iMiGUE label file and captions. Whole words only, so that
# e.g. "jewelries" (unusual but a real word) is left as it is.
KNOWN_MISSPELLINGS = {
    "scraching": "scratching",
    "dustoff": "dust off",
}
_MISSPELLING_RE = re.compile(r"\b(" + "|".join(KNOWN_MISSPELLINGS) + r")\b", re.IGNORECASE)


def clean_class_name(name: str) -> str:
    """Collapse whitespace, fix known misspellings and write the name in sentence case.

    >>> clean_class_name(" scraching  or touching arms ")
    'Scratching or touching arms'
    """
    text = " ".join(str(name).replace("\ufeff", "").split())
    text = _MISSPELLING_RE.sub(lambda m: KNOWN_MISSPELLINGS[m.group(1).lower()], text)
    words = [w if _is_acronym(w) else w.lower() for w in text.split(" ")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _is_acronym(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return len(letters) > 1 and all(c.isupper() for c in letters)


def name_key(name: str) -> str:
    """The key under which a caption and a class name match: cleaned, then case-folded."""
    return clean_class_name(name).casefold()


def caption_lookup(labels: Mapping[int, str]) -> dict[str, int]:
    """{name key: class id} for matching captions, with the short forms of "A or B" names.

    The real iMiGUE `validsubset.csv` writes "Bulging face or deep breath" as "Bulging face"
    and "Buckle button or pulling shirt collar ..." as "Buckle button": the part before the
    first " or " matches too, when no other class name starts the same way.
    """
    lookup = {name_key(name): class_id for class_id, name in labels.items()}
    short_forms: dict[str, set[int]] = {}
    for class_id, name in labels.items():
        short = name_key(name).split(" or ", 1)[0]
        short_forms.setdefault(short, set()).add(class_id)
    for short, ids in short_forms.items():
        if len(ids) == 1 and short not in lookup:
            lookup[short] = next(iter(ids))
    return lookup


def load_labels(path: str | Path) -> dict[int, str]:
    """Read `id,name` rows into {id: cleaned name}, sorted by id.

    Tolerates a UTF-8 BOM, CRLF line endings, spaces around cells, header case and a file
    without a header row. Duplicate ids, duplicate names (after cleaning) and non-integer ids
    are errors naming the row.
    """
    path = Path(path)
    rows = _read_csv_rows(path)
    if not rows:
        raise DataError(f"{path}: the label file is empty (expected columns id,name)")
    start_row = _data_start(path, rows[0])
    labels: dict[int, str] = {}
    seen_keys: dict[str, int] = {}
    for row_number, cells in enumerate(rows[start_row:], start=start_row + 1):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines (e.g. at the end of the file)
        class_id, name = _parse_label_row(path, row_number, cells)
        if class_id in labels:
            raise DataError(f"{path} row {row_number}: class id {class_id} appears twice")
        key = name_key(name)
        if key in seen_keys:
            raise DataError(
                f"{path} row {row_number}: class name {name!r} is the same as that of "
                f"class {seen_keys[key]} (names are compared after cleaning, ignoring case)"
            )
        labels[class_id] = clean_class_name(name)
        seen_keys[key] = class_id
    if not labels:
        raise DataError(f"{path}: the label file has no classes")
    return dict(sorted(labels.items()))


def _read_csv_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read label file {path}: {error}") from error


def _data_start(path: Path, first_row: list[str]) -> int:
    """0 when the file has no header (its first cell is already an id), else 1."""
    header = [cell.strip().lower() for cell in first_row]
    if header[:2] == ["id", "name"]:
        return 1
    if first_row and first_row[0].strip().lstrip("-").isdigit():
        return 0
    raise DataError(
        f"{path}: expected the columns id,name; the header row has {', '.join(first_row)}"
    )


def _parse_label_row(path: Path, row_number: int, cells: list[str]) -> tuple[int, str]:
    if len(cells) < 2 or not cells[0].strip() or not cells[1].strip():
        raise DataError(f"{path} row {row_number}: expected 'id,name', found {','.join(cells)!r}")
    if len(cells) > 2 and any(cell.strip() for cell in cells[2:]):
        raise DataError(
            f"{path} row {row_number}: more than two cells ({','.join(cells)!r}); "
            "quote a name that contains a comma"
        )
    try:
        class_id = int(cells[0].strip())
    except ValueError:
        raise DataError(
            f"{path} row {row_number}, column 'id': {cells[0].strip()!r} is not an integer"
        ) from None
    return class_id, cells[1]


def class_index_map(class_ids: Iterable[int] | Mapping) -> dict[int, int]:
    """{class id: class index 0..C-1}, indices in the order of the sorted ids.

    Takes any iterable of ids (a labels dict gives its keys), or a mapping that already is
    {id: index}, which is returned checked but unchanged.
    """
    if isinstance(class_ids, Mapping) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in class_ids.values()
    ):
        mapping = {int(k): int(v) for k, v in class_ids.items()}
        if sorted(mapping.values()) != list(range(len(mapping))):
            raise DataError("a class index mapping must map the ids onto 0..C-1")
        return mapping
    return {class_id: index for index, class_id in enumerate(sorted({int(i) for i in class_ids}))}
