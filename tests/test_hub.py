"""Hugging Face Hub folders: `hf-hub:org/name` resolved offline from a cache the test builds in
huggingface_hub's layout, wherever a checkpoint is accepted (predict, test.py, --init-from); and
`clipmg push` with the upload replaced at the huggingface_hub boundary. Never the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch

from clipmg.checkpoint import download_checkpoint, resolve_checkpoint, save_checkpoint
from clipmg.cli import main
from clipmg.errors import CheckpointError
from clipmg.inference import Classifier, default_eval_dir
from clipmg.models import create_model
from clipmg.prompts import PromptSet

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_checkpoint(folder: Path, class_ids=(1, 2, 3, 4)) -> Path:
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny")
    names = [f"class {i}" for i in class_ids]
    return save_checkpoint(folder, model, {"class_ids": list(class_ids), "class_names": names,
                                           "prompts": PromptSet(templates=["{}"]).to_dict(),
                                           "preprocess": model.preprocess_config})


def cache_repo(cache: Path, repo_id: str, subfolder: str = "") -> Path:
    """A repository as huggingface_hub caches it: refs/main -> snapshots/<commit>/ (files)."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    tiny_checkpoint(snapshot / subfolder if subfolder else snapshot)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """HF_HOME in tmp, offline: what huggingface_hub read at import is set to match."""
    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_reference_resolves_to_the_cached_snapshot(hub_cache):
    snapshot = cache_repo(hub_cache, "someone/gestures")
    assert resolve_checkpoint("hf-hub:someone/gestures") == snapshot
    assert resolve_checkpoint(f"hf-hub:someone/gestures@{COMMIT}") == snapshot
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    from_hub = Classifier.from_checkpoint("hf-hub:someone/gestures", device="cpu")
    torch.testing.assert_close(from_hub.logits(images), Classifier.from_checkpoint(snapshot, device="cpu").logits(images))
    # evaluations of a Hub checkpoint are never written into the cache
    assert default_eval_dir(from_hub.checkpoint) == Path("eval") / "someone--gestures"


def test_run_folders_and_subfolders_in_a_repository(hub_cache):
    snapshot = cache_repo(hub_cache, "someone/run", subfolder="best")
    assert resolve_checkpoint("hf-hub:someone/run") == snapshot / "best"  # a run folder: its best/
    assert resolve_checkpoint("hf-hub:someone/run/best") == snapshot / "best"
    with pytest.raises(CheckpointError, match="no folder 'worst'"):
        resolve_checkpoint("hf-hub:someone/run/worst")


def test_offline_and_not_cached_is_a_clear_error(hub_cache):
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        download_checkpoint("hf-hub:someone/missing")
    with pytest.raises(CheckpointError, match="expected hf-hub:org/name"):
        resolve_checkpoint("hf-hub:just-a-name")


def test_init_from_accepts_a_hub_reference(hub_cache, tiny_train_settings, tmp_path):
    from safetensors.torch import load_file

    from clipmg.training import TrainConfig, train

    snapshot = cache_repo(hub_cache, "someone/gestures")
    settings = {**tiny_train_settings, "init_from": "hf-hub:someone/gestures", "epochs": 1,
                "max_steps_per_epoch": 1, "lr_image": 0.0, "lr_text": 0.0, "lr_heads": 0.0}
    train(TrainConfig(**settings).validate())
    best = tmp_path / "run" / "best"
    source, trained = load_file(snapshot / "model.safetensors"), load_file(best / "model.safetensors")
    for key, value in source.items():  # nothing learnt at rate 0: the weights are the Hub's
        if "running_" not in key and "num_batches_tracked" not in key:  # BatchNorm statistics do move
            torch.testing.assert_close(trained[key], value, rtol=0, atol=0)
    config = json.loads((best / "config.json").read_text())
    assert config["train"]["init_from"] == "hf-hub:someone/gestures"
    assert "hf-hub:someone/gestures" in (best / "README.md").read_text()


def test_test_py_reads_a_hub_checkpoint_offline_from_the_environment(tmp_path, tiny_dataset):
    """HF_HOME and HF_HUB_OFFLINE as a user sets them, in a fresh process."""
    home = tmp_path / "hf"
    cache_repo(home / "hub", "someone/gestures")
    output = tmp_path / "predictions.csv"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, str(REPO / "test.py"), "-q", "--imagepathscsv",
                             str(tiny_dataset / "training" / "train.xlsx"), "--checkpoint", "hf-hub:someone/gestures",
                             "--output", str(output), "--workers", "0", "--device", "cpu"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert output.is_file() and "top1" in result.stdout


# --------------------------------------------------------------------------------------- push
@pytest.fixture
def fake_upload(monkeypatch):
    """HfApi.create_repo / upload_folder replaced: records the calls and what was uploaded."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        folder = Path(folder_path)
        calls["upload_folder"] = {"repo_id": repo_id, **kwargs,
                                  "files": sorted(p.name for p in folder.iterdir()),
                                  "readme": (folder / "README.md").read_text(), "folder": folder}
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}",
                                          commit_message="", commit_description="", oid=COMMIT)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_push_uploads_the_folder_with_a_card_naming_the_repository(fake_upload, tmp_path, capsys):
    run = tmp_path / "run"
    folder = tiny_checkpoint(run / "best")
    (folder / "trainer_state.pt").write_bytes(b"optimizer state")
    card_before = (folder / "README.md").read_text()
    assert main(["push", "--checkpoint", str(run), "--repo", "someone/gestures", "--private"]) == 0
    assert f"commit/{COMMIT}" in capsys.readouterr().out
    assert fake_upload["create_repo"] == {"repo_id": "someone/gestures", "private": True, "exist_ok": True,
                                          "repo_type": "model"}
    upload = fake_upload["upload_folder"]
    assert upload["repo_id"] == "someone/gestures"
    assert {"config.json", "model.safetensors", "README.md"} <= set(upload["files"])
    assert "trainer_state.pt" in upload["ignore_patterns"]  # optimizer state stays home by default
    assert "--checkpoint hf-hub:someone/gestures" in upload["readme"]
    # the staged copy is gone and the local folder is as it was
    assert not upload["folder"].exists()
    assert (folder / "README.md").read_text() == card_before
    assert sorted(p.name for p in run.iterdir()) == ["best"]


def test_push_offline_or_to_a_bad_repo_name_is_refused(fake_upload, tmp_path, monkeypatch):
    folder = tiny_checkpoint(tmp_path / "best")
    assert main(["push", "--checkpoint", str(folder), "--repo", "no-org"]) == 2
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["push", "--checkpoint", str(folder), "--repo", "someone/gestures"]) == 2
    assert "upload_folder" not in fake_upload
