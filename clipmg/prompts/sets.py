"""Prompt sets: templates with a ``{}`` slot for the class name, optionally with per-class
descriptions; named sets live as files in the repository's ``prompts/``.

A *learned* prompt set (`LearnedPromptSet`, CoOp) holds instead N context vectors that are put
in front of each class name's tokens; it is stored as ``prompt_learner.safetensors`` in a
checkpoint folder and described in its config.json["prompts"] (``"type": "learned"``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from clipmg.checkpoint import CONFIG, read_record
from clipmg.errors import CheckpointError, DataError

# The repository's prompts/ (source checkouts, editable installs), else the copy a wheel
# install puts under <prefix>/share/clipmg/prompts (pyproject's data-files).
PROMPTS_DIRS = (Path(__file__).resolve().parent.parent.parent / "prompts",
                Path(sys.prefix) / "share" / "clipmg" / "prompts")
PROMPTS_DIR = next((d for d in PROMPTS_DIRS if d.is_dir()), PROMPTS_DIRS[0])
LEARNED_FILE = "prompt_learner.safetensors"


@dataclass
class PromptSet:
    name: str = "classnames"
    templates: list[str] = field(default_factory=lambda: ["{}"])
    # class id (as text) or lower-case class name -> description used in place of the name
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.descriptions = {str(k).strip().lower(): v for k, v in self.descriptions.items()}

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": list(self.templates), "descriptions": dict(self.descriptions)}

    @classmethod
    def from_dict(cls, data: dict, folder: str | Path | None = None) -> PromptSet:
        """The inverse of `to_dict`; a learned set (``"type": "learned"``) reads its context from
        `folder` (the checkpoint folder holding its file)."""
        if data.get("type") == "learned":
            return LearnedPromptSet.from_dict(data, folder)
        return cls(name=data.get("name", "prompts"), templates=list(data.get("templates") or ["{}"]),
                   descriptions=dict(data.get("descriptions") or {}))

    def subject(self, class_name: str, class_id: int | None = None) -> str:
        """What fills the slot: the class's description if there is one, else its name."""
        return self.descriptions.get(str(class_id)) or self.descriptions.get(class_name.strip().lower(), class_name)

    def texts_for(self, class_name: str, class_id: int | None = None) -> list[str]:
        subject = self.subject(class_name, class_id)
        return [template.format(subject) for template in self.templates]


@dataclass(eq=False)
class LearnedPromptSet(PromptSet):
    """CoOp prompts: `context` (n_ctx, width) learned token embeddings put after the start token,
    before the tokens of `class_template` filled with the class name (or description). Needs
    an open_clip model whose token width is `width` (see clipmg.prompts.learned)."""

    name: str = "learned"
    templates: list[str] = field(default_factory=lambda: ["{}."])
    context: torch.Tensor | None = None
    init: str | None = None  # the phrase the context started from (None: small random vectors)
    model: str | None = None  # the model it was learned with
    file: str = LEARNED_FILE

    def __post_init__(self):
        super().__post_init__()
        check_templates(self.templates, f"learned prompt set {self.name}")
        if len(self.templates) != 1:
            raise DataError(f"learned prompt set {self.name}: one class template, got {len(self.templates)}")

    @property
    def class_template(self) -> str:
        return self.templates[0]

    @property
    def n_ctx(self) -> int:
        return 0 if self.context is None else int(self.context.shape[0])

    def to_dict(self) -> dict:
        width = None if self.context is None else int(self.context.shape[1])
        return {**super().to_dict(), "type": "learned", "file": self.file, "n_ctx": self.n_ctx, "width": width,
                "init": self.init, "model": self.model}

    @classmethod
    def from_dict(cls, data: dict, folder: str | Path | None = None) -> LearnedPromptSet:
        if folder is None:
            raise CheckpointError(f"learned prompt set {data.get('name')!r}: its context lives in "
                                  f"{data.get('file', LEARNED_FILE)} beside config.json; load it from the "
                                  "checkpoint folder")
        return cls.load(Path(folder) / data.get("file", LEARNED_FILE))

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        if self.context is None:
            raise DataError(f"learned prompt set {self.name} has no context to save")
        path = Path(path)
        meta = {k: v for k, v in self.to_dict().items() if k != "file"}
        save_file({"context": self.context.detach().float().contiguous().cpu()}, str(path),
                  metadata={"clipmg_prompts": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> LearnedPromptSet:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"learned prompt context {path} is missing (config.json names it)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("clipmg_prompts", "{}"))
                context = handle.get_tensor("context")
        except Exception as error:  # safetensors raises its own types for damaged files
            raise CheckpointError(f"cannot read learned prompts {path}: {error}") from error
        return cls(name=meta.get("name", "learned"), templates=list(meta.get("templates") or ["{}."]),
                   descriptions=dict(meta.get("descriptions") or {}), context=context, init=meta.get("init"),
                   model=meta.get("model"), file=path.name)


def check_templates(templates: list, source: str) -> list[str]:
    """`templates` as given, or DataError naming `source` when one lacks its single `{}` slot."""
    if not templates:
        raise DataError(f"{source}: a prompt set needs at least one template")
    for i, template in enumerate(templates, start=1):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise DataError(f"{source}: template {i} ({template!r}) must contain exactly one '{{}}' slot")
    return templates


def load_prompt_set(source: str | Path | None) -> PromptSet:
    """A prompt set from a YAML/text file, a name of a set in ``prompts/``, or the bare class names."""
    if source is None or source == "classnames":
        return PromptSet()
    path = Path(source)
    if path.is_dir():  # a checkpoint folder: its learned context, else the set it stores
        if (path / LEARNED_FILE).is_file():
            return LearnedPromptSet.load(path / LEARNED_FILE)
        if (path / CONFIG).is_file():
            return PromptSet.from_dict(read_record(path).prompts or {}, folder=path)
        raise DataError(f"prompt set {path} is a folder without {LEARNED_FILE} or config.json")
    if path.suffix == ".safetensors" and path.is_file():
        return LearnedPromptSet.load(path)
    if not path.exists():
        for suffix in (".yaml", ".yml", ".txt"):
            candidate = PROMPTS_DIR / f"{source}{suffix}"
            if candidate.is_file():
                path = candidate
                break
        else:
            known = sorted(p.stem for p in PROMPTS_DIR.glob("*.*")) if PROMPTS_DIR.is_dir() else []
            raise DataError(f"prompt set {source} is neither a file nor a known set ({', '.join(known)})")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return PromptSet(name=path.stem, templates=check_templates(templates, str(path)))
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with 'templates' (and optional 'descriptions')")
    prompt_set = PromptSet.from_dict({"name": path.stem, **data})
    check_templates(prompt_set.templates, str(path))
    return prompt_set
