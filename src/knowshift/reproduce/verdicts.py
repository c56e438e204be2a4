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

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from knowshift.errors import KnowshiftError
from knowshift.reproduce.data import StudyData
from knowshift.reproduce.findings import (
    CONFIDENCE,
    FINDINGS,
    INCONCLUSIVE,
    MIN_SEEDS,
    N_DRAWS,
    NOT_REPRODUCED,
    REPRODUCED,
    RNG_SEED,
    Finding,
    get_finding,
)
from knowshift.reproduce.statistics import PREPARE
from knowshift.reproduce.stored import bootstrap, done_runs, format_number, percentile_interval

__all__ = [
    "Verdict",
    "all_verdicts",
    "bootstrap",
    "decide",
    "done_runs",
    "format_number",
    "percentile_interval",
    "study_verdicts",
    "verdict",
    "verdict_records",
]


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


def verdict(source, finding: Finding | str, *, study: str | None = None, n_draws: int = N_DRAWS,
            rng_seed: int = RNG_SEED) -> Verdict:  # fmt: skip
    """Decide `finding` from the done runs of its study (or `study`, another name): `source` is
    a Store, or that study's StudyData (a store's, or read from an export)."""
    finding = get_finding(finding) if isinstance(finding, str) else finding
    study = study or finding.study
    data = source if isinstance(source, StudyData) else StudyData.from_store(source, study)
    if data.study != study:
        raise KnowshiftError(f"finding {finding.id} reads study {study!r}; these are the data of {data.study!r}")  # fmt: skip
    prepared = PREPARE[finding.id](data, data.runs)
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


def all_verdicts(sources: Sequence, *, n_draws: int = N_DRAWS, rng_seed: int = RNG_SEED) -> list[Verdict]:  # fmt: skip
    """All nine verdicts from study stores (one per study folder) or StudyData: each finding is
    decided from the first source holding its study; one no source holds is inconclusive,
    saying so."""
    found = []
    for f in FINDINGS:
        source = next((s for s in sources if _holds(s, f.study)), None)
        if source is not None:
            found.append(verdict(source, f, n_draws=n_draws, rng_seed=rng_seed))
            continue
        names = [p.name for p in f.parts]
        found.append(Verdict(f.id, dict.fromkeys(names), dict.fromkeys(names),
                             dict.fromkeys(names, INCONCLUSIVE), 0, 0, INCONCLUSIVE,
                             f"study {f.study!r} was not run (no store or data holds it)", "nothing"))  # fmt: skip
    return found


def _holds(source, study: str) -> bool:
    if isinstance(source, StudyData):
        return source.study == study
    return bool(source.study_runs(study))


def verdict_records(verdicts: Iterable[Verdict]) -> list[dict]:
    """Verdicts as JSON-able rows (intervals as [low, high]), e.g. for `knowshift export`."""
    return [{**asdict(v), "intervals": {k: list(i) if i else None for k, i in v.intervals.items()}}
            for v in verdicts]  # fmt: skip
