"""The analyses a study runs: those of `knowshift analyze`, after each run and after the study.

A run's analysis is the `knowshift analyze KIND` command itself, called in-process on the run
folder: the study's options are its flags (`limit: 200` is `--limit 200`), so both take the same
names, defaults and checks, and store the same records (subject "<train run id>:<checkpoint>").
Validation parses the options with that command's parser, which imports no torch.

The study's own analyses read only the store: `regression` fits test accuracy on the fitted
Known and Unknown shares over every (run, epoch) of the study (METHODS B), subject the study name.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError, unknown_name

# Options the study sets itself, from the run: not for a study file to give.
SET_BY_STUDY = ("run", "base", "tuned", "adapter", "checkpoint", "data", "facts", "workspace",
                "device", "help")  # fmt: skip
STUDY_ANALYSES = ("regression",)


class _RaisingParser(argparse.ArgumentParser):
    """argparse whose usage errors raise (a study reports them as its own errors)."""

    def error(self, message: str):
        raise KnowshiftError(message)


@functools.cache
def _analyze_parser() -> argparse.ArgumentParser:
    """A parser of `knowshift analyze ...` alone (its sub-parsers raise like their parent)."""
    from knowshift.cli import analyze as cli_analyze

    parser = _RaisingParser(prog="knowshift")
    cli_analyze.add_commands(parser.add_subparsers(dest="command"))
    return parser


def _analysis_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of every `knowshift analyze KIND` a run can have, by kind."""
    commands = next(
        a for a in _analyze_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    analyze = commands.choices["analyze"]
    kinds = next(a for a in analyze._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub for name, sub in kinds.choices.items() if name not in STUDY_ANALYSES}


def run_analysis_kinds() -> list[str]:
    """The analyses a study can run after each run."""
    return sorted(_analysis_parsers())


def _options(kind: str) -> dict[str, argparse.Action]:
    parser = _analysis_parsers()[kind]
    return {a.dest: a for a in parser._actions if a.dest not in SET_BY_STUDY and a.option_strings}


def check_run_analysis(kind: str, options: Mapping[str, Any], where: str) -> None:
    """Raise unless `kind` is an analysis and `options` are valid options of it."""
    if kind not in _analysis_parsers():
        hint = " (regression is a study analysis: list it under study_analyses)"
        error = unknown_name(f"analysis kind in {where}", kind, run_analysis_kinds())
        raise KnowshiftError(f"{error}{hint if kind in STUDY_ANALYSES else ''}")
    valid = _options(kind)
    for name in options:
        if name in SET_BY_STUDY:
            raise KnowshiftError(f"{where}.{name}: the study sets --{name} itself; drop it")
        if name not in valid:
            raise unknown_name(f"option of analysis {kind} in {where}", name, valid)
    try:
        _parse(kind, options, run_dir="RUN", checkpoint="last", workspace="WS")
    except KnowshiftError as error:
        raise KnowshiftError(f"{where} ({kind}): {error}") from None


def _parse(kind: str, options: Mapping[str, Any], *, run_dir: str, checkpoint: str,
           workspace: str, device: str = "auto") -> argparse.Namespace:  # fmt: skip
    argv = ["analyze", kind, "--run", run_dir, "--checkpoint", checkpoint,
            "--workspace", workspace, "--device", device]  # fmt: skip
    actions = _options(kind)
    for name, value in options.items():
        flag = actions[name].option_strings[-1]
        if isinstance(value, bool):
            if value != bool(actions[name].default):
                argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *(str(v) for v in value)]
        elif value is not None:
            argv += [flag, str(value)]
    return _analyze_parser().parse_args(argv)


def run_analysis(kind: str, options: Mapping[str, Any], run_dir: Path, checkpoint: str,
                 workspace: Path, device: str) -> None:  # fmt: skip
    """Run `knowshift analyze KIND` on a run folder; it prints its table and stores its result."""
    args = _parse(kind, options, run_dir=str(run_dir), checkpoint=checkpoint,
                  workspace=str(workspace), device=device)  # fmt: skip
    args.handler(args)


def parse_study_analyses(items: Any) -> tuple[tuple[str, float], ...]:
    """`study_analyses: [regression]` or `[{kind: regression, confidence: 0.9}]` as (kind,
    confidence) pairs."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise KnowshiftError(f"study_analyses must be a list, e.g. [regression]; got {items!r}")
    parsed = []
    for i, item in enumerate(items):
        item = {"kind": item} if isinstance(item, str) else item
        if not isinstance(item, Mapping) or "kind" not in item:
            raise KnowshiftError(f"study_analyses[{i}] must be a name or {{kind: ..., ...}}")
        if item["kind"] not in STUDY_ANALYSES:
            raise unknown_name(
                f"study analysis in study_analyses[{i}]", str(item["kind"]), STUDY_ANALYSES
            )
        extra = set(item) - {"kind", "confidence"}
        if extra:
            raise unknown_name(
                f"key in study_analyses[{i}]", sorted(extra)[0], ["kind", "confidence"]
            )
        confidence = item.get("confidence", 0.95)
        if not isinstance(confidence, int | float) or not 0 < confidence < 1:
            raise KnowshiftError(
                f"study_analyses[{i}].confidence must be between 0 and 1 (e.g. 0.95)"
            )
        parsed.append((item["kind"], float(confidence)))
    return tuple(parsed)


def study_regression(store, study: str, run_ids: Sequence[str], confidence: float) -> str:
    """Fit the study's regression over its runs' epochs, store it (subject: the study name) and
    return its table."""
    from knowshift.analysis.regression import fit_regression, format_regression, regression_points

    if not run_ids:  # regression_points would take every run of the workspace
        raise KnowshiftError("no finished run to fit")
    result = fit_regression(regression_points(store, list(run_ids)), confidence)
    params = {"study": study, "runs": list(result.runs), "confidence": confidence}
    store.put_analysis("regression", study, params, asdict(result))
    return format_regression(result)
