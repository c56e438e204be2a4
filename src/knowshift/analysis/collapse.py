"""Answer collapse and refusals, before vs after fine-tuning (METHODS E, Pletenev et al.).

A model that has collapsed gives few distinct answers, and some answer "explodes": it is given
to a large share of a relation's questions while being wrong for most of them (a relation whose
true answers are few, such as continents, legitimately repeats answers, so a repeated answer
counts only when it is mostly wrong). Answers are compared after normalisation.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from knowshift.facts.normalize import normalize_answer

if TYPE_CHECKING:  # evaluate.qa loads torch; the report reads these results without it
    from knowshift.evaluate.qa import Prediction


@dataclass(frozen=True)
class ExplodedAnswer:
    """An answer given to `share` of its relation's questions, right for `correct_share` of them."""

    relation: str
    answer: str
    n_questions: int
    share: float
    correct_share: float


@dataclass(frozen=True)
class CollapseStats:
    """How varied one model's answers are, over one set of questions."""

    n_questions: int
    n_distinct: int
    entropy_bits: float  # of the answer distribution
    top1_share: float  # the most frequent answer's share of all questions
    top5_share: float
    refusal_rate: float
    accuracy: float
    exploded: tuple[ExplodedAnswer, ...]
    distinct_by_relation: dict[str, int]


@dataclass(frozen=True)
class CollapseResult:
    before: CollapseStats
    after: CollapseStats
    explode_share: float


def collapse_stats(predictions: Sequence[Prediction], explode_share: float = 0.1) -> CollapseStats:
    """Distinct answers, entropy, top shares, refusals and exploded answers of `predictions`."""
    n = len(predictions)
    answers = Counter(normalize_answer(p.prediction) for p in predictions)
    probabilities = [count / n for count in answers.values()] if n else []
    top = [count for _, count in answers.most_common(5)]
    return CollapseStats(
        n_questions=n,
        n_distinct=len(answers),
        entropy_bits=-sum(p * math.log2(p) for p in probabilities),
        top1_share=top[0] / n if n else 0.0,
        top5_share=sum(top) / n if n else 0.0,
        refusal_rate=sum(p.refused for p in predictions) / n if n else 0.0,
        accuracy=sum(p.contains for p in predictions) / n if n else 0.0,
        exploded=exploded_answers(predictions, explode_share),
        distinct_by_relation={
            relation: len({normalize_answer(p.prediction) for p in group})
            for relation, group in sorted(_by_relation(predictions).items())
        },
    )


def exploded_answers(
    predictions: Sequence[Prediction], explode_share: float = 0.1
) -> tuple[ExplodedAnswer, ...]:
    """Answers given to more than `explode_share` of a relation's questions (and at least 3)
    while right for fewer than half of them; the largest first."""
    found = []
    for relation, group in _by_relation(predictions).items():
        by_answer: dict[str, list[Prediction]] = defaultdict(list)
        for p in group:
            if not p.refused and normalize_answer(p.prediction):
                by_answer[normalize_answer(p.prediction)].append(p)
        for answer, given in by_answer.items():
            share = len(given) / len(group)
            correct = sum(p.contains for p in given) / len(given)
            if share > explode_share and len(given) >= 3 and correct < 0.5:
                found.append(ExplodedAnswer(relation, answer, len(given), share, correct))
    return tuple(sorted(found, key=lambda e: (-e.n_questions, e.relation, e.answer)))


def answer_collapse(
    before: Sequence[Prediction], after: Sequence[Prediction], explode_share: float = 0.1
) -> CollapseResult:
    """Collapse statistics of the base model's and the fine-tuned model's answers."""
    return CollapseResult(
        collapse_stats(before, explode_share), collapse_stats(after, explode_share), explode_share
    )


def _by_relation(predictions: Sequence[Prediction]) -> dict[str, list[Prediction]]:
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        groups[p.relation].append(p)
    return groups


def format_collapse(result: CollapseResult) -> str:
    """Before vs after, then the exploded answers of each."""
    rows = [
        ("questions", "n_questions", "{:d}"), ("distinct answers", "n_distinct", "{:d}"),
        ("entropy (bits)", "entropy_bits", "{:.2f}"), ("top answer share", "top1_share", "{:.1%}"),
        ("top-5 answers share", "top5_share", "{:.1%}"), ("refusal rate", "refusal_rate", "{:.1%}"),
        ("accuracy (contains)", "accuracy", "{:.1%}"),
    ]  # fmt: skip
    lines = [f"{'':<22} {'before':>10} {'after':>10}"]
    for label, name, fmt in rows:
        b, a = getattr(result.before, name), getattr(result.after, name)
        lines.append(f"{label:<22} {fmt.format(b):>10} {fmt.format(a):>10}")
    for when, stats in (("before", result.before), ("after", result.after)):
        lines.append(f"\nexploded answers {when} (> {result.explode_share:.0%} of a relation's questions, mostly wrong): "
                     f"{len(stats.exploded) or 'none'}")  # fmt: skip
        for e in stats.exploded[:10]:
            lines.append(f"  {e.relation:<22} {e.answer!r:<24} {e.n_questions:>5} questions "
                         f"({e.share:.0%}), right for {e.correct_share:.0%}")  # fmt: skip
    return "\n".join(lines)
