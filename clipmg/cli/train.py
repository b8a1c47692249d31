"""`clipmg train`: every TrainConfig field is a flag (`--lr-heads 1e-3`), and `--config` a YAML of them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from clipmg.cli.imports import folder_for
from clipmg.training import TrainConfig, config_from_dict, load_config, load_run_config, train
from clipmg.training.config import CHOICES, SECTIONS


def _field_types(f: dataclasses.Field) -> list[type]:
    hint = typing.get_type_hints(TrainConfig)[f.name]
    return [a for a in typing.get_args(hint) if a is not type(None)] or [hint]


def _number_or_word(text: str) -> float | str:
    """A number, else the word as given (`auto`); TrainConfig.validate says which words are valid."""
    try:
        return float(text)
    except ValueError:
        return text


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    return parse


def _shown_default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, in an argument group per section, each with its help and
    default; defaults stay None so only flags given override the file."""
    groups = {name: parser.add_argument_group(title, description) for name, (title, description) in SECTIONS.items()}
    for f in dataclasses.fields(TrainConfig):
        kinds = _field_types(f)
        kind = _number_or_word if float in kinds and str in kinds else kinds[0]
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if "(default" not in help_text:
            help_text += f" (default: {_shown_default(f.default)})"
        help_text = help_text.replace("%", "%%")
        group = groups[f.metadata["section"]]
        if f.name in CHOICES:
            group.add_argument(flag, choices=CHOICES[f.name], default=None, help=help_text)
        elif kind is bool:
            group.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=None,
                               metavar="BOOL", help=help_text)
        else:
            group.add_argument(flag, type=_parse_optional(kind), default=None, help=help_text)


def resolve_config(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """Defaults < base (a resumed run's settings) < --config file < command-line flags."""
    values = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_config(args.config))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return config_from_dict(values, source=getattr(args, "config", None) or "config").validate()


def run(args) -> int:
    base = load_run_config(args.resume) if args.resume else None
    cfg = resolve_config(args, base=base)
    if cfg.init_from:
        cfg = dataclasses.replace(cfg, init_from=folder_for(cfg.init_from, cfg.labels))
    summary = train(cfg, resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a contrastive model",
                       usage="clipmg train [--config FILE] [--resume RUN] [--SETTING VALUE ...]",
                       description="Settings come from --config (YAML) and are overridden by flags; "
                                   "every setting below is a flag and a key of the YAML (with _ for -).")
    p.add_argument("--config", help="YAML file of settings (any flag below, with _ for -)")
    p.add_argument("--resume", help="run folder to continue exactly where it stopped")
    add_config_arguments(p)
    p.set_defaults(func=run)
