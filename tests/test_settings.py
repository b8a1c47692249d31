"""Settings with owners: every error a user can cause ends in one line and exit 2, a setting a
mode would ignore is refused, `clipmg train --help` documents every flag by section, each
vocabulary has one owner, and the configurations and checkpoints of earlier versions still load."""

from __future__ import annotations

import pytest

from clipmg.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def data_args(tiny_dataset) -> list[str]:
    return ["--metadata", str(tiny_dataset / "training" / "train.xlsx"),
            "--labels", str(tiny_dataset / "Clip_label.csv")]


# ------------------------------------------------------------------ user errors: one line, exit 2
@pytest.mark.parametrize("fraction", ["1.5", "0", "-0.2"])
def test_split_with_a_validation_fraction_outside_0_1_exits_2_with_one_line(tiny_dataset, tmp_path, capsys,
                                                                             fraction):
    code, _, err = run_cli(["-q", "split", *data_args(tiny_dataset), "--val-fraction", fraction,
                            "--out", str(tmp_path / "split.csv")], capsys)
    assert_one_line_error(code, err, "val_fraction", fraction)
    assert not (tmp_path / "split.csv").exists()
