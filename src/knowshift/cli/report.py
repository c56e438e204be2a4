"""`knowshift report STUDY_DIR` (registered by the cli package): one self-contained HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from knowshift.errors import KnowshiftError


def add_commands(commands) -> None:
    """Register `report` on the CLI's sub-command parser."""
    report = commands.add_parser(
        "report", help="an HTML report of a study or workspace, from its results database"
    )
    report.add_argument("study_dir", metavar="STUDY_DIR", help="the folder that holds knowshift.db")
    report.add_argument("--out", help="the HTML file to write (default: STUDY_DIR/report.html)")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from knowshift.report import write_report

    if args.out and Path(args.out).is_dir():
        raise KnowshiftError(f"--out {args.out} is a folder; give the HTML file to write")
    print(f"wrote {write_report(args.study_dir, args.out)}")
    return 0
