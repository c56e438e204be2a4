"""A study file -> its runs: the grid's product and the listed variants, each a typed RunConfig
whose id is the hash of its resolved settings.

    study = load_study("configs/unknown-ratio.yaml", scale=2, overrides=["train.epochs=3"])
    for run in study.runs: print(run.run_id, run.label, run.variant)

Runs, in order: every combination of the grid's values (the base alone when there is no grid and
no variant), then every variant. A grid axis is a dotted key and its list of values; a value that
is a mapping sets several keys at once (keys relative to the axis key). A variant is a mapping of
dotted keys (plus an optional `label`). `seeds` (a list, or a count N for 0..N-1) repeats every
one of those runs once per seed, with that seed as its training seed (order, initial adapter)
and its set's seed (the draws that build it). `overrides` (and `--set KEY=VALUE`) apply last, to
every run; a null value removes a base setting (back to its default). `scale` multiplies the sizes
(`SCALED_KEYS`, and the `limit` / `pool` of analyses) towards the published ones.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowshift.digest import json_digest
from knowshift.errors import KnowshiftError, unknown_name
from knowshift.study.analyses import parse_study_analyses
from knowshift.study.sections import SECTIONS, RunConfig, coerce, parse_run, section_keys

TOP_KEYS = ("name", "description", "scale", *SECTIONS, "analyses", "study_analyses", "grid",
            "variants", "seeds", "overrides")  # fmt: skip
SEED_KEYS = ("train.seed", "build.seed")  # what one value of `seeds` sets
SCALED_KEYS = ("probe.limit", "build.size", "build.n_unknown", "train.n_dev", "train.n_test",
               "eval.n_facts")  # fmt: skip
SCALED_ANALYSIS_OPTIONS = ("limit", "pool")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its id (what `study validate` lists and its folder's name), a readable
    label, its variant (the values its grid axes or variant set, dotted key -> value as resolved,
    plus `label` where the file gives one) and its typed settings."""

    run_id: str
    label: str
    variant: dict[str, Any]
    config: RunConfig


@dataclass(frozen=True)
class Study:
    """A parsed study: its runs, the analyses over all of them, and the resolved study file."""

    name: str
    description: str
    scale: float
    runs: tuple[PlannedRun, ...]
    study_analyses: tuple[tuple[str, float], ...]
    document: dict[str, Any]


def load_study(
    path: str | Path, *, scale: float | None = None, overrides: Sequence[str] = ()
) -> Study:
    """Read and validate a study file; `scale` and `overrides` ("train.epochs=3") replace the
    file's own."""
    import yaml

    from knowshift.facts.readers import read_text

    path = Path(path)
    if not path.is_file():
        what = f"{path} is a folder, not a study file" if path.is_dir() else f"no study file {path}"
        raise KnowshiftError(f"{what}; ready studies are in configs/*.yaml")
    text = read_text(path)  # non-UTF-8 bytes: one line naming the line
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KnowshiftError(f"{path} is not valid YAML{_yaml_problem(error)}") from None
    if document is None:
        raise KnowshiftError(f"{path} is empty; a study file maps name:, model:, build:, ...")
    return parse_study(document, default_name=path.stem, scale=scale, overrides=overrides)


