"""Verdicts: each finding's statistic from a study's stored results, its 95% interval, and the
one rule (findings.RULE) that turns the interval into reproduced, not reproduced or
inconclusive.

    with Store.for_workspace("workspace/unknown-ratio") as store:
        for v in study_verdicts(store):
            print(v.finding_id, v.verdict, v.reason)

Only a study's done runs count. A run's seed is its variant's "train.seed" (the study's seed
axis), else its config's train seed. Per-fact correctness comes from the run folder's
predictions/<checkpoint>.jsonl, written by the eval stage (runs/<folder>/ beside the study's
knowshift.db, else the run's recorded out_dir); an evaluation whose file is gone falls back to
the store's "eval" summary, a constant that the bootstrap cannot resample (the verdict's
`resampled` says how many). Everything else is read from the store alone.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from knowshift.errors import KnowshiftError
from knowshift.reproduce.findings import (
    CONFIDENCE,
    FINDINGS,
    INCONCLUSIVE,
    MIN_SEEDS,
    N_DRAWS,
    NOT_REPRODUCED,
    REFUSAL_FLOOR,
    REPRODUCED,
    RNG_SEED,
    Finding,
    get_finding,
)

NAN = float("nan")
SINGLE_CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
INTERVENTION_GROUPS = ("harmonious", "incompatible", "self-aligning")


@dataclass(frozen=True)
class Verdict:
    """A finding decided: per part its estimate, interval and outcome (None where it cannot be
    computed), the seeds and runs behind it, the overall verdict and why, and what was
    resampled."""

    finding_id: str
    statistics: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None]
    part_verdicts: dict[str, str]
    n_seeds: int
    n_runs: int
    verdict: str
    reason: str
    resampled: str


def format_number(value: float | None) -> str:
    """A statistic as text: 2 decimals with a sign, no "-0.00"; "n/a" for None or NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{round(value, 2) + 0.0:+.2f}"


# --- what a study stored -------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRun:
    """A done run of a study: its grid values, seed, stored config and run folder (if found)."""

    run_id: str
    variant: Mapping[str, Any]
    seed: int
    config: Mapping[str, Any]
    folder: Path | None


def done_runs(store, study: str) -> list[StudyRun]:
    """The study's done runs, in the order they were recorded."""
    runs = []
    for row in store.study_runs(study):
        if row["status"] != "done":
            continue
        config, variant = store.run_config(row["run_id"]) or {}, row["variant"]
        seed = variant.get("train.seed")
        seed = (config.get("train") or {}).get("seed") if seed is None else seed
        folders = (
            [store.path.parent / "runs" / str(variant["folder"])] if variant.get("folder") else []
        )
        folders += [Path(config["out_dir"])] if config.get("out_dir") else []
        folder = next((f for f in folders if f.is_dir()), None)
        runs.append(StudyRun(row["run_id"], variant, int(seed or 0), config, folder))
    return runs


def _is_idk(run: StudyRun) -> bool:
    """A run of an "I don't know" set (its Unknown examples answer a refusal)."""
    recipe = str(run.variant.get("build.recipe") or "")
    sizes = run.config.get("group_sizes") or {}
    return recipe.startswith("idk:") or bool(run.variant.get("build.idk")) or sizes.get("train/kind/idk", 0) > 0  # fmt: skip


def _evaluation(store, run: StudyRun, checkpoint: str) -> list[dict] | dict | None:
    """A checkpoint's per-fact predictions, else its stored "eval" summary, else None."""
    if run.folder is not None:
        path = run.folder / "predictions" / f"{checkpoint}.jsonl"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
    return _latest(store, "eval", f"{run.run_id}:{checkpoint}")


def _latest(store, kind: str, subject: str) -> dict | None:
    stored = store.analyses(kind, subject)
    return stored[-1]["result"] if stored else None


