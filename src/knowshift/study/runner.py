"""Run a study: the entry point of the study stage.

    outcome = run_study(study, "workspace/unknown-ratio")

reads top to bottom: claim the study folder (a workspace with its own knowshift.db), probe the
base model once, build every run's set, record the plan, then run by run: train, evaluate,
analyse, each stage skipped when the run's folder says it is done. An executor runs those
stages (`execute_run`): the local one here, one run after another; the Ray one
(study/ray_executor.py) each run as a Ray task. A run that fails is recorded
as failed with its error and the study goes on. The study's own analyses (the regression) follow.

Bookkeeping is the store's `study_runs` table, one row per run under the id its training is
stored under (train_runs, train_records, and the subject "<id>:<checkpoint>" of its analyses), so
a report joins them directly; a run that failed before its set was built has no such id and is
recorded under its plan id (its folder's name). The variant holds the run's grid values (dotted
key -> value), its `label` where the study file gives one, its `folder` (the plan id: runs/<folder>)
and `error` when it failed; the
status is pending, running, done, failed, or dropped (no longer in the study file).
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from knowshift import atomic
from knowshift.errors import KnowshiftError
from knowshift.study.analyses import study_regression
from knowshift.study.plan import PlannedRun, Study
from knowshift.study.stages import (
    Echo,
    RunContext,
    StageLog,
    analysis_stage,
    build_stage,
    eval_facts,
    eval_stage,
    probe_stage,
    require_checkpoints,
    train_stage,
)

STUDY_FILE = "study.yaml"


@dataclass(frozen=True)
class StudyOutcome:
    """How a study run ended: run counts and the failed runs ("label: error")."""

    n_runs: int
    n_done: int
    n_skipped: int  # done before this call
    failures: tuple[str, ...]
    seconds: float


def echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_study(study: Study, study_dir: str | Path, *, device: str = "auto",
              echo: Echo = echo_stderr, probe_cache: str | Path | None = None,
              executor: Executor | None = None) -> StudyOutcome:  # fmt: skip
    """Run every unfinished run of `study` in `study_dir`, then the study's analyses.
    `probe_cache`: a results database (file) whose probe results of the same model and
    settings the study reuses and adds its own to (None: the study probes for itself).
    `executor` runs the runs' stages after their build (default: here, one after another)."""
    from knowshift.facts import load_facts
    from knowshift.models.loader import quiet_transformers
    from knowshift.store import Store

    started, study_dir, n = time.perf_counter(), Path(study_dir), len(study.runs)
    quiet_transformers()
    # One process at a time runs a study folder (a second would train the same runs into it).
    with atomic.folder_lock(study_dir, "study run"), Store.for_workspace(study_dir) as store:
        _claim(study_dir, study)
        executor = executor or LocalExecutor()
        executor.prepare(store, study_dir, echo)
        # 1. What is left to do (by the runs' stage logs).
        logs = {run.run_id: StageLog(_run_dir(study_dir, run)) for run in study.runs}
        todo = [run for run in study.runs if not logs[run.run_id].complete(run.config)]
        echo(f"study {study.name}: {n} runs, {n - len(todo)} done earlier, {len(todo)} to run "
             f"-> {study_dir}")  # fmt: skip
        if note := _versions_note(store, study):
            echo(note)
        # 2. Probe once per base model and setting; build every set (both reuse finished work).
        facts = {s: load_facts(s) for s in sorted({r.config.facts.source for r in todo})}
        cache = _probe_cache(probe_cache, store.path)
        sources, errors = probe_stage(todo, facts, store, device, echo, cache) if todo else ({}, {})
        contexts = {}
        for run in todo:
            _write_config(run, _run_dir(study_dir, run), study.name)
            context = RunContext(study.name, run, _run_dir(study_dir, run), study_dir,
                                 facts[run.config.facts.source], sources.get(run.run_id), store,
                                 device, echo)  # fmt: skip
            try:
                if run.run_id in errors:
                    raise errors[run.run_id]
                logs[run.run_id].mark("build", build_stage(context))
                contexts[run.run_id] = context
            except Exception as error:  # noqa: BLE001 - recorded as this run's failure
                errors[run.run_id] = error
        # 3. The plan in the store: every run pending, done or failed; runs gone, dropped.
        _record_plan(store, study, logs, errors)
        # 4. Run by run; a failure is recorded and the study goes on.
        failures = _run_each(store, study, contexts, logs, errors, echo, executor)
        # 5. The study's analyses, over its finished runs.
        _study_analyses(store, study, logs, echo)
        print(format_summary(store, study, logs), flush=True)
        n_done = sum(_status(store, study, run, logs) == "done" for run in study.runs)
    return StudyOutcome(n, n_done, n - len(todo), tuple(failures), time.perf_counter() - started)