def _yaml_problem(error: Exception) -> str:
    """ " at line N: what is wrong" of a YAML error (its marks count lines from 0)."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"{where}: {getattr(error, 'problem', None) or error}"


def parse_study(
    document: Any, *, default_name: str = "study", scale: float | None = None,
    overrides: Sequence[str] = (),
) -> Study:  # fmt: skip
    """Validate a study mapping and expand it into its runs."""
    if not isinstance(document, Mapping):
        raise KnowshiftError("a study file must be a mapping (name:, model:, build:, grid:, ...)")
    for key in document:
        if key not in TOP_KEYS:
            raise unknown_name("study key", str(key), TOP_KEYS)
    document = copy.deepcopy(dict(document))
    document["overrides"] = {**_checked(document.get("overrides"), "overrides"),
                             **parse_overrides(overrides)}  # fmt: skip
    if scale is not None:
        document["scale"] = scale
    scale = coerce(document.get("scale", 1), float, "scale")
    if scale <= 0:
        raise KnowshiftError(f"scale must be above 0 (1: the sizes as written), got {scale}")
    name = coerce(document.setdefault("name", default_name), str, "name")
    if not NAME.match(name):
        raise KnowshiftError(f"name {name!r}: use letters, digits, '-', '_' or '.'")
    runs = [_plan_run(document, parts, settings, scale) for parts, settings in _choices(document)]
    _refuse_duplicates(runs)
    return Study(name, str(document.get("description", "")), scale, tuple(runs),
                 parse_study_analyses(document.get("study_analyses")), document)  # fmt: skip


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (VALUE read as YAML: 3, 0.5, [a, b], null) as a checked mapping."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise KnowshiftError(f"--set {item!r}: write KEY=VALUE, e.g. --set train.epochs=3")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = _yaml_problem(error).removeprefix(" at line 1")
            raise KnowshiftError(
                f"--set {item!r}: the value is not valid YAML{problem}; quote text values, "
                "write lists as [a, b]"
            ) from None
    return _checked(parsed, "--set")


def run_id_of(config: RunConfig) -> str:
    """A run's id: the hash of the resolved settings that decide its fine-tuned model."""
    return json_digest(config.identity())


# A run's label: per grid axis (or variant) its explicit label, or None to name its keys' values.
LabelParts = list[tuple[str | None, tuple[str, ...]]]


def _choices(document: Mapping[str, Any]) -> list[tuple[LabelParts, dict[str, Any]]]:
    """(label parts, dotted settings) of every run, in order."""
    grid = document.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise KnowshiftError(
            "grid must map dotted keys to lists, e.g. grid: {build.size: [60, 240]}"
        )
    axes = [_axis(str(key), values) for key, values in grid.items()]
    choices = []
    for combination in itertools.product(*axes):
        parts = [(label, tuple(part)) for label, part in combination]
        choices.append((parts, {k: v for _, part in combination for k, v in part.items()}))
    variants = document.get("variants") or []
    if not isinstance(variants, list):
        raise KnowshiftError(
            "variants must be a list of mappings, e.g. - {build.recipe: known-only}"
        )
    if variants and not axes:
        choices = []  # only the variants: the base config is not a run of its own
    for i, variant in enumerate(variants):
        if not isinstance(variant, Mapping):
            raise KnowshiftError(f"variants[{i}] must be a mapping of dotted keys to values")
        settings = _checked({k: v for k, v in variant.items() if k != "label"}, f"variants[{i}]")
        label = variant.get("label")
        choices.append(([(str(label) if label else None, tuple(settings))], settings))
    seeds = _seeds(document.get("seeds"))
    if seeds is None:
        return choices
    # Seed by seed: a study stopped part-way holds whole seeds (every condition), not a few
    # conditions with every seed.
    return [([*parts, (f"seed={seed}", SEED_KEYS)], {**settings, **dict.fromkeys(SEED_KEYS, seed)})
            for seed in seeds for parts, settings in choices]  # fmt: skip


def _seeds(value: Any) -> list[int] | None:
    """The study's `seeds`: None (no seed axis), a count N (seeds 0..N-1) or a list of seeds."""
    if value is None:
        return None
    hint = "write seeds: 3 (seeds 0, 1, 2) or seeds: [0, 1, 2]"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise KnowshiftError(f"seeds must be at least 1, got {value}; {hint}")
        return list(range(value))
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):  # fmt: skip
        raise KnowshiftError(f"seeds must be a count or a non-empty list of integers; {hint}")
    if len(set(value)) != len(value):
        raise KnowshiftError(f"seeds {value} repeat a seed; each seed once")
    return list(value)