# Which test facts a score counts: all, in distribution, in distribution and not refused.
_KEEP = {"all": lambda p: True, "in": lambda p: p.get("in_distribution", True),
         "in-answered": lambda p: p.get("in_distribution", True) and not p.get("refused")}  # fmt: skip


def _scores(evaluation, metric: str, subset: str) -> dict[str, float] | float | None:
    """Per fact of the subset, 1.0 if `metric` ("exact", "contains") holds; from a stored
    summary, the subset's accuracy alone; None where neither can say."""
    if evaluation is None:
        return None
    if isinstance(evaluation, list):
        keep = _KEEP[subset]
        return {p["fact_id"]: float(bool(p[metric])) for p in evaluation if keep(p)}
    kind, name = ("all", "all") if subset == "all" else ("distribution", "in")
    breakdown = (evaluation.get(kind) or {}).get(name) or {}
    if subset == "in-answered":
        value = breakdown.get("answered_exact") if metric == "exact" else None
    else:
        value = breakdown.get(metric)
    return None if value is None else float(value)


# --- the two resampling units of the bootstrap ---------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """One seed's evaluations as rows over the seed's test facts (weights: how often each fact
    is drawn). A stored summary is a constant row, which resampling leaves unchanged."""

    seed: int
    keys: tuple[Any, ...]
    values: np.ndarray  # rows x facts: 1.0 correct, 0.0 wrong or outside the row's subset
    mask: np.ndarray  # rows x facts: 1.0 where the fact counts in the row
    weights: np.ndarray

    def resample(self, rng: np.random.Generator) -> _Facts:
        n = len(self.weights)
        return replace(self, weights=np.bincount(rng.integers(0, n, n), minlength=n).astype(float))

    def accuracies(self) -> list[tuple[Any, float]]:
        """(row key, accuracy in points; NaN for a row none of whose facts were drawn)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = 100 * (self.values @ self.weights) / (self.mask @ self.weights)
        return list(zip(self.keys, accuracy.tolist(), strict=True))


@dataclass(frozen=True)
class _Runs:
    """One seed's per-run values (tuples, one number per part)."""

    seed: int
    values: tuple[tuple[float, ...], ...]

    def resample(self, rng: np.random.Generator) -> _Runs:
        n = len(self.values)
        return replace(self, values=tuple(self.values[i] for i in rng.integers(0, n, n)))


@dataclass(frozen=True)
class _Prepared:
    """A finding's data by seed, its statistic (NaN where not computable), runs used, what is
    resampled, and parts ruled inconclusive before looking at intervals (part -> why)."""

    groups: list
    statistic: Callable[[Sequence], tuple[float, ...]]
    n_runs: int
    resampled: str
    ruled_out: dict[str, str] = field(default_factory=dict)


def bootstrap(groups: Sequence, statistic: Callable[[Sequence], tuple[float, ...]],
              n_draws: int = N_DRAWS, rng_seed: int = RNG_SEED) -> np.ndarray:  # fmt: skip
    """(n_draws, parts) statistics of resampled data: seeds drawn with replacement, then each
    drawn seed's own resample (its facts, or its runs). Fixed `rng_seed`: the same draws."""
    rng = np.random.default_rng(rng_seed)
    n = len(groups)
    draws = [statistic([groups[i].resample(rng) for i in rng.integers(0, n, n)])
             for _ in range(n_draws)]  # fmt: skip
    return np.asarray(draws, dtype=float).reshape(n_draws, -1)


