"""`clipmg train`: every TrainConfig field is a flag (`--lr-heads 1e-3`), and `--config` a YAML of them."""

from __future__ import annotations

import argparse
import json

from clipmg.cli.imports import folder_for
from clipmg.training import TrainConfig, config_from_dict, load_config, load_run_config, train
from clipmg.training.config import CHOICES, FLAGS, SECTIONS


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
    """One flag per setting, in an argument group per section, each with its help and default;
    defaults stay None so only flags given override the file."""
    groups = {name: parser.add_argument_group(title, description) for name, (title, description) in SECTIONS.items()}
    for setting in FLAGS:
        kinds = setting.kinds
        kind = _number_or_word if float in kinds and str in kinds else kinds[0]
        flag = "--" + setting.name.replace("_", "-")
        help_text = setting.help
        if "(default" not in help_text:
            help_text += f" (default: {_shown_default(setting.default)})"
        help_text = help_text.replace("%", "%%")
        group = groups[setting.section]
        if setting.name in CHOICES:
            group.add_argument(flag, choices=CHOICES[setting.name], default=None, help=help_text)
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
    for setting in FLAGS:
        value = getattr(args, setting.name, None)
        if value is not None:
            values[setting.name] = value
    return config_from_dict(values, source=getattr(args, "config", None) or "config").validate()


def run(args) -> int:
    base = load_run_config(args.resume) if args.resume else None
    cfg = resolve_config(args, base=base)
    if cfg.network.init_from:
        cfg = cfg.replace(init_from=folder_for(cfg.network.init_from, cfg.data.labels))
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
