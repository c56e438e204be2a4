"""Category shifts: re-probe held-out facts with the fine-tuned model and count how each fact's
SliCK category moved (METHODS E, Pletenev et al.).

Positive shifts: Unknown -> HighlyKnown, Unknown -> MaybeKnown, MaybeKnown -> HighlyKnown.
Negative shifts: HighlyKnown -> Unknown, HighlyKnown -> MaybeKnown, MaybeKnown -> Unknown.
Shares are of all compared facts. Reliability is the share of the trained Unknown facts the
fine-tuned model now answers (greedy, with the training prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from knowshift.types import CATEGORIES, Category

HK, MK, WK, UNK = (c.value for c in CATEGORIES)
POSITIVE = ((UNK, HK), (UNK, MK), (MK, HK))
NEGATIVE = ((HK, UNK), (HK, MK), (MK, UNK))


@dataclass(frozen=True)
class ShiftResult:
    """counts[before][after]: facts that were `before` for the base model and are `after` now."""

    n_facts: int
    counts: dict[str, dict[str, int]]
    positive_share: float
    negative_share: float
    transitions: dict[str, float]  # "Unknown->HighlyKnown" -> share of all facts, for the six
    unchanged_share: float
    reliability: float | None = None  # share of trained Unknown facts now answered
    n_trained_unknown: int = 0


def shift_matrix(before: Mapping[str, Category], after: Mapping[str, Category]) -> ShiftResult:
    """The transition counts and shift shares over the facts categorised in both."""
    names = [c.value for c in CATEGORIES]
    counts = {b: dict.fromkeys(names, 0) for b in names}
    shared = sorted(set(before) & set(after))
    for fact_id in shared:
        counts[before[fact_id].value][after[fact_id].value] += 1
    n = len(shared)

    def share(pairs: Sequence[tuple[str, str]]) -> float:
        return sum(counts[b][a] for b, a in pairs) / n if n else 0.0

    return ShiftResult(
        n_facts=n,
        counts=counts,
        positive_share=share(POSITIVE),
        negative_share=share(NEGATIVE),
        transitions={f"{b}->{a}": share([(b, a)]) for b, a in POSITIVE + NEGATIVE},
        unchanged_share=share([(c, c) for c in names]),
    )


def category_shift(
    pair,
    store,
    targets,
    facts,
    config,
    *,
    device: str = "auto",
    progress: Callable[[str, int], None] | None = None,
) -> ShiftResult:
    """Probe `targets` with the base and the fine-tuned model of `pair` (stored results are
    reused, so the base is usually not probed again) and compare their categories.
    `progress(role, n)` is told of every n facts done."""
    from dataclasses import replace

    from knowshift.models import load_model
    from knowshift.probe.engine import Engine
    from knowshift.probe.run import probe
    from knowshift.train.items import example_items
    from knowshift.train.measure import measure

    dtype = (pair.probe_params or {}).get("dtype", "auto")
    categories = []
    for role, name, adapter in (("base", pair.base, None), ("tuned", pair.tuned, pair.adapter)):
        loaded = load_model(name, device=device, dtype=dtype, adapter=adapter)
        step = partial(progress, role) if progress else None
        results = probe(loaded, facts, targets, config, store, progress=step)
        categories.append({r.fact_id: r.category for r in results if r.category is not None})
    result = shift_matrix(*categories)
    unknown = [e for e in pair.train_examples if e.category == Category.UNKNOWN.value]
    if unknown:  # the tuned model is still `loaded`
        accuracy = measure(Engine(loaded), example_items(unknown))
        result = replace(
            result, reliability=accuracy["train/Unknown"], n_trained_unknown=len(unknown)
        )
    return result


def format_shift(result: ShiftResult) -> str:
    """The transition matrix (rows: base category, columns: after fine-tuning) and the shares."""
    names = [c.value for c in CATEGORIES]
    width = max(len(n) for n in names) + 2
    lines = [f"{result.n_facts} facts; rows: base model, columns: fine-tuned",
             f"{'':<{width}}" + "".join(f"{n:>{width}}" for n in names) + f"{'n':>8}"]  # fmt: skip
    for before in names:
        row = result.counts[before]
        lines.append(
            f"{before:<{width}}"
            + "".join(f"{row[a]:>{width}}" for a in names)
            + f"{sum(row.values()):>8}"
        )
    lines.append("")
    lines.append(f"positive shifts {100 * result.positive_share:5.1f}%   "
                 f"negative shifts {100 * result.negative_share:5.1f}%   "
                 f"unchanged {100 * result.unchanged_share:5.1f}%")  # fmt: skip
    for name, share in result.transitions.items():
        lines.append(f"  {name:<26} {100 * share:5.1f}%")
    if result.reliability is not None:
        lines.append(
            f"reliability: {100 * result.reliability:.1f}% of {result.n_trained_unknown} trained Unknown facts answered"
        )
    return "\n".join(lines)