def percentile_interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of one part's draws, bounds taken as order statistics rounded
    outward. A draw that could not be computed (NaN) counts against the verdict: below every
    other draw for the lower bound, above for the upper."""
    tail = (1 - confidence) / 2
    low = np.quantile(np.where(np.isnan(draws), -np.inf, draws), tail, method="lower")
    high = np.quantile(np.where(np.isnan(draws), np.inf, draws), 1 - tail, method="higher")
    return float(low), float(high)


def decide(sign: int, estimate: float, interval: tuple[float, float]) -> tuple[str, str]:
    """The rule for one part whose published side of 0 is `sign` (+1 above, -1 below)."""
    if math.isnan(estimate):
        return INCONCLUSIVE, "cannot be computed from these runs"
    low, high = interval
    text = f"{CONFIDENCE:.0%} CI [{format_number(low)}, {format_number(high)}]"
    if (low > 0) if sign > 0 else (high < 0):
        return REPRODUCED, f"{text} lies on the published side of 0"
    if (high <= 0) if sign > 0 else (low >= 0):
        return NOT_REPRODUCED, f"{text} lies on the other side of 0"
    return INCONCLUSIVE, f"{text} contains 0"


# --- verdicts ------------------------------------------------------------------------------------


def verdict(store, finding: Finding | str, *, study: str | None = None, n_draws: int = N_DRAWS,
            rng_seed: int = RNG_SEED) -> Verdict:  # fmt: skip
    """Decide `finding` from the done runs of its study (or `study`, another name) in `store`."""
    finding = get_finding(finding) if isinstance(finding, str) else finding
    study = study or finding.study
    prepared = _PREPARE[finding.id](store, done_runs(store, study))
    names = [part.name for part in finding.parts]
    if not prepared.groups:
        why = f"no usable done runs of study {study!r} in this store (see what it reads)"
        return Verdict(finding.id, dict.fromkeys(names), dict.fromkeys(names),
                       dict.fromkeys(names, INCONCLUSIVE), 0, 0, INCONCLUSIVE, why,
                       prepared.resampled)  # fmt: skip
    # 1. The statistic on the data as it is, and on n_draws resamples of it.
    estimates = prepared.statistic(prepared.groups)
    draws = bootstrap(prepared.groups, prepared.statistic, n_draws, rng_seed)
    # 2. The rule, part by part.
    statistics, intervals, outcomes, reasons = {}, {}, {}, []
    for j, part in enumerate(finding.parts):
        estimate, interval = float(estimates[j]), percentile_interval(draws[:, j])
        outcome, why = decide(part.sign, estimate, interval)
        failed = int(np.isnan(draws[:, j]).sum())
        if failed and not math.isnan(estimate):
            why += f" ({failed} of {n_draws} draws not computable)"
        if part.name in prepared.ruled_out:
            outcome, why = INCONCLUSIVE, prepared.ruled_out[part.name]
        computed = not math.isnan(estimate)
        statistics[part.name] = estimate if computed else None
        intervals[part.name] = interval if computed else None
        outcomes[part.name] = outcome
        reasons.append(f"{part.name}: {why}")
    # 3. The finding: every part must hold, on enough seeds.
    n_seeds = len(prepared.groups)
    if n_seeds < MIN_SEEDS:
        outcomes = dict.fromkeys(outcomes, INCONCLUSIVE)
        reasons.insert(0, f"{n_seeds} seed with usable runs: the rule needs at least {MIN_SEEDS}")
    values = set(outcomes.values())
    overall = (REPRODUCED if values == {REPRODUCED}
               else NOT_REPRODUCED if NOT_REPRODUCED in values else INCONCLUSIVE)  # fmt: skip
    return Verdict(finding.id, statistics, intervals, outcomes, n_seeds, prepared.n_runs, overall,
                   "; ".join(reasons), prepared.resampled)  # fmt: skip


def study_verdicts(store, *, n_draws: int = N_DRAWS, rng_seed: int = RNG_SEED) -> list[Verdict]:
    """The verdict of every finding whose study has runs in `store`, in the findings' order."""
    studies = {row["study"] for row in store.study_runs()}
    return [verdict(store, f, n_draws=n_draws, rng_seed=rng_seed)
            for f in FINDINGS if f.study in studies]  # fmt: skip


