"""Checkpoints on the Hugging Face Hub: `hf-hub:org/name` references and uploads.

A reference is `hf-hub:org/name[/subfolder][@revision]`. It resolves to a folder of the local
Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME`): the cached snapshot first, without touching the
network, so a checkpoint downloaded once works offline; only when it is not cached, and
`HF_HUB_OFFLINE` is not set, is it downloaded. A cached snapshot of a branch is not refreshed;
pin a revision (`@<commit>`) or clear the cache to follow a branch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipmg.errors import CheckpointError
from clipmg.utils import logger

HUB_PREFIX = "hf-hub:"
#: never downloaded nor uploaded by default: the optimizer state, only for resuming a run
RESUME_ONLY = ("trainer_state.pt", "*/trainer_state.pt")


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    subfolder: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        folder = f"/{self.subfolder}" if self.subfolder else ""
        return f"{HUB_PREFIX}{self.repo_id}{folder}" + (f"@{self.revision}" if self.revision else "")


def is_hub_reference(path) -> bool:
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def parse_hub_reference(text: str) -> HubReference:
    body, at, revision = text[len(HUB_PREFIX):].partition("@")
    parts = [part for part in body.strip().strip("/").split("/") if part]
    if len(parts) < 2 or (at and not revision):
        raise CheckpointError(f"{text!r} is not a Hub reference: expected hf-hub:org/name, optionally "
                              "followed by /subfolder and @revision")
    return HubReference("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def download_checkpoint(reference: str) -> Path:
    """The local folder (in the Hugging Face cache) of the checkpoint `reference` names: the cached
    snapshot when there is one, else downloaded (not when offline). trainer_state.pt is left out."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    ref = parse_hub_reference(reference)
    options = {"repo_id": ref.repo_id, "revision": ref.revision, "ignore_patterns": list(RESUME_ONLY)}
    if ref.subfolder:
        options["allow_patterns"] = [f"{ref.subfolder}/*", f"{ref.subfolder}/**"]
    try:
        folder = snapshot_download(**options, local_files_only=True)
    except LocalEntryNotFoundError:
        if hub_offline():
            raise CheckpointError(
                f"{ref} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                "download it once while online (or point HF_HUB_CACHE / HF_HOME at the cache holding it)"
            ) from None
        logger.info("downloading %s from the Hugging Face Hub", ref)
        try:
            folder = snapshot_download(**options)
        except RepositoryNotFoundError:
            raise CheckpointError(f"{ref}: no such repository on the Hugging Face Hub, or it is private "
                                  "(log in with `hf auth login` or set HF_TOKEN)") from None
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot download {ref} from the Hugging Face Hub: {error}") from error
    local = Path(folder) / ref.subfolder
    if not local.is_dir():
        raise CheckpointError(f"{ref}: the repository has no folder {ref.subfolder!r}")
    return local


def hub_cache_name(folder: str | Path) -> str | None:
    """`org--name` when `folder` lies in a Hugging Face cache snapshot (where nothing may be
    written beside it), else None."""
    parts = Path(folder).parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part[len("models--"):]
    return None


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str | None = None, with_trainer_state: bool = False,
                prepare: Callable[[Path], None] | None = None) -> str:
    """Upload `folder` to the model repository `repo_id` (created when missing); returns the
    commit's URL. `prepare(staging)` may change a copy of the folder (hard links where possible)
    before it is uploaded, e.g. to write a model card naming the repository."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if hub_offline():
        raise CheckpointError(f"cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set")
    if len([part for part in repo_id.split("/") if part]) != 2:
        raise CheckpointError(f"--repo {repo_id!r}: expected org/name (or user/name)")
    api = HfApi(token=token)
    with _staged_copy(folder) as staging:
        if prepare is not None:
            prepare(staging)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(folder_path=str(staging), repo_id=repo_id, repo_type="model",
                                       revision=revision, ignore_patterns=None if with_trainer_state else list(RESUME_ONLY),
                                       commit_message=commit_message or f"Upload clipmg checkpoint {folder.name}")
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot push {folder} to {repo_id} on the Hugging Face Hub: {error} "
                                  "(log in with `hf auth login` or set HF_TOKEN)") from error
    return str(getattr(commit, "commit_url", commit))


class _staged_copy:
    """A temporary copy of a folder beside it, made of hard links where the filesystem allows."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> Path:
        try:  # beside the folder, so that hard links work
            self.root = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.push-", dir=self.folder.parent))
        except OSError:
            self.root = Path(tempfile.mkdtemp(prefix=f"{self.folder.name}.push-"))
        staging = self.root / self.folder.name
        shutil.copytree(self.folder, staging, copy_function=_link_or_copy)
        return staging

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
