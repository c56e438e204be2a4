"""`knowshift study validate|run|status` and `knowshift demo` (registered by the cli package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from knowshift.errors import KnowshiftError
from knowshift.paths import default_workspace


def add_commands(commands) -> None:
    """Register `study` and `demo` on the CLI's sub-command parser."""
    study = commands.add_parser("study", help="many runs from one study file (configs/*.yaml)")
    actions = study.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a study file and list its runs")
    _study_args(validate)
    validate.set_defaults(handler=_validate)
    run = actions.add_parser("run", help="run a study; a rerun skips finished work")
    _study_args(run)
    run.add_argument("--out", help="study folder (default: WORKSPACE/<study name>)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    _probe_cache_arg(run)
    _executor_args(run)
    run.set_defaults(handler=_run)
    status = actions.add_parser("status", help="the runs of a study folder and their status")
    status.add_argument("study_dir", help="a folder written by knowshift study run")
    status.set_defaults(handler=_status)

    demo = commands.add_parser(
        "demo", help="a reduced unknown-ratio study and its report (minutes)"
    )
    demo.add_argument("--out", default=str(default_workspace() / "demo"), help="study folder")
    demo.add_argument("--device", default="auto")
    _probe_cache_arg(demo)
    demo.add_argument("--scale", type=float, help="multiply the demo's sizes")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a setting of every run, e.g. train.epochs=1")  # fmt: skip
    demo.set_defaults(handler=_demo)


def _probe_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe-cache", default="auto", metavar="WORKSPACE",
        help="a workspace whose stored probe results the study reuses and adds to, so studies "
        "of one model share their probing; 'none': probe for this study alone (default: the "
        "folder that holds the study folder, when it is the workspace or holds a knowshift.db)",
    )  # fmt: skip


def _executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: the runs one after another in this process (default); ray: "
                        "each run a Ray task (pip install 'knowshift[ray]')")  # fmt: skip
    ray = parser.add_argument_group("--executor ray")
    ray.add_argument("--address", help="the Ray cluster: auto, HOST:PORT or ray://HOST:10001 "
                     "(default: RAY_ADDRESS, else a Ray instance started on this machine)")  # fmt: skip
    ray.add_argument(
        "--cpus-per-run", type=float, metavar="N", help="CPUs a run's task takes (default 1)"
    )
    ray.add_argument("--gpus-per-run", type=float, metavar="N",
                     help="GPUs a run's task takes (default: 1 on a cluster with GPUs unless "
                     "--device cpu, else 0)")  # fmt: skip
    ray.add_argument("--retries", type=int, metavar="N",
                     help="times Ray retries a failed run before it is reported failed (default 1)")  # fmt: skip


def _check_executor_flags(args: argparse.Namespace) -> None:
    """The executor flags, checked before anything starts: a mistake is one line."""
    ray_flags = {"--address": args.address, "--cpus-per-run": args.cpus_per_run,
                 "--gpus-per-run": args.gpus_per_run, "--retries": args.retries}  # fmt: skip
    if args.executor == "local":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            raise KnowshiftError(f"{given[0]} applies to --executor ray only")
        return
    if args.cpus_per_run is not None and args.cpus_per_run <= 0:
        raise KnowshiftError("--cpus-per-run must be above 0, e.g. 1")
    for flag, value in (("--gpus-per-run", args.gpus_per_run), ("--retries", args.retries)):
        if value is not None and value < 0:
            raise KnowshiftError(f"{flag} must be at least 0")
    if args.device.startswith("cuda:"):
        raise KnowshiftError(f"--device {args.device}: with --executor ray give --device cuda "
                             "(Ray gives each run its GPU)")  # fmt: skip


def _executor(args: argparse.Namespace):
    """The executor --executor names, connected (None: the local one)."""
    if args.executor == "local":
        return None
    from knowshift.study.ray_executor import RayExecutor

    return RayExecutor(args.address, args.device, cpus_per_run=args.cpus_per_run or 1,
                       gpus_per_run=args.gpus_per_run,
                       retries=1 if args.retries is None else args.retries)  # fmt: skip


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a study file (YAML), e.g. configs/unknown-ratio.yaml")
    parser.add_argument("--scale", type=float, help="multiply the study's sizes (its scale:)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of every run, e.g. --set train.epochs=3")  # fmt: skip


def _validate(args: argparse.Namespace) -> int:
    from knowshift.study.plan import format_plan, load_study

    study = load_study(args.file, scale=args.scale, overrides=args.overrides)
    print(format_plan(study))
    return 0


