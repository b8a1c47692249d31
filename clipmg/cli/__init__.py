"""The `clipmg` command: parses arguments, calls the library, prints what it returns.

One module per command (or group of commands); options several commands share are declared
once in `clipmg.cli.options`. Process-wide settings (logging, progress bars, the allocator) are
made here, never on import of the library.
"""

from __future__ import annotations

import argparse
import logging
import sys

from clipmg.cli import (
    compare,
    data,
    demo,
    embed,
    export,
    imports,
    keypoints,
    lab,
    predict,
    probe,
    prompts,
    push,
    train,
    wise,
)
from clipmg.errors import ClipmgError, Preempted
from clipmg.utils import keep_freed_memory_for_reuse, set_progress

COMMANDS = (data, train, demo, predict, embed, prompts, lab, probe, compare, keypoints, wise, export, push,
            imports)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipmg", description="Micro-gesture classification in video frames "
                                                                "by vision-language contrastive learning.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    """clipmg's own logger speaks at INFO; other libraries (open_clip logs to the root logger) only
    warn."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clipmg").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    set_progress(not quiet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    keep_freed_memory_for_reuse()
    try:
        return args.func(args)
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr)
        return exc.exit_status
    except ClipmgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