class Executor(Protocol):
    """Runs the stages of a study's runs after their build: `submit` each, then `wait`."""

    def prepare(self, store, study_dir: Path, echo: Echo) -> None:
        """Before the study looks at its runs (e.g. collect results a crash left behind)."""

    def submit(self, tag: str, ctx: RunContext, finished: Finished) -> None:
        """Start a run; `finished(ctx, error, details)` is called once it has ended."""

    def wait(self) -> None:
        """Return when every submitted run has finished."""


# How a run ended: its context, its error (None: done) and the error's traceback text.
Finished = Callable[[RunContext, Exception | None, str | None], None]


class LocalExecutor:
    """Runs each run here and now, in this process."""

    def prepare(self, store, study_dir: Path, echo: Echo) -> None:
        pass

    def submit(self, tag: str, ctx: RunContext, finished: Finished) -> None:
        try:
            execute_run(ctx, StageLog(ctx.run_dir), tag)
        except Exception as error:  # noqa: BLE001 - recorded as this run's failure
            finished(ctx, error, None)
        else:
            finished(ctx, None, None)

    def wait(self) -> None:
        pass


def _run_each(store, study: Study, contexts: dict[str, RunContext], logs: dict[str, StageLog],
              errors: dict[str, Exception], echo: Echo, executor: Executor) -> list[str]:  # fmt: skip
    """Train, evaluate and analyse every run with a built set; returns the failures ("label:
    error"), those before training included."""
    failures, tags = [], {}

    def finished(ctx: RunContext, error: Exception | None, details: str | None) -> None:
        run = ctx.run
        planned, log = _row_id(run, logs[run.run_id]), StageLog(ctx.run_dir)
        logs[run.run_id] = log  # the stages wrote it (maybe elsewhere)
        if _row_id(run, log) != planned:  # the id changed under the study: move its row
            store.put_study_run(study.name, planned, _row_variant(run), "dropped")
        if error is None:
            store.put_study_run(study.name, _row_id(run, log), _row_variant(run), "done")
            return
        failures.append(f"{run.label}: {one_line(error)}")
        record_failure(store, study, run, log, error, ctx.run_dir, details)
        echo(f"{tags[run.run_id]}: FAILED: {one_line(error)} (see runs/{run.run_id}/error.txt)")

    for i, run in enumerate(study.runs, 1):
        tag = tags[run.run_id] = f"[{i}/{len(study.runs)}] {run.label} ({run.run_id})"
        if run.run_id in errors:
            failures.append(f"{run.label}: {one_line(errors[run.run_id])}")
            echo(f"{tag}: FAILED before training: {one_line(errors[run.run_id])}")
        elif run.run_id not in contexts:
            echo(f"{tag}: done earlier, skipped")
        else:
            log = logs[run.run_id]
            store.put_study_run(study.name, _row_id(run, log), _row_variant(run), "running")
            executor.submit(tag, contexts[run.run_id], finished)
    executor.wait()
    return failures


def _versions_note(store, study: Study) -> str | None:
    """The note to print when the study's stored runs and analyses were made with other
    versions than this process's (its probe results are the probe stage's to note)."""
    from knowshift.versions import versions_note

    stored = [analysis["versions"] for analysis in store.analyses()]
    for row in store.study_runs(study.name):
        config = store.run_config(row["run_id"]) if row["status"] != "dropped" else None
        if config:
            stored += [config.get("versions", {}), *config.get("earlier_versions", [])]
    return versions_note(f"study {study.name}", stored)


