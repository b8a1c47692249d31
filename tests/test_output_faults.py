"""Faults on the way out: a target that cannot be written is refused in one line (exit 2, no
traceback) before any image is read, a disk filling up mid-way keeps the rows written so far in
a partial file the message names, and a failed checkpoint save leaves the previous one whole."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipmg.checkpoint import save_checkpoint
from clipmg.cli import main
from clipmg.errors import OutputError
from clipmg.prompts import PromptSet

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from clipmg.models import create_model

    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(folder, model, {"class_ids": [1, 2], "class_names": ["nod", "shake"],
                                    "prompts": PromptSet().to_dict(), "preprocess": model.preprocess_config})
    return folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """frames.csv listing 8 small images with their class."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"f{i}.png")
        rows.append({"Path": f"f{i}.png", "Class": 1 + i % 2})
    pd.DataFrame(rows).to_csv(root / "frames.csv", index=False)
    return root / "frames.csv"


def no_image_may_be_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was read before the output was checked")

    for name in ("clipmg.inference.predict_csv", "clipmg.inference.evaluation"):
        monkeypatch.setattr(importlib.import_module(name), "score_images", refuse)


def predict(checkpoint, frames, output) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), "--imagepathscsv", str(frames), "--output", str(output),
            "--device", "cpu", "--workers", "0"]


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_output_that_is_a_folder_is_refused_before_any_image_is_read(checkpoint, frames, tmp_path, capsys,
                                                                        monkeypatch):
    no_image_may_be_read(monkeypatch)
    err = one_line_error(capsys, main(predict(checkpoint, frames, tmp_path)))
    assert str(tmp_path) in err and "is a folder" in err


def test_an_output_under_a_file_is_refused_naming_that_file(checkpoint, frames, tmp_path, capsys, monkeypatch):
    no_image_may_be_read(monkeypatch)
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    err = one_line_error(capsys, main(predict(checkpoint, frames, blocker / "deeper" / "predictions.csv")))
    assert f"{blocker} is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_in_a_read_only_folder_is_refused(checkpoint, frames, tmp_path, capsys, monkeypatch):
    no_image_may_be_read(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = one_line_error(capsys, main(predict(checkpoint, frames, locked / "predictions.csv")))
    finally:
        locked.chmod(0o755)
    assert f"no permission to write in {locked}" in err


def test_an_evaluate_folder_that_is_a_file_is_refused_before_any_image_is_read(checkpoint, frames, tmp_path,
                                                                               capsys, monkeypatch):
    no_image_may_be_read(monkeypatch)
    taken = tmp_path / "eval"
    taken.write_text("a file")
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--metadata", str(frames), "--out", str(taken),
                 "--device", "cpu", "--workers", "0"])
    err = one_line_error(capsys, code)
    assert f"--out {taken} is a file" in err


def test_a_disk_filling_up_keeps_the_whole_chunks_written_in_the_partial_file_it_names(checkpoint, frames,
                                                                                       tmp_path, monkeypatch):
    from clipmg import outputs

    predict_csv = importlib.import_module("clipmg.inference.predict_csv").predict_csv

    real_write, writes = outputs._write_all, []

    def fill_up(fd, data):
        writes.append(len(data))
        if len(writes) == 3:  # two chunks of 2 rows went through; the third half-writes, then fails
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(outputs, "_write_all", fill_up)
    output = tmp_path / "predictions.csv"
    output.write_text("the previous predictions\n")
    with pytest.raises(OutputError) as raised:
        predict_csv(checkpoint, frames, output=output, device="cpu", workers=0, chunk_rows=2)
    partial = tmp_path / "predictions.csv.partial"
    assert str(partial) in str(raised.value) and "No space left on device" in str(raised.value)
    assert "the 4 rows written so far" in str(raised.value)
    kept = pd.read_csv(partial)
    assert list(kept["Path"]) == ["f0.png", "f1.png", "f2.png", "f3.png"] and kept["status"].eq("ok").all()
    assert output.read_text() == "the previous predictions\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


FILL_UP = """
import importlib, resource, signal, sys
from clipmg.cli import main
importlib.import_module("clipmg.inference.predict_csv").CHUNK_ROWS = 2
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails the write with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


def test_a_real_write_failure_in_test_py_is_one_line_naming_the_rows_kept(checkpoint, frames, tmp_path):
    """The kernel refuses to grow a file past RLIMIT_FSIZE, as a full disk would refuse it."""
    output = tmp_path / "predictions.csv"
    done = subprocess.run([sys.executable, "-c", FILL_UP, "400", "-q", *predict(checkpoint, frames, output)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    err = errors[0]
    partial = tmp_path / "predictions.csv.partial"
    assert str(partial) in err and "File too large" in err
    kept = pd.read_csv(partial)
    rows = int(err.split("the ")[1].split(" rows")[0])
    assert 0 < rows < 8 and len(kept) == rows and kept["status"].eq("ok").all()
    assert not output.exists()


def test_a_checkpoint_save_that_fails_leaves_the_previous_checkpoint_whole(checkpoint, tmp_path, monkeypatch):
    from clipmg.checkpoint import folders, load_checkpoint

    model, config = load_checkpoint(checkpoint)
    target = tmp_path / "last"
    save_checkpoint(target, model, {k: config[k] for k in ("class_ids", "class_names", "prompts", "preprocess")})
    before = (target / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(folders, "save_file", full)
    with pytest.raises(OutputError) as raised:
        save_checkpoint(target, model, {"class_ids": [1, 2], "class_names": ["a", "b"]})
    assert str(target) in str(raised.value) and "previous checkpoint" in str(raised.value)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_checkpoint_folder_that_is_a_file_is_refused_in_one_line(checkpoint, tmp_path):
    from clipmg.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    (tmp_path / "best").write_text("a file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        save_checkpoint(tmp_path / "best", model, {"class_ids": [1], "class_names": ["a"]})


def test_a_report_page_that_is_a_folder_is_refused_before_any_image_is_read(checkpoint, frames, tmp_path, capsys,
                                                                            monkeypatch):
    no_image_may_be_read(monkeypatch)
    code = main([*predict(checkpoint, frames, tmp_path / "p.csv"), "--report", str(tmp_path)])
    assert f"--report {tmp_path} is a folder" in one_line_error(capsys, code)


def test_an_embed_logdir_that_is_a_file_is_refused_in_one_line(checkpoint, frames, tmp_path, capsys):
    taken = tmp_path / "runs"
    taken.write_text("a file")
    code = main(["embed", "--checkpoint", str(checkpoint), "--metadata", str(frames), "--logdir", str(taken)])
    assert f"--logdir {taken} is a file" in one_line_error(capsys, code)