def _run(args: argparse.Namespace) -> int:
    from knowshift.study.plan import format_plan, load_study

    _check_executor_flags(args)
    study = load_study(args.file, scale=args.scale, overrides=args.overrides)
    _check_inputs(study, args.device)
    executor = _executor(args)
    try:
        print(format_plan(study), file=sys.stderr)
        out = Path(args.out) if args.out else default_workspace() / study.name
        return _execute(study, out, args.device, args.probe_cache, executor)
    finally:
        if executor is not None:
            executor.close()


def _check_inputs(study, device: str) -> None:
    """What the study file names but validation cannot see (its models, fact files, relations
    and the device), checked before the study folder is created: a typo is one line, not a
    study of failed runs."""
    from knowshift.errors import unknown_name
    from knowshift.facts import load_facts
    from knowshift.models.loader import resolve_device
    from knowshift.models.resolve import model_fingerprint

    resolve_device(device)
    for name in sorted({run.config.model.name for run in study.runs}):
        model_fingerprint(name)  # an existing model folder, embedded name or hub id
    sources: dict[str, set[str]] = {}
    for run in study.runs:
        sources.setdefault(run.config.facts.source, set()).update(run.config.facts.relations or ())
    for source, relations in sorted(sources.items()):
        facts = load_facts(source)
        for relation in sorted(relations - set(facts.relations)):
            raise unknown_name(
                f"relation in facts.relations of {source}", relation, facts.relations
            )


def _demo(args: argparse.Namespace) -> int:
    from knowshift.study.demo import demo_study

    study = demo_study(args.scale, tuple(args.overrides))
    return _execute(study, Path(args.out), args.device, args.probe_cache)


def _execute(study, out: Path, device: str, probe_cache: str, executor=None) -> int:
    """Run the study, write its report; the exit status is the number of failed runs (0: none;
    at most 99), plus 1 when the report could not be written."""
    from knowshift.study.runner import run_study

    outcome = run_study(study, out, device=device, probe_cache=_cache_database(probe_cache, out),
                        executor=executor)  # fmt: skip
    report_failed = _write_report(out)
    minutes, seconds = divmod(round(outcome.seconds), 60)
    print(f"study {study.name}: {outcome.n_done}/{outcome.n_runs} runs done "
          f"({outcome.n_skipped} earlier), {len(outcome.failures)} failed, "
          f"{minutes}m{seconds:02d}s; results in {out}", file=sys.stderr)  # fmt: skip
    for failure in outcome.failures:
        print(f"  failed: {failure}", file=sys.stderr)
    return min(99, len(outcome.failures) + report_failed)


def _cache_database(choice: str, out: Path) -> Path | None:
    """The results database a study shares its probing with (--probe-cache)."""
    from knowshift.store import database_path

    if choice == "none":
        return None
    if choice != "auto":
        if Path(choice).is_file():
            raise KnowshiftError(f"--probe-cache {choice}: give a workspace folder, not a file")
        return database_path(choice)
    parent = out.resolve().parent
    shared = parent == default_workspace().resolve() or database_path(parent).is_file()
    return database_path(parent) if shared else None


def _write_report(study_dir: Path) -> int:
    """Write the study's report; 1 if it could not be written (the results stay in the store)."""
    from knowshift.report import write_report

    try:
        path = write_report(study_dir)
    except KnowshiftError as error:
        print(f"knowshift: report not written: {error}; the results are in "
              f"{study_dir / 'knowshift.db'} (knowshift report {study_dir} to retry)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"report: {path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from knowshift.store import Store, database_path
    from knowshift.study.plan import load_study
    from knowshift.study.runner import STUDY_FILE, format_summary, study_logs

    study_dir = Path(args.study_dir)
    if not (study_dir / STUDY_FILE).is_file() or not database_path(study_dir).is_file():
        raise KnowshiftError(
            f"{study_dir} is not a study folder (no {STUDY_FILE} and knowshift.db); "
            "give the --out folder of knowshift study run"
        )
    study = load_study(study_dir / STUDY_FILE)
    with Store.for_workspace(study_dir) as store:
        print(format_summary(store, study, study_logs(study, study_dir)))
        failed = [r for r in store.study_runs(study.name) if r["status"] == "failed"]
    for row in failed:
        print(f"failed {row['variant'].get('label')}: {row['variant'].get('error')}")
    return 0