def _probe_cache(probe_cache: str | Path | None, own: Path) -> Path | None:
    """The shared probe database, unless there is none or it is the study's own."""
    if probe_cache is None:
        return None
    path = Path(probe_cache)
    return None if path.resolve() == own.resolve() else path


def _run_dir(study_dir: Path, run: PlannedRun) -> Path:
    return study_dir / "runs" / run.run_id


def _claim(study_dir: Path, study: Study) -> None:
    """Write the resolved study file; refuse a folder that holds another study."""
    import yaml

    path = study_dir / STUDY_FILE
    if path.is_file():
        existing = (yaml.safe_load(path.read_text()) or {}).get("name")
        if existing != study.name:
            raise KnowshiftError(f"{study_dir} holds study {existing!r}, not {study.name!r}; "
                                 "pick another --out folder")  # fmt: skip
    header = ("# The study as run (its scale and --set overrides applied); "
              f"rerun: knowshift study run {path} --out {study_dir}\n")  # fmt: skip
    atomic.write_text(path, header + yaml.safe_dump(study.document, sort_keys=False))


def _row_id(run: PlannedRun, log: StageLog) -> str:
    """The run's id in study_runs: its training's id once known, else its plan id."""
    return log.train_run_id() or run.run_id


def _row_variant(run: PlannedRun) -> dict:
    """The run's variant as stored: its grid values and label, plus its folder under runs/."""
    return {**run.variant, "folder": run.run_id}


def _record_plan(store, study: Study, logs: dict[str, StageLog], errors: dict) -> None:
    """Mark every run done, failed or pending, and rows of runs no longer planned dropped."""
    planned = set()
    for run in study.runs:
        log = logs[run.run_id]
        planned.add(_row_id(run, log))
        if run.run_id in errors:
            record_failure(store, study, run, log, errors[run.run_id], log.path.parent)
        else:
            status = "done" if log.complete(run.config) else "pending"
            store.put_study_run(study.name, _row_id(run, log), _row_variant(run), status)
    for row in store.study_runs(study.name):
        if row["run_id"] not in planned and row["status"] != "dropped":
            store.put_study_run(study.name, row["run_id"], row["variant"], "dropped")


def execute_run(ctx: RunContext, log: StageLog, tag: str) -> None:
    """The stages of one run after its build, in order, each skipped when its log has it.
    Every executor runs a run with this; the study's bookkeeping (study_runs) is the caller's."""
    run, echo, started = ctx.run, ctx.echo, time.perf_counter()
    if "train" not in log:
        train = run.config.train.config
        echo(f"{tag}: train ({train.method}, {train.epochs} epochs)")
        log.mark("train", train_stage(ctx, ctx.study_dir / log.done["build"]["set"]))
    # A trained run no longer needs its resume state; removed only once training is logged
    # done, so a kill before that resumes the finished training instead of redoing it.
    shutil.rmtree(ctx.run_dir / "state", ignore_errors=True)
    for checkpoint in run.config.eval.checkpoints:
        key = f"eval:{checkpoint}:{eval_facts(run.config)}"
        if key not in log:
            require_checkpoints(log, ctx.run_dir)
            echo(f"{tag}: eval {checkpoint}")
            line = eval_stage(ctx, checkpoint)
            log.mark(key, {"summary": line})
            echo(f"  {checkpoint}: {line}")
    for index, analysis in enumerate(run.config.analyses):
        for checkpoint in analysis.checkpoints:
            key = f"analysis:{analysis.key()}:{checkpoint}"
            if key not in log:
                require_checkpoints(log, ctx.run_dir)
                echo(f"{tag}: analyze {analysis.kind} ({checkpoint})")
                analysis_stage(ctx, index, checkpoint)
                log.mark(key)
    if not run.config.eval.keep_checkpoints and "pruned" not in log:
        shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
        log.mark("pruned")
    echo(f"{tag}: done in {time.perf_counter() - started:.0f}s")


