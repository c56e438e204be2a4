"""The statistics the analyses share: ordinary least squares with confidence intervals, and
(partial) Spearman rank correlation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from knowshift.errors import KnowshiftError


@dataclass(frozen=True)
class Coefficient:
    """One fitted coefficient: estimate, standard error, confidence interval and p-value
    (two-sided t test of "the coefficient is 0")."""

    name: str
    estimate: float
    stderr: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class OlsFit:
    """An ordinary-least-squares fit: coefficients (intercept first), R^2, points, confidence."""

    coefficients: tuple[Coefficient, ...]
    r_squared: float
    n_points: int
    confidence: float

    def coefficient(self, name: str) -> Coefficient:
        return next(c for c in self.coefficients if c.name == name)


def ols(
    y: Sequence[float],
    columns: dict[str, Sequence[float]],
    confidence: float = 0.95,
) -> OlsFit:
    """Fit y = b0 + sum_j b_j x_j by least squares; `columns` maps each regressor's name to its
    values. Needs more points than coefficients (the error's variance is estimated from the
    residuals, with n - p degrees of freedom)."""
    from scipy import stats

    target = np.asarray(y, dtype=float)
    design = np.column_stack(
        [np.ones(len(target))] + [np.asarray(v, float) for v in columns.values()]
    )
    n, p = design.shape
    if n <= p:
        raise KnowshiftError(
            f"a fit of {p} coefficients needs more than {p} points, got {n}; "
            "add runs (or epochs) to the regression"
        )
    beta, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < p:
        raise KnowshiftError(
            "the regressors are collinear (e.g. every run has the same share of Unknown "
            "examples fitted); add runs with other compositions"
        )
    residuals = target - design @ beta
    dof = n - p
    sigma2 = float(residuals @ residuals) / dof
    covariance = sigma2 * np.linalg.inv(design.T @ design)
    stderr = np.sqrt(np.diag(covariance))
    t_crit = stats.t.ppf(0.5 + confidence / 2, dof)
    total = float(((target - target.mean()) ** 2).sum())
    r_squared = 1.0 - float(residuals @ residuals) / total if total > 0 else float("nan")
    names = ["intercept", *columns]
    coefficients = []
    for name, b, se in zip(names, beta, stderr, strict=True):
        t_value = b / se if se > 0 else math.inf
        p_value = float(2 * stats.t.sf(abs(t_value), dof)) if se > 0 else 0.0
        coefficients.append(
            Coefficient(
                name, float(b), float(se), float(b - t_crit * se), float(b + t_crit * se), p_value
            )
        )
    return OlsFit(tuple(coefficients), r_squared, n, confidence)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); nan when either is constant."""
    from scipy.stats import rankdata

    return _pearson(rankdata(x), rankdata(y))


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Spearman correlation of x and y controlling for z: rank all three, regress the ranks of x
    and of y on the ranks of z, and correlate the residuals. nan when it is undefined."""
    from scipy.stats import rankdata

    rx, ry, rz = (rankdata(v) for v in (x, y, z))
    return _pearson(_residuals(rx, rz), _residuals(ry, rz))


def _residuals(values: np.ndarray, control: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(control)), control])
    beta, *_ = np.linalg.lstsq(design, values, rcond=None)
    return values - design @ beta


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 1e-12 else float("nan")
