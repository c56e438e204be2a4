"""What a study stored, as the verdicts read it: its done runs (StudyRun), each evaluation's
per-fact scores (fact_scores: run folders' predictions, else the store's "eval" summary; see
reproduce.data for where they are read), and the two resampling units of the bootstrap
(seeds > facts, seeds > runs) with the bootstrap itself."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from knowshift.reproduce.findings import (
    CONFIDENCE,
    N_DRAWS,
    RNG_SEED,
)

NAN = float("nan")


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


def is_idk(run: StudyRun) -> bool:
    """A run of an "I don't know" set (its Unknown examples answer a refusal)."""
    recipe = str(run.variant.get("build.recipe") or "")
    sizes = run.config.get("group_sizes") or {}
    return recipe.startswith("idk:") or bool(run.variant.get("build.idk")) or sizes.get("train/kind/idk", 0) > 0  # fmt: skip


# Which test facts a score counts: all, in distribution, in distribution and not refused.
SUBSETS = {"all": lambda p: True, "in": lambda p: p.get("in_distribution", True),
         "in-answered": lambda p: p.get("in_distribution", True) and not p.get("refused")}  # fmt: skip


def fact_scores(evaluation, metric: str, subset: str) -> dict[str, float] | float | None:
    """Per fact of the subset, 1.0 if `metric` ("exact", "contains") holds; from a stored
    summary, the subset's accuracy alone; None where neither can say."""
    if evaluation is None:
        return None
    if isinstance(evaluation, list):
        keep = SUBSETS[subset]
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
class FactGroup:
    """One seed's evaluations as rows over the seed's test facts (weights: how often each fact
    is drawn). A stored summary is a constant row, which resampling leaves unchanged."""

    seed: int
    keys: tuple[Any, ...]
    values: np.ndarray  # rows x facts: 1.0 correct, 0.0 wrong or outside the row's subset
    mask: np.ndarray  # rows x facts: 1.0 where the fact counts in the row
    weights: np.ndarray

    def resample(self, rng: np.random.Generator) -> FactGroup:
        n = len(self.weights)
        return replace(self, weights=np.bincount(rng.integers(0, n, n), minlength=n).astype(float))

    def accuracies(self) -> list[tuple[Any, float]]:
        """(row key, accuracy in points; NaN for a row none of whose facts were drawn)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = 100 * (self.values @ self.weights) / (self.mask @ self.weights)
        return list(zip(self.keys, accuracy.tolist(), strict=True))


@dataclass(frozen=True)
class RunGroup:
    """One seed's per-run values (tuples, one number per part)."""

    seed: int
    values: tuple[tuple[float, ...], ...]

    def resample(self, rng: np.random.Generator) -> RunGroup:
        n = len(self.values)
        return replace(self, values=tuple(self.values[i] for i in rng.integers(0, n, n)))


@dataclass(frozen=True)
class Prepared:
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
