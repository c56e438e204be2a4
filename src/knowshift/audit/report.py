"""What an audit says: category shares per group, reasons for what was not probed, and the
expected effect of training on the file, from the regression of the workspace's own runs.

The expected effect (METHODS B): over (run, epoch) measurements, test accuracy (%) =
b0 + b_kn * (fitted Known / |D|) + b_unk * (fitted Unknown / |D|). Once training fits every
Unknown example of the file, its Unknown share X contributes b_unk * X points, with the
confidence interval of b_unk scaled by X. Only runs trained from the audited model count; the
fit comes from other training sets, so it is an extrapolation: its direction and rough size are
what it tells.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from knowshift.analysis.stats import Coefficient, OlsFit
from knowshift.audit.run import Audit
from knowshift.audit.screen import reason_kind
from knowshift.errors import KnowshiftError
from knowshift.store import Store
from knowshift.types import CATEGORIES, Category

ALL = "ALL"
NO_GROUP = "(none)"
TARGET_NAMES = {"in": "in-distribution", "out": "out-of-distribution", "all": "all"}


@dataclass(frozen=True)
class ExpectedEffect:
    """The regression's reading for this file's Unknown share, or why there is none."""

    frac_unknown: float  # Unknown examples / all examples of the file
    n_unknown: int
    n_runs: int  # runs of this model that the fit used (or that were found)
    fit: OlsFit | None = None
    target: str = ""  # "in", else "all" / "out": which test accuracy the fit explains
    note: str = ""  # why there is no fit

    @property
    def b_unknown(self) -> Coefficient | None:
        return self.fit.coefficient("unknown_fitted") if self.fit else None


def unknown_counts(audit: Audit) -> tuple[int, int, int]:
    """(Unknown examples, probed examples, all examples)."""
    probed = [row for row in audit.rows if row.probed]
    n_unknown = sum(row.result.category == Category.UNKNOWN for row in probed)  # type: ignore[union-attr]
    return n_unknown, len(probed), len(audit.rows)


def summary_table(audit: Audit) -> str:
    """Category shares (of the probed examples) per group and overall, and what was skipped."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in audit.rows:
        label = row.result.category.value if row.result else "not probed"  # type: ignore[union-attr]
        for group in ([row.example.group or NO_GROUP] if audit.group_field else []) + [ALL]:
            counts[group][label] += 1
    n_unknown, n_probed, n_all = unknown_counts(audit)
    source = "the store" if not audit.loaded_model else "the model"
    lines = [
        f"audit of {audit.path} ({audit.schema}, {n_all} examples) with {audit.model}, "
        f"{audit.config.estimator} estimator (results from {source}, settings {audit.params_key})"
    ]
    columns = [c.value for c in CATEGORIES]
    header = audit.group_field or "group"
    groups = sorted(g for g in counts if g != ALL) + [ALL]
    width = max(len(header), *(len(g) for g in groups))
    lines.append(
        f"{header:<{width}}  {'n':>6}  {'probed':>6}  " + "  ".join(f"{c:>11}" for c in columns)
    )
    for group in groups:
        total = sum(counts[group].values())
        probed = total - counts[group]["not probed"]
        cells = "  ".join(
            f"{100 * counts[group][c] / probed:>10.1f}%" if probed else f"{'-':>11}"
            for c in columns
        )
        lines.append(f"{group:<{width}}  {total:>6}  {probed:>6}  {cells}")
    reasons = Counter(
        reason_kind(row.example.problem or "") for row in audit.rows if not row.probed
    )
    if reasons:
        listed = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
        lines.append(f"not probed: {n_all - n_probed} ({listed}); see --out for each reason")
    lines.append(
        f"Unknown: {n_unknown} of {n_probed} probed examples ({100 * n_unknown / n_probed:.1f}%), "
        f"{100 * n_unknown / n_all:.1f}% of all {n_all}"
    )
    return "\n".join(lines)


def expected_effect(stores: Sequence[Store], audit: Audit) -> ExpectedEffect:
    """Fit the regression over the runs trained from the audited model that `stores` (a
    workspace and the study folders in it) hold, if any."""
    from knowshift.analysis.regression import fit_regression, regression_points

    n_unknown, _, n_all = unknown_counts(audit)
    frac_unknown = n_unknown / n_all
    points, seen = [], set()
    for store in stores:
        runs = []
        for run_id in store.run_ids():
            config = store.run_config(run_id) or {}
            if (run_id not in seen and config.get("group_sizes")
                    and config.get("base_fingerprint") == audit.model_fingerprint):  # fmt: skip
                runs.append(run_id)
                seen.add(run_id)
        points += regression_points(store, runs) if runs else []
    if not seen:
        return ExpectedEffect(frac_unknown, n_unknown, 0, note="no fine-tuning runs of this model")
    try:
        result = fit_regression(points)
    except KnowshiftError as error:
        return ExpectedEffect(frac_unknown, n_unknown, len(seen), note=str(error).split(";")[0])
    target = "in" if "in" in result.fits else next(iter(result.fits))
    return ExpectedEffect(frac_unknown, n_unknown, len(result.runs), result.fits[target], target)


def format_effect(effect: ExpectedEffect, workspace: str) -> str:
    """The expected effect in words, hedged as the extrapolation it is."""
    b_unk = effect.b_unknown
    if effect.fit is None or b_unk is None:
        found = f" ({effect.n_runs} runs found)" if effect.n_runs else ""
        return (
            f"expected effect: no stored regression in {workspace} (or its study folders) for "
            f"this model: {effect.note}"
            f"{found}. To get one, run the unknown-ratio study on it (knowshift study run "
            "configs/unknown-ratio.yaml --set model.name=MODEL), then audit again"
        )
    x = effect.frac_unknown
    level = round(100 * effect.fit.confidence)
    low, high = b_unk.ci_low * x, b_unk.ci_high * x
    lines = [
        f"expected effect, from a regression over {effect.fit.n_points} measurements of "
        f"{effect.n_runs} runs of this model in {workspace} and its study folders",
        f"({TARGET_NAMES[effect.target]} test accuracy, R^2 {effect.fit.r_squared:.2f}):",
        f"  if training fits the {effect.n_unknown} Unknown examples ({100 * x:.0f}% of the set): "
        f"{b_unk.estimate * x:+.1f} points of test accuracy",
        f"  ({level}% CI {low:+.1f} to {high:+.1f}; b_unk = {b_unk.estimate:+.1f} for a set "
        "all Unknown and all fitted)",
    ]
    if low < 0 < high:
        lines.append("  The interval includes 0: these runs do not settle even the sign.")
    lines += [
        "  An extrapolation from your runs on other sets, for direction and rough size; Unknown",
        "  examples are fitted late, so it grows with training (small at early stopping, full at",
        "  convergence).",
    ]
    return "\n".join(lines)
