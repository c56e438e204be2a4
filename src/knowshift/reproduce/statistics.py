"""The statistics of the nine findings, finding by finding: each turns a study's data
(reproduce.data.StudyData: its done runs and what they stored) into the resampling groups and
the statistic the bootstrap draws (PREPARE, by finding id)."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from knowshift.errors import KnowshiftError
from knowshift.reproduce.findings import (
    REFUSAL_FLOOR,
    get_finding,
)
from knowshift.reproduce.stored import (
    NAN,
    FactGroup,
    Prepared,
    RunGroup,
    StudyRun,
    fact_scores,
    is_idk,
)

SINGLE_CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
INTERVENTION_GROUPS = ("harmonious", "incompatible", "self-aligning")


# --- the statistics, finding by finding ----------------------------------------------------------


def _nanmean(values, axis=None):
    with warnings.catch_warnings():  # an all-NaN slice is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(values, dtype=float), axis=axis)


def _seed_means(groups: Sequence[RunGroup]) -> tuple[float, ...]:
    """Per part: the mean over a seed's runs, then over seeds (NaN values left out)."""
    per_seed = [_nanmean(np.asarray(g.values, dtype=float), axis=0) for g in groups]
    return tuple(float(v) for v in _nanmean(per_seed, axis=0))


def _run_groups(by_seed: Mapping[int, list]) -> list[RunGroup]:
    return [RunGroup(seed, tuple(values)) for seed, values in sorted(by_seed.items()) if values]


def _runs_prepared(by_seed: Mapping[int, list], statistic, **extra) -> Prepared:
    n_runs = sum(len(values) for values in by_seed.values())
    return Prepared(_run_groups(by_seed), statistic, n_runs, "seeds > runs", **extra)


def _facts_prepared(data, runs: Sequence[StudyRun], rows_of, statistic) -> Prepared:
    """Per seed, the evaluations `rows_of(run)` names: (row key, checkpoint, metric, subset)."""
    by_seed: dict[int, list] = defaultdict(list)
    used, n_summaries = set(), 0
    for run in runs:
        for key, checkpoint, metric, subset in rows_of(run):
            scores = fact_scores(data.evaluation(run.run_id, checkpoint), metric, subset)
            if scores is not None:
                by_seed[run.seed].append((key, scores))
                used.add(run.run_id)
                n_summaries += not isinstance(scores, dict)
    groups = [_fact_rows(seed, rows) for seed, rows in sorted(by_seed.items())]
    n_rows = sum(len(rows) for rows in by_seed.values())
    resampled = "seeds > facts" if not n_summaries else (
        f"seeds > facts; {n_summaries} of {n_rows} evaluations had only a stored summary, "
        "whose facts are not resampled")  # fmt: skip
    return Prepared(groups, statistic, len(used), resampled)


def _fact_rows(seed: int, rows: list[tuple[Any, dict[str, float] | float]]) -> FactGroup:
    """A seed's rows over the union of their facts (one draw of facts serves them all)."""
    facts = sorted({f for _, scores in rows if isinstance(scores, dict) for f in scores}) or ["-"]
    index = {fact: j for j, fact in enumerate(facts)}
    values, mask = np.zeros((len(rows), len(facts))), np.zeros((len(rows), len(facts)))
    for r, (_, scores) in enumerate(rows):
        if isinstance(scores, dict):
            for fact, value in scores.items():
                values[r, index[fact]], mask[r, index[fact]] = value, 1.0
        else:
            values[r], mask[r] = scores, 1.0
    return FactGroup(seed, tuple(key for key, _ in rows), values, mask, np.ones(len(facts)))


