"""The `tracker3d` command."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from . import __version__
from . import errors
from persistence.errors import HistoryError, WeightsError
from streams.errors import SchemaError, StreamError

for _user_error in (StreamError, SchemaError, WeightsError, HistoryError):
    errors.register_user_error(_user_error)

# Subcommand modules under tracker3d.commands, in --help order.
COMMANDS = ["demo", "live", "replay", "record", "calibrate", "sim", "eval", "track2d", "persistence", "view", "keys", "bench",
            "batch"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker3d", description="Streaming stereo 3D tracker: two cameras in, 3D tracks out on ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"tracker3d {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"tracker3d.commands.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except errors.USER_ERRORS as exc:
        if args.traceback:
            raise
        print(f"tracker3d {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
