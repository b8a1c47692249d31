"""The main job end to end, at its smallest: data, training, evaluation, predictions, summary."""

from __future__ import annotations

import pandas as pd

from clipmg.cli import main


def test_quick_demo_writes_every_output(tmp_path, capsys):
    assert main(["-q", "demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "clipmg demo finished" in printed and "top1" in printed
    assert "test part" in printed
    validation = pd.read_csv(tmp_path / "data" / "test_frames.csv")
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == len(validation) > 0
    assert (predictions["status"] == "ok").all()
    run = tmp_path / "run"
    for path in ("best/model.safetensors", "best/config.json", "last/trainer_state.pt", "split.json",
                 "eval/metrics.json"):
        assert (run / path).is_file(), path
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