def _means(groups: Sequence[FactGroup]) -> dict[Any, float]:
    """Mean accuracy (points) per row key over every row of the drawn seeds."""
    grouped: dict[Any, list[float]] = defaultdict(list)
    for group in groups:
        for key, value in group.accuracies():
            if not math.isnan(value):
                grouped[key].append(value)
    return {key: float(np.mean(values)) for key, values in grouped.items()}


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y on x; NaN with fewer than two distinct x."""
    x, y = np.asarray([p[0] for p in points]), np.asarray([p[1] for p in points])
    if len(set(x.tolist())) < 2:
        return NAN
    dx = x - x.mean()
    return float(dx @ (y - y.mean()) / (dx @ dx))


def _f1_fit_gap(data, runs: Sequence[StudyRun]) -> Prepared:
    by_seed: dict[int, list] = defaultdict(list)
    for run in (r for r in runs if not is_idk(r)):
        gaps = [a["train/Known"] - a["train/Unknown"] for a in
                (record["accuracy"] for record in data.train_records(run.run_id))
                if "train/Known" in a and "train/Unknown" in a]  # fmt: skip
        if gaps:
            by_seed[run.seed].append((100 * float(np.mean(gaps)),))
    return _runs_prepared(by_seed, _seed_means)


def _f2_unknown_slopes(data, runs: Sequence[StudyRun]) -> Prepared:
    def rows(run):
        frac = run.variant.get("build.frac_unknown")
        if frac is None or is_idk(run):
            return []
        return [((checkpoint, float(frac)), checkpoint, "exact", "in")
                for checkpoint in ("early_stop", "last")]  # fmt: skip

    def statistic(groups):
        points = defaultdict(list)
        for group in groups:
            for (checkpoint, frac), value in group.accuracies():
                if not math.isnan(value):
                    points[checkpoint].append((frac, value))
        converged = _slope(points["last"])
        return converged, converged - _slope(points["early_stop"])

    return _facts_prepared(data, runs, rows, statistic)


def _f3_regression(data, runs: Sequence[StudyRun]) -> Prepared:
    from knowshift.analysis.regression import regression_points

    by_seed: dict[int, list] = defaultdict(list)
    for run in (r for r in runs if not is_idk(r)):
        try:
            points = regression_points(data, [run.run_id])
        except KnowshiftError:  # no group sizes: it cannot say what was fitted
            continue
        rows = [(p.known_fitted, p.unknown_fitted, p.accuracy.get("in", p.accuracy.get("all")))
                for p in points]  # fmt: skip
        rows = [row for row in rows if row[2] is not None]
        if rows:
            by_seed[run.seed].append(np.asarray(rows, dtype=float))

    def statistic(groups):
        points = np.vstack([run for group in groups for run in group.values])
        design = np.column_stack([np.ones(len(points)), points[:, 0], points[:, 1]])
        if len(points) <= 3 or np.linalg.matrix_rank(design) < 3:  # too few, or collinear
            return NAN, NAN
        beta = np.linalg.lstsq(design, points[:, 2], rcond=None)[0]
        return float(beta[1]), float(beta[2])

    return _runs_prepared(by_seed, statistic)


def _f4_categories(data, runs: Sequence[StudyRun]) -> Prepared:
    def rows(run):
        category = run.variant.get("build.category")
        return [(category, "last", "exact", "in")] if category in SINGLE_CATEGORIES else []

    def statistic(groups):
        means = _means(groups)
        if any(c not in means for c in SINGLE_CATEGORIES):
            return NAN, NAN
        others = {c: [means[o] for o in SINGLE_CATEGORIES if o != c] for c in SINGLE_CATEGORIES}
        return (means["MaybeKnown"] - max(others["MaybeKnown"]),
                means["Unknown"] - min(others["Unknown"]))  # fmt: skip

    return _facts_prepared(data, runs, rows, statistic)


def _f5_idk(data, runs: Sequence[StudyRun]) -> Prepared:
    def rows(run):
        frac = run.variant.get("build.frac_unknown")
        if is_idk(run):
            return [("idk", "last", "exact", "in-answered")]
        if frac is not None and math.isclose(float(frac), 0.5):
            return [("plain", "last", "exact", "in-answered")]
        return []

    def statistic(groups):
        means = _means(groups)
        return (means["idk"] - means["plain"] if "idk" in means and "plain" in means else NAN,)

    return _facts_prepared(data, runs, rows, statistic)


def _set_size(run: StudyRun) -> int | None:
    size = run.variant.get("build.size")
    size = (run.config.get("group_sizes") or {}).get("train") if size is None else size
    return None if size is None else int(size)


def _f6_size_mastery(data, runs: Sequence[StudyRun]) -> Prepared:
    sizes = sorted({_set_size(r) for r in runs if r.variant.get("build.mastery_level") is not None} - {None})  # fmt: skip

    def rows(run):
        level = run.variant.get("build.mastery_level")
        if level is None or _set_size(run) is None:
            return []
        return [((_set_size(run), int(level)), "last", "contains", "in")]

    def statistic(groups):
        if len(sizes) < 2:
            return NAN, NAN
        means, small, large = _means(groups), sizes[0], sizes[-1]
        levels = sorted({level for _, level in means})
        gaps = [means[small, v] - means[large, v] for v in levels
                if (small, v) in means and (large, v) in means]  # fmt: skip
        higher = [means[large, v] for v in levels if v >= 1 and (large, v) in means]
        mastery = (
            float(np.mean(higher)) - means[large, 0] if higher and (large, 0) in means else NAN
        )
        return (float(np.mean(gaps)) if gaps else NAN), mastery

    return _facts_prepared(data, runs, rows, statistic)


def _restoration_gain(data, run_id: str) -> float | None:
    """Mean of the top-20% and top-40% restored accuracies minus the unrestored one (points)."""
    result = data.analysis("restore-sweep", f"{run_id}:last") or {}

    def accuracy(fraction: float) -> float | None:
        for point in result.get("points", []):
            if point.get("mode") == "top" and math.isclose(point.get("fraction", -1), fraction, abs_tol=1e-9):  # fmt: skip
                metrics = point.get("metrics") or {}
                value = metrics.get("distribution/in", metrics.get("accuracy"))
                return None if value is None else float(value)
        return None

    unrestored, top20, top40 = accuracy(0.0), accuracy(0.2), accuracy(0.4)
    if None in (unrestored, top20, top40):
        return None
    return 100 * ((top20 + top40) / 2 - unrestored)


def _f7_restoration(data, runs: Sequence[StudyRun]) -> Prepared:
    sizes = [s for s in (_set_size(r) for r in runs) if s is not None]
    by_seed: dict[int, list] = defaultdict(list)
    for run in runs:
        gain = (
            _restoration_gain(data, run.run_id) if sizes and _set_size(run) == max(sizes) else None
        )
        if gain is not None:
            by_seed[run.seed].append((gain,))
    return _runs_prepared(by_seed, _seed_means)


def _f8_intervention(data, runs: Sequence[StudyRun]) -> Prepared:
    def rows(run):
        group = run.variant.get("build.group")
        return [(group, "last", "exact", "all")] if group in INTERVENTION_GROUPS else []

    def statistic(groups):
        means = _means(groups)
        incompatible = means.get("incompatible", NAN)
        return (means.get("harmonious", NAN) - incompatible,
                means.get("self-aligning", NAN) - incompatible)  # fmt: skip

    return _facts_prepared(data, runs, rows, statistic)


def _f9_packing(data, runs: Sequence[StudyRun]) -> Prepared:
    by_seed: dict[int, list] = defaultdict(list)
    refused_before = []
    for run in runs:
        shift = data.analysis("shift", f"{run.run_id}:last")
        collapse = data.analysis("collapse", f"{run.run_id}:last")
        if shift is None and collapse is None:
            continue
        shifts = 100 * (shift["negative_share"] - shift["positive_share"]) if shift else NAN
        distinct = refusals = NAN
        if collapse:
            before, after = collapse["before"], collapse["after"]
            distinct = after["n_distinct"] - before["n_distinct"]
            refusals = 100 * (after["refusal_rate"] - before["refusal_rate"])
            refused_before.append(before["refusal_rate"])
        by_seed[run.seed].append((shifts, distinct, refusals))
    ruled_out = {}
    if refused_before and max(refused_before) < REFUSAL_FLOOR:
        ruled_out[get_finding("F9").parts[2].name] = (
            f"inconclusive by rule: the base model refused at most {100 * max(refused_before):.1f}% "
            f"of the questions (under {REFUSAL_FLOOR:.0%}), so there were no refusals to vanish")  # fmt: skip
    return _runs_prepared(by_seed, _seed_means, ruled_out=ruled_out)


PREPARE: dict[str, Callable[[Any, Sequence[StudyRun]], Prepared]] = {
    "F1": _f1_fit_gap, "F2": _f2_unknown_slopes, "F3": _f3_regression, "F4": _f4_categories,
    "F5": _f5_idk, "F6": _f6_size_mastery, "F7": _f7_restoration, "F8": _f8_intervention,
    "F9": _f9_packing,
}  # fmt: skip
