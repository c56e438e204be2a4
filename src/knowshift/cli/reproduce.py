"""`knowshift reproduce run | export | results` (registered by the cli package): the reproduction suite
of configs/reproduce/, its compact data export, and RESULTS.md with its figures."""

from __future__ import annotations

import argparse
import sys

from knowshift.reproduce.suite import DATA, RESULTS, SUITE_FILE, WORKSPACE


def add_commands(commands) -> None:
    """Register `reproduce` and its sub-commands on the CLI's sub-command parser."""
    reproduce = commands.add_parser(
        "reproduce", help="re-test the papers' findings: run the suite, export, write RESULTS.md",
        description="The reproduction suite (configs/reproduce/suite.yaml): `run` runs its "
        "studies resumably and exports them, `export` writes the compact study data, `results` "
        "writes RESULTS.md and its figures from that data alone.",
    )  # fmt: skip
    steps = reproduce.add_subparsers(dest="step", metavar="STEP", required=True)

    run = steps.add_parser("run", help="run the suite's studies (resumes), then export and write results")  # fmt: skip
    _suite_args(run, work=True, data=True, select=True)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting of every run (changes the runs: a new suite)")  # fmt: skip
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--no-results", action="store_true",
                     help="only run: no export, no RESULTS.md")  # fmt: skip
    run.add_argument("--out", default=str(RESULTS), help=f"the page to write (default {RESULTS})")
    run.set_defaults(handler=_run)

    export = steps.add_parser("export", help="export the suite's done runs as compact data")
    _suite_args(export, work=True, data=True, select=True)
    export.set_defaults(handler=_export)

    results = steps.add_parser("results", help="write RESULTS.md and its figures from the exported data")  # fmt: skip
    _suite_args(results, work=False, data=True, select=False)
    results.add_argument("--out", default=str(RESULTS), help=f"the page to write (default {RESULTS})")  # fmt: skip
    results.set_defaults(handler=_results)


def _suite_args(parser: argparse.ArgumentParser, *, work: bool, data: bool, select: bool) -> None:
    parser.add_argument("--suite", default=str(SUITE_FILE), help=f"the suite file (default {SUITE_FILE})")  # fmt: skip
    if work:
        parser.add_argument("--work", default=str(WORKSPACE),
                            help=f"where the studies run: <model>/<study>/ (default {WORKSPACE})")  # fmt: skip
    if data:
        parser.add_argument("--data", default=str(DATA),
                            help=f"the exported data: <model>/<study>.json (default {DATA})")  # fmt: skip
    if select:
        parser.add_argument("--model", dest="models", action="append", default=[],
                            help="only this model of the suite (repeatable)")  # fmt: skip
        parser.add_argument("--study", dest="studies", action="append", default=[],
                            help="only this study of the suite (repeatable)")  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from knowshift.reproduce.suite import load_suite, progress_line, run_suite

    suite = load_suite(args.suite)
    outcomes = run_suite(suite, args.work, models=args.models, studies=args.studies,
                         overrides=args.overrides, device=args.device)  # fmt: skip
    print(f"reproduce: {progress_line(outcomes)}", file=sys.stderr)
    if not args.no_results:
        _export(args)
        _results(args)
    return min(99, sum(failed for *_, failed in outcomes))


def _export(args: argparse.Namespace) -> int:
    from knowshift.reproduce.suite import export_suite, load_suite

    written = export_suite(load_suite(args.suite), args.work, args.data, models=args.models,
                           studies=args.studies)  # fmt: skip
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"nothing to export: no study of the suite has run in {args.work}", file=sys.stderr)
    return 0


def _results(args: argparse.Namespace) -> int:
    from knowshift.reproduce.suite import load_suite, write_results

    written = write_results(load_suite(args.suite), args.data, args.out)
    print(f"wrote {written[-1]} and {len(written) - 1} figures in {args.data}/figures")
    return 0
