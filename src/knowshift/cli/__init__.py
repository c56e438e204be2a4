"""The `knowshift` command line: `main` parses the command and calls its module's handler (one
thin module per command group; what they share is in cli.common). Only the commands that need
torch import it, and no module outside this package imports from it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress

from knowshift.errors import KnowshiftError


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a user-fixable problem prints one line and exits with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KnowshiftError as error:
        _print_error(str(error))
        return 2
    except KeyboardInterrupt:
        print(
            "knowshift: interrupted; finished batches are stored, rerun to resume", file=sys.stderr
        )
        return 130
    except BrokenPipeError:
        # The reader went away (`knowshift facts geo | head`): it had what it wanted. Point
        # stdout at /dev/null so the interpreter's last flush does not raise again.
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended


def _print_error(message: str) -> None:
    # One line whatever the message holds, so scripts can grep it and users see it whole.
    print(f"knowshift: error: {' '.join(message.splitlines())}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (still exit status 2)."""

    def error(self, message: str):
        _print_error(f"{message} (see {self.prog} --help)")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    from knowshift.cli import (
        analyze,
        audit,
        build,
        probe,
        report,
        reproduce,
        restore,
        study,
        train,
    )

    parser = _Parser(prog="knowshift", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (probe, build, train, analyze, restore, study, report, audit, reproduce):
        module.add_commands(commands)
    return parser