def _axis(key: str, values: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """A grid axis as (explicit label or None, settings) per value."""
    if not isinstance(values, list) or not values:
        raise KnowshiftError(f"grid.{key} must be a non-empty list, e.g. grid: {{{key}: [a, b]}}")
    axis = []
    for i, value in enumerate(values):
        if isinstance(value, Mapping):
            settings = {f"{key}.{k}": v for k, v in value.items() if k != "label"}
            label = value.get("label")
            axis.append((str(label) if label else None, _checked(settings, f"grid.{key}[{i}]")))
        else:
            axis.append((None, _checked({key: value}, "grid")))
    return axis


def _checked(settings: Any, where: str) -> dict[str, Any]:
    """Dotted settings whose keys name a section's key (else an error with the valid keys)."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise KnowshiftError(f"{where} must map dotted keys to values, e.g. train.epochs: 3")
    for key in settings:
        section, _, name = str(key).partition(".")
        if section not in SECTIONS:
            raise unknown_name(f"section in {where} key {key!r}", section, SECTIONS)
        valid = section_keys(section)
        if name not in valid:
            raise unknown_name(f"{where} key", str(key), [f"{section}.{k}" for k in valid])
    return dict(settings)


def _plan_run(
    document: Mapping[str, Any], parts: LabelParts, settings: Mapping[str, Any], scale: float
) -> PlannedRun:
    run = {key: copy.deepcopy(document.get(key)) for key in (*SECTIONS, "analyses")}
    for key, value in {**settings, **document["overrides"]}.items():
        section, _, name = key.partition(".")
        values = run[section] = dict(run[section] or {})
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    _scale(run, scale)
    raw = {key: (run[key.split(".")[0]] or {}).get(key.split(".", 1)[1]) for key in settings}
    named = [label or ", ".join(f"{k.split('.', 1)[1]}={raw[k]}" for k in keys)
             for label, keys in parts]  # fmt: skip
    label = ", ".join(n for n in named if n) or "base"
    try:
        config = parse_run(run)
    except KnowshiftError as error:
        raise KnowshiftError(f"run {label!r}: {error}") from None
    resolved = config.resolved()  # the values as typed and defaulted (0 -> 0.0, null -> default)
    variant = {key: resolved[key.split(".")[0]].get(key.split(".", 1)[1]) for key in settings}
    if any(explicit for explicit, _ in parts):
        variant["label"] = label
    return PlannedRun(run_id_of(config), label, variant, config)


def _scale(run: dict[str, Any], scale: float) -> None:
    """Multiply the sizes a run gives by `scale` (at least 1 each)."""
    if scale == 1:
        return

    def scaled(value: Any) -> Any:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return max(1, round(value * scale)) if ok else value

    for key in SCALED_KEYS:
        section, name = key.split(".")
        if isinstance(run[section], Mapping) and name in run[section]:
            run[section] = {**run[section], name: scaled(run[section][name])}
    if isinstance(run["analyses"], list):
        run["analyses"] = [
            {k: scaled(v) if k in SCALED_ANALYSIS_OPTIONS else v for k, v in item.items()}
            if isinstance(item, Mapping) else item
            for item in run["analyses"]
        ]  # fmt: skip


def _refuse_duplicates(runs: Sequence[PlannedRun]) -> None:
    seen: dict[str, str] = {}
    for run in runs:
        if run.run_id in seen:
            raise KnowshiftError(f"runs {seen[run.run_id]!r} and {run.label!r} have the same "
                                 f"settings (run id {run.run_id}); drop one of them")  # fmt: skip
        seen[run.run_id] = run.label


def format_plan(study: Study) -> str:
    """The expanded study: its runs (id, label, recipe, training) and analyses."""
    lines = [f"study {study.name}: {len(study.runs)} runs (scale {study.scale:g})"]
    if study.description:
        lines.append(f"  {study.description}")
    width = max([len("label")] + [len(r.label) for r in study.runs])
    lines.append(f"{'#':>3}  {'run id':<16}  {'label':<{width}}  {'recipe':<24} {'train'}")
    for i, run in enumerate(study.runs, 1):
        c = run.config
        size = getattr(c.build.spec, "size", None) or getattr(c.build.spec, "n_unknown", None)
        recipe = f"{c.build.recipe}" + (f" ({size})" if size else "")
        train = f"{c.train.config.method}, {c.train.config.epochs} epochs, lr {c.train.config.lr:g}"
        lines.append(f"{i:>3}  {run.run_id:<16}  {run.label:<{width}}  {recipe:<24} {train}")
    analyses = sorted({f"{a.kind} ({', '.join(a.checkpoints)})" for r in study.runs
                       for a in r.config.analyses})  # fmt: skip
    lines.append(f"after each run: eval ({', '.join(study.runs[0].config.eval.checkpoints)})"
                 + "".join(f", {a}" for a in analyses))  # fmt: skip
    if study.study_analyses:
        lines.append(f"after the study: {', '.join(k for k, _ in study.study_analyses)}")
    return "\n".join(lines)
