"""Preemption and requeues, with real processes and signals: SIGTERM (or the --preempt-signal)
stops training after the current step with last/ saved and exit status 75, and `--resume`
then ends with the weights of an uninterrupted run; under torchrun the ranks stop at the same
step; a run SIGKILLed during start-up resumes from the beginning; a folder holding nothing of a
run is still refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from clipmg.cli import main
from clipmg.errors import Preempted

REPO = Path(__file__).resolve().parent.parent
CLI = "import sys; from clipmg.cli import main; sys.exit(main(sys.argv[1:]))"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def flags(settings: dict) -> list[str]:
    argv = []
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def clipmg(*argv: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, "-q", *argv], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def finish(process: subprocess.Popen, status: int) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == status, err[-3000:]
    return err


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def settings(tiny_train_settings, tmp_path) -> dict:
    return {**tiny_train_settings, "epochs": 2, "workers": 1}


@pytest.fixture
def reference(settings, tmp_path) -> Path:
    """An uninterrupted run with the same settings, in a process of its own like the others."""
    run = tmp_path / "reference"
    finish(clipmg("train", *flags({**settings, "output": str(run)})), 0)
    return run / "last"


def test_sigterm_mid_epoch_saves_last_and_resume_matches_an_uninterrupted_run(settings, reference, tmp_path,
                                                                              assert_same_weights):
    run = tmp_path / "run"
    process = clipmg("train", *flags({**settings, "output": str(run)}), start_new_session=True)
    wait_for(run / "config.yaml", process)  # written as start-up begins, after the signals are watched
    os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: the whole group, data workers included
    err = finish(process, Preempted.exit_status)
    preempted = [line for line in err.splitlines() if line.startswith("preempted:")]
    assert len(preempted) == 1 and f"{run / 'last'}" in preempted[0] and "SIGTERM" in preempted[0], err
    state = torch.load(run / "last" / "trainer_state.pt", weights_only=True)["trainer"]
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1  # stopped inside the first epoch
    finish(clipmg("train", "--resume", str(run)), 0)
    assert_same_weights(reference, run / "last")


def test_the_preempt_signal_stops_like_sigterm(settings, reference, tmp_path, assert_same_weights):
    run = tmp_path / "run"
    process = clipmg("train", *flags({**settings, "output": str(run), "preempt_signal": "USR1"}))
    wait_for(run / "config.yaml", process)
    process.send_signal(signal.SIGUSR1)
    assert "stopped by SIGUSR1" in finish(process, Preempted.exit_status)
    finish(clipmg("train", "--resume", str(run)), 0)
    assert_same_weights(reference, run / "last")


def test_a_run_killed_during_start_up_resumes_from_the_beginning(settings, reference, tmp_path,
                                                                 assert_same_weights):
    run = tmp_path / "run"
    process = clipmg("train", *flags({**settings, "output": str(run)}))
    wait_for(run / "config.yaml", process)
    process.kill()
    process.wait(timeout=60)
    assert not (run / "last").exists()
    err = finish(clipmg("train", "--resume", str(run)), 0)
    assert "no complete checkpoint" in err and "from the beginning" in err
    assert_same_weights(reference, run / "last")


def test_resume_of_a_folder_holding_nothing_of_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a training run folder" in err


def test_an_unknown_preempt_signal_is_refused_before_training(tiny_train_settings, capsys):
    assert main(["train", *flags({**tiny_train_settings, "preempt_signal": "USR9"})]) == 2
    assert "preempt_signal 'USR9' is not a signal name" in capsys.readouterr().err


RANK_SIGNALLED = textwrap.dedent("""
    import os, signal, sys
    from clipmg.cli import main
    from clipmg.training.trainer import Trainer
    step = Trainer._optimizer_step

    def step_then_signal(self):  # only rank 1 is signalled, after its first step
        step(self)
        if self.env.rank == 1 and self.state.global_step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    Trainer._optimizer_step = step_then_signal
    sys.exit(main(sys.argv[1:]))
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_under_torchrun_every_rank_stops_after_the_same_step(tiny_train_settings, tmp_path):
    script = tmp_path / "signal_rank_one.py"
    script.write_text(RANK_SIGNALLED)
    run = tmp_path / "run"
    settings = {**tiny_train_settings, "device": "cpu", "batch_size": 4, "epochs": 2, "output": str(run)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), "-q",
                           "train", *flags(settings)], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=ENV)
    lines = [line for line in done.stderr.splitlines() if line.startswith("preempted:")]
    signalled = [line for line in lines if "stopped by SIGTERM" in line]
    assert len(signalled) == 1 and "global step 1)" in signalled[0], done.stderr[-3000:]
    # rank 0 stops at the same step (torchrun may end it once rank 1 has left, after the save)
    assert all("another rank" in line and "global step 1)" in line for line in lines if line not in signalled)
    state = torch.load(run / "last" / "trainer_state.pt", weights_only=True)["trainer"]
    assert state["global_step"] == 1
    assert json.loads((run / "last" / "config.json").read_text())["epoch"] == 0
