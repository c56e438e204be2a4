"""Test accuracy as a linear function of what was fitted (METHODS B, Gekhman et al.).

Over all (run, epoch) measurements:

    Acc = b0 + b_kn * N_kn_fitted / |D| + b_unk * N_unk_fitted / |D|

fitted by ordinary least squares, in distribution (test facts of the trained relations) and out
of it (the other relations). Accuracy is in percent, so a coefficient is the change in points
when the share moves from none to the whole set; the published fit is b_kn = +7.3,
b_unk = -8.3 (in distribution). Every input comes from the results database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from knowshift.analysis.stats import OlsFit, ols
from knowshift.errors import KnowshiftError
from knowshift.store import Store

TARGETS = {"in": "test/in", "out": "test/out", "all": "test"}


@dataclass(frozen=True)
class RegressionPoint:
    """One measurement: fitted shares of the set (Known, Unknown) and test accuracy (percent)."""

    run_id: str
    epoch: float
    known_fitted: float
    unknown_fitted: float
    accuracy: dict[str, float]  # "in" / "out" / "all" -> percent, where measured


@dataclass(frozen=True)
class RegressionResult:
    """The fits per target ("in", "out", "all"), over these points."""

    fits: dict[str, OlsFit]
    points: tuple[RegressionPoint, ...]
    runs: tuple[str, ...]


def regression_points(store: Store, run_ids: Sequence[str] | None = None) -> list[RegressionPoint]:
    """Every stored measurement of the runs (default: all runs) that counts fitted Known and
    Unknown examples. The set size of a run comes from its stored group sizes."""
    points = []
    for run_id in run_ids or store.run_ids():
        config = store.run_config(run_id)
        if config is None:
            known = ", ".join(store.run_ids()) or "none"
            raise KnowshiftError(f"no run {run_id!r} in {store.path}; runs stored there: {known}")
        sizes = config.get("group_sizes")
        if not sizes:
            if run_ids:
                raise KnowshiftError(
                    f"run {run_id} has no stored group sizes (trained with an older knowshift); "
                    "rerun its knowshift train command to refresh its record"
                )
            continue
        n_set = sizes.get("train", 0)
        n_known, n_unknown = sizes.get("train/Known", 0), sizes.get("train/Unknown", 0)
        if not n_set or not (n_known or n_unknown):
            continue  # a set without categories says nothing about Known vs Unknown
        for record in store.train_records(run_id):
            accuracy = record["accuracy"]
            points.append(
                RegressionPoint(
                    run_id,
                    record["epoch"],
                    accuracy.get("train/Known", 0.0) * n_known / n_set,
                    accuracy.get("train/Unknown", 0.0) * n_unknown / n_set,
                    {t: 100 * accuracy[g] for t, g in TARGETS.items() if g in accuracy},
                )
            )
    return points


def fit_regression(points: Sequence[RegressionPoint], confidence: float = 0.95) -> RegressionResult:
    """The least-squares fit of accuracy on the fitted shares, for each target with enough points."""
    if not points:
        raise KnowshiftError(
            "no measurements with Known/Unknown training examples in the database; "
            "train on a set built from probe categories (knowshift build ...) first"
        )
    fits = {}
    for target in TARGETS:
        used = [p for p in points if target in p.accuracy]
        if len(used) > 3:
            fits[target] = ols(
                [p.accuracy[target] for p in used],
                {"known_fitted": [p.known_fitted for p in used],
                 "unknown_fitted": [p.unknown_fitted for p in used]},
                confidence,
            )  # fmt: skip
    if not fits:
        raise KnowshiftError(
            f"{len(points)} measurements are too few for a fit of 3 coefficients; add runs or epochs"
        )
    runs = tuple(dict.fromkeys(p.run_id for p in points))
    return RegressionResult(fits, tuple(points), runs)


def format_regression(result: RegressionResult) -> str:
    """The coefficients with their confidence intervals, per target."""
    names = {"in": "in distribution", "out": "out of distribution", "all": "all test facts"}
    lines = [f"{len(result.points)} measurements of {len(result.runs)} run(s); accuracy in %"]
    for target, fit in result.fits.items():
        level = round(100 * fit.confidence)
        lines.append(f"\n{names[target]}: R^2 = {fit.r_squared:.3f} (n = {fit.n_points})")
        lines.append(
            f"  {'coefficient':<16} {'estimate':>9} {'stderr':>8} {f'{level}% CI':>20} {'p':>8}"
        )
        for c in fit.coefficients:
            ci = f"[{c.ci_low:7.2f}, {c.ci_high:7.2f}]"
            lines.append(
                f"  {c.name:<16} {c.estimate:9.2f} {c.stderr:8.2f} {ci:>20} {c.p_value:8.3g}"
            )
    return "\n".join(lines)
