"""The `tracker3d` command."""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from typing import Optional, Sequence

from persistence.errors import HistoryError, WeightsError
from streams.errors import OutputError, SchemaError, StreamError

from . import __version__, errors
from .commands.signals import STOP

for _user_error in (StreamError, SchemaError, WeightsError, HistoryError):
    errors.register_user_error(_user_error)

#: Errors of a write that failed during a run (exit status 1, one line).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)

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
    with STOP.installed():
        try:
            rc = int(args.func(args) or 0)
        except KeyboardInterrupt:
            print(f"tracker3d {args.command}: interrupted{' by ' + STOP.name if STOP.name else ''}", file=sys.stderr)
            return STOP.rc or 130
        except (OutputError, OSError) as exc:
            # A write failed during the run (disk full, I/O error): what was written is readable.
            if args.traceback or not (isinstance(exc, OutputError) or exc.errno in WRITE_ERRNOS):
                raise
            print(f"tracker3d {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except errors.RunFailure as exc:  # not the input's fault: as a failed write
            if args.traceback:
                raise
            if STOP.requested():  # a signal to every process (systemd stops a service's whole cgroup)
                print(f"tracker3d {args.command}: stopped by {STOP.name} ({exc}); the outputs hold what was "
                      f"processed (exit status {STOP.rc})", file=sys.stderr)
                return STOP.rc
            done = f"the {exc.processed} pairs processed" if exc.processed is not None else "the pairs"
            print(f"tracker3d {args.command}: error: {exc}; the outputs hold {done} before it", file=sys.stderr)
            return 1
        except errors.USER_ERRORS as exc:
            if args.traceback:
                raise
            print(f"tracker3d {args.command}: error: {exc}", file=sys.stderr)
            return 2
        if STOP.requested():
            print(f"tracker3d {args.command}: stopped by {STOP.name} before the end; the outputs hold what "
                  f"was processed (exit status {STOP.rc})", file=sys.stderr)
            return STOP.rc
        return rc


if __name__ == "__main__":
    sys.exit(main())