def all_verdicts(stores: Sequence, *, n_draws: int = N_DRAWS, rng_seed: int = RNG_SEED) -> list[Verdict]:  # fmt: skip
    """All nine verdicts from the study stores (one per study folder): each finding is decided
    in the first store holding its study; one no store holds is inconclusive, saying so."""
    found = []
    for f in FINDINGS:
        store = next((s for s in stores if s.study_runs(f.study)), None)
        if store is not None:
            found.append(verdict(store, f, n_draws=n_draws, rng_seed=rng_seed))
            continue
        names = [p.name for p in f.parts]
        found.append(Verdict(f.id, dict.fromkeys(names), dict.fromkeys(names),
                             dict.fromkeys(names, INCONCLUSIVE), 0, 0, INCONCLUSIVE,
                             f"study {f.study!r} was not run (no store holds it)", "nothing"))  # fmt: skip
    return found


# --- the statistics, finding by finding ----------------------------------------------------------


def _nanmean(values, axis=None):
    with warnings.catch_warnings():  # an all-NaN slice is NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(values, dtype=float), axis=axis)


def _seed_means(groups: Sequence[_Runs]) -> tuple[float, ...]:
    """Per part: the mean over a seed's runs, then over seeds (NaN values left out)."""
    per_seed = [_nanmean(np.asarray(g.values, dtype=float), axis=0) for g in groups]
    return tuple(float(v) for v in _nanmean(per_seed, axis=0))


def _run_groups(by_seed: Mapping[int, list]) -> list[_Runs]:
    return [_Runs(seed, tuple(values)) for seed, values in sorted(by_seed.items()) if values]


def _runs_prepared(by_seed: Mapping[int, list], statistic, **extra) -> _Prepared:
    n_runs = sum(len(values) for values in by_seed.values())
    return _Prepared(_run_groups(by_seed), statistic, n_runs, "seeds > runs", **extra)


def _facts_prepared(store, runs: Sequence[StudyRun], rows_of, statistic) -> _Prepared:
    """Per seed, the evaluations `rows_of(run)` names: (row key, checkpoint, metric, subset)."""
    by_seed: dict[int, list] = defaultdict(list)
    used, n_summaries = set(), 0
    for run in runs:
        for key, checkpoint, metric, subset in rows_of(run):
            scores = _scores(_evaluation(store, run, checkpoint), metric, subset)
            if scores is not None:
                by_seed[run.seed].append((key, scores))
                used.add(run.run_id)
                n_summaries += not isinstance(scores, dict)
    groups = [_fact_rows(seed, rows) for seed, rows in sorted(by_seed.items())]
    n_rows = sum(len(rows) for rows in by_seed.values())
    resampled = "seeds > facts" if not n_summaries else (
        f"seeds > facts; {n_summaries} of {n_rows} evaluations had only a stored summary, "
        "whose facts are not resampled")  # fmt: skip
    return _Prepared(groups, statistic, len(used), resampled)


def _fact_rows(seed: int, rows: list[tuple[Any, dict[str, float] | float]]) -> _Facts:
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
    return _Facts(seed, tuple(key for key, _ in rows), values, mask, np.ones(len(facts)))


def _means(groups: Sequence[_Facts]) -> dict[Any, float]:
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


def _f1_fit_gap(store, runs: Sequence[StudyRun]) -> _Prepared:
    by_seed: dict[int, list] = defaultdict(list)
    for run in (r for r in runs if not _is_idk(r)):
        gaps = [a["train/Known"] - a["train/Unknown"] for a in
                (record["accuracy"] for record in store.train_records(run.run_id))
                if "train/Known" in a and "train/Unknown" in a]  # fmt: skip
        if gaps:
            by_seed[run.seed].append((100 * float(np.mean(gaps)),))
    return _runs_prepared(by_seed, _seed_means)


