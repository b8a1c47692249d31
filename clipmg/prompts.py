"""Prompt sets -> class text embeddings (the zero-shot classifier of open_clip, for gestures).

A prompt set is a list of templates with a ``{}`` slot for the class name, optionally with
per-class descriptions. A class's embedding is the normalised mean of its templates' normalised
embeddings (prompt ensembling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from clipmg.errors import DataError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


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
    def from_dict(cls, data: dict) -> PromptSet:
        return cls(name=data.get("name", "prompts"), templates=list(data.get("templates") or ["{}"]),
                   descriptions=dict(data.get("descriptions") or {}))

    def texts_for(self, class_name: str, class_id: int | None = None) -> list[str]:
        subject = self.descriptions.get(str(class_id)) or self.descriptions.get(class_name.strip().lower(), class_name)
        return [template.format(subject) for template in self.templates]


def _check_templates(templates: list, source: str) -> list[str]:
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
        return PromptSet(name=path.stem, templates=_check_templates(templates, str(path)))
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with 'templates' (and optional 'descriptions')")
    prompt_set = PromptSet.from_dict({"name": path.stem, **data})
    _check_templates(prompt_set.templates, str(path))
    return prompt_set


@torch.no_grad()
def build_class_embeddings(model, class_names: list[str], prompt_set: PromptSet | None = None,
                           class_ids: list[int] | None = None, batch_size: int = 256) -> torch.Tensor:
    """(C, D) normalised class embeddings: the mean of each class's normalised template embeddings."""
    prompt_set = prompt_set or PromptSet()
    class_ids = class_ids or [None] * len(class_names)
    texts = [text for name, cid in zip(class_names, class_ids) for text in prompt_set.texts_for(name, cid)]
    chunks = [model.encode_text(texts[i:i + batch_size], normalize=True) for i in range(0, len(texts), batch_size)]
    per_template = torch.cat(chunks).view(len(class_names), len(prompt_set.templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1)