def _write_config(run: PlannedRun, run_dir: Path, study: str) -> None:
    record = {"run_id": run.run_id, "study": study, "label": run.label, "variant": run.variant,
              "config": run.config.resolved()}  # fmt: skip
    atomic.write_json(run_dir / "config.json", record, indent=2, default=str)


def record_failure(store, study: Study, run: PlannedRun, log: StageLog, error: Exception,
                   run_dir: Path, details: str | None = None) -> None:  # fmt: skip
    """A failed run: its traceback (`details` where it happened elsewhere) in its folder's
    error.txt, its status and one-line error in study_runs."""
    details = details or "".join(traceback.format_exception(error))
    atomic.write_text(run_dir / "error.txt", details)
    variant = {**_row_variant(run), "error": one_line(error)}
    store.put_study_run(study.name, _row_id(run, log), variant, "failed")


def _status(store, study: Study, run: PlannedRun, logs: dict[str, StageLog]) -> str:
    rows = {r["run_id"]: r["status"] for r in store.study_runs(study.name)}
    return rows.get(_row_id(run, logs[run.run_id]), "?")


def one_line(error: BaseException) -> str:
    """An error as one line: its message, led by its type unless it is a KnowshiftError."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, KnowshiftError) else f"{type(error).__name__}: {text}"


def _study_analyses(store, study: Study, logs: dict[str, StageLog], echo: Echo) -> None:
    """Run the study's analyses over its done runs. Runs of "I don't know" sets are left out:
    the Unknown examples they fit are refusals, not new facts. An analysis the runs cannot
    support (too few points, collinear shares) is reported, not counted as a failed run."""
    done = [_row_id(run, logs[run.run_id]) for run in study.runs
            if _status(store, study, run, logs) == "done" and not run.config.build.spec.idk]  # fmt: skip
    for kind, confidence in study.study_analyses:
        echo(f"study analysis: {kind} over {len(done)} runs")
        try:
            print(study_regression(store, study.name, done, confidence), flush=True)
        except KnowshiftError as error:
            echo(f"study analysis {kind}: not fitted: {one_line(error)}")


def format_summary(store, study: Study, logs: dict[str, StageLog]) -> str:
    """Per run: status, EARLY_STOP epoch, test accuracy at EARLY_STOP and at the last epoch,
    and the fitted Known / Unknown shares at the last epoch (from the store)."""
    width = max([len("label")] + [len(r.label) for r in study.runs])
    lines = [f"{'label':<{width}}  {'status':<8} {'ES':>3} {'test@ES':>8} {'test@last':>9} "
             f"{'Known fit':>9} {'Unk fit':>8}"]  # fmt: skip
    for run in study.runs:
        records = store.train_records(_row_id(run, logs[run.run_id]))
        cells = ["", "", "", "", ""]
        if records:
            best = max(records, key=lambda r: r["accuracy"].get("dev", -1.0))
            last = records[-1]["accuracy"]
            cells = [f"{best['epoch']:g}", _percent(best["accuracy"], "test"), _percent(last, "test"),
                     _percent(last, "train/Known"), _percent(last, "train/Unknown")]  # fmt: skip
        lines.append(f"{run.label:<{width}}  {_status(store, study, run, logs):<8} {cells[0]:>3} "
                     f"{cells[1]:>8} {cells[2]:>9} {cells[3]:>9} {cells[4]:>8}")  # fmt: skip
    return "\n".join(lines)


def _percent(accuracy: dict, key: str) -> str:
    return f"{100 * accuracy[key]:.1f}%" if key in accuracy else "-"


def study_logs(study: Study, study_dir: str | Path) -> dict[str, StageLog]:
    """The stage logs of a study's runs (for `format_summary` outside a run)."""
    return {run.run_id: StageLog(_run_dir(Path(study_dir), run)) for run in study.runs}