def _f2_unknown_slopes(store, runs: Sequence[StudyRun]) -> _Prepared:
    def rows(run):
        frac = run.variant.get("build.frac_unknown")
        if frac is None or _is_idk(run):
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

    return _facts_prepared(store, runs, rows, statistic)


def _f3_regression(store, runs: Sequence[StudyRun]) -> _Prepared:
    from knowshift.analysis.regression import regression_points

    by_seed: dict[int, list] = defaultdict(list)
    for run in (r for r in runs if not _is_idk(r)):
        try:
            points = regression_points(store, [run.run_id])
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


def _f4_categories(store, runs: Sequence[StudyRun]) -> _Prepared:
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

    return _facts_prepared(store, runs, rows, statistic)


def _f5_idk(store, runs: Sequence[StudyRun]) -> _Prepared:
    def rows(run):
        frac = run.variant.get("build.frac_unknown")
        if _is_idk(run):
            return [("idk", "last", "exact", "in-answered")]
        if frac is not None and math.isclose(float(frac), 0.5):
            return [("plain", "last", "exact", "in-answered")]
        return []

    def statistic(groups):
        means = _means(groups)
        return (means["idk"] - means["plain"] if "idk" in means and "plain" in means else NAN,)

    return _facts_prepared(store, runs, rows, statistic)


def _set_size(run: StudyRun) -> int | None:
    size = run.variant.get("build.size")
    size = (run.config.get("group_sizes") or {}).get("train") if size is None else size
    return None if size is None else int(size)


def _f6_size_mastery(store, runs: Sequence[StudyRun]) -> _Prepared:
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

    return _facts_prepared(store, runs, rows, statistic)


def _restoration_gain(store, run_id: str) -> float | None:
    """Mean of the top-20% and top-40% restored accuracies minus the unrestored one (points)."""
    result = _latest(store, "restore-sweep", f"{run_id}:last") or {}

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


def _f7_restoration(store, runs: Sequence[StudyRun]) -> _Prepared:
    sizes = [s for s in (_set_size(r) for r in runs) if s is not None]
    by_seed: dict[int, list] = defaultdict(list)
    for run in runs:
        gain = (
            _restoration_gain(store, run.run_id) if sizes and _set_size(run) == max(sizes) else None
        )
        if gain is not None:
            by_seed[run.seed].append((gain,))
    return _runs_prepared(by_seed, _seed_means)


def _f8_intervention(store, runs: Sequence[StudyRun]) -> _Prepared:
    def rows(run):
        group = run.variant.get("build.group")
        return [(group, "last", "exact", "all")] if group in INTERVENTION_GROUPS else []

    def statistic(groups):
        means = _means(groups)
        incompatible = means.get("incompatible", NAN)
        return (means.get("harmonious", NAN) - incompatible,
                means.get("self-aligning", NAN) - incompatible)  # fmt: skip

    return _facts_prepared(store, runs, rows, statistic)


def _f9_packing(store, runs: Sequence[StudyRun]) -> _Prepared:
    by_seed: dict[int, list] = defaultdict(list)
    refused_before = []
    for run in runs:
        shift = _latest(store, "shift", f"{run.run_id}:last")
        collapse = _latest(store, "collapse", f"{run.run_id}:last")
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


_PREPARE: dict[str, Callable[[Any, Sequence[StudyRun]], _Prepared]] = {
    "F1": _f1_fit_gap, "F2": _f2_unknown_slopes, "F3": _f3_regression, "F4": _f4_categories,
    "F5": _f5_idk, "F6": _f6_size_mastery, "F7": _f7_restoration, "F8": _f8_intervention,
    "F9": _f9_packing,
}  # fmt: skip


def verdict_records(verdicts: Iterable[Verdict]) -> list[dict]:
    """Verdicts as JSON-able rows (intervals as [low, high]), e.g. for `knowshift export`."""
    return [{**asdict(v), "intervals": {k: list(i) if i else None for k, i in v.intervals.items()}}
            for v in verdicts]  # fmt: skip
