"""Closed-book QA: greedy answers to questions, scored and broken down (METHODS B, C, E).

    predictions = predict(loaded, facts, categories, train_relations)
    report = summarise(predictions)

A prediction is the greedy answer up to the first newline, to the same "Q: ...\\nA:" prompt the
fine-tuning sets use, with no exemplars. It is scored by exact match after normalisation and by
alias containment, and flagged as a refusal when it says it does not know.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from knowshift.facts.normalize import contains_match, exact_match, normalize_answer
from knowshift.models import LoadedModel
from knowshift.probe.engine import Engine, SampleRequest
from knowshift.types import Category, Fact

REFUSALS = re.compile(
    r"\b(i dont know|i do not know|unknown|not sure|no idea|cannot answer|i cant answer)\b"
)


@dataclass(frozen=True)
class Prediction:
    """One question's greedy answer and its scores, with the fact's groups."""

    fact_id: str
    relation: str
    prediction: str
    exact: bool
    contains: bool
    refused: bool
    category: str | None
    popularity: float | None
    in_distribution: bool


def predict(
    loaded: LoadedModel,
    facts: Sequence[Fact],
    categories: Mapping[str, Category | None] | None = None,
    train_relations: set[str] | None = None,
    max_new_tokens: int = 16,
    engine: Engine | None = None,
    template: str = "plain",
) -> list[Prediction]:
    """Greedy closed-book answers for `facts`, batched per relation (shared template prefix).

    `template` is the fine-tuning set's prompt format (see `knowshift.mixtures.format_example`)."""
    from knowshift.mixtures import format_example

    engine = engine or Engine(loaded)
    categories = categories or {}
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts:
        by_relation[fact.relation].append(fact)
    relations = sorted(by_relation)
    groups = [
        [
            SampleRequest(
                tuple(engine.tokenizer(format_example(f.question, "", template)[0]).input_ids), 0
            )
            for f in by_relation[r]
        ]
        for r in relations
    ]
    outputs = engine.sample(
        groups, n_samples=0, temperature=1.0, top_k=1, max_new_tokens=max_new_tokens
    )
    predictions = {}
    for relation, group_outputs in zip(relations, outputs, strict=True):
        for fact, rows in zip(by_relation[relation], group_outputs, strict=True):
            text = (
                engine.tokenizer.decode(rows[0], skip_special_tokens=True).split("\n", 1)[0].strip()
            )
            category = categories.get(fact.id)
            predictions[fact.id] = Prediction(
                fact_id=fact.id,
                relation=fact.relation,
                prediction=text,
                exact=exact_match(text, fact.answers),
                contains=contains_match(text, fact.answers),
                refused=bool(REFUSALS.search(normalize_answer(text))),
                category=category.value if category else None,
                popularity=fact.popularity,
                in_distribution=train_relations is None or fact.relation in train_relations,
            )
    return [predictions[f.id] for f in facts]


@dataclass(frozen=True)
class Breakdown:
    """Accuracy (exact and containment), refusal rate and accuracy on answered, for one group."""

    n: int
    exact: float
    contains: float
    refusal_rate: float
    answered_exact: float | None


def breakdown(predictions: Sequence[Prediction]) -> Breakdown:
    n = len(predictions)
    answered = [p for p in predictions if not p.refused]
    return Breakdown(
        n=n,
        exact=sum(p.exact for p in predictions) / n if n else 0.0,
        contains=sum(p.contains for p in predictions) / n if n else 0.0,
        refusal_rate=(n - len(answered)) / n if n else 0.0,
        answered_exact=sum(p.exact for p in answered) / len(answered) if answered else None,
    )


def summarise(
    predictions: Sequence[Prediction], n_popularity_buckets: int = 4
) -> dict[str, dict[str, Breakdown]]:
    """Breakdowns overall and by category, relation, popularity bucket and distribution."""
    groups: dict[str, dict[str, list[Prediction]]] = defaultdict(lambda: defaultdict(list))
    buckets = _popularity_buckets(predictions, n_popularity_buckets)
    for p in predictions:
        groups["all"]["all"].append(p)
        groups["category"][p.category or "uncategorised"].append(p)
        groups["relation"][p.relation].append(p)
        groups["popularity"][buckets.get(p.fact_id, "unknown")].append(p)
        groups["distribution"]["in" if p.in_distribution else "out"].append(p)
    return {
        kind: {name: breakdown(items) for name, items in sorted(g.items())}
        for kind, g in groups.items()
    }


def _popularity_buckets(predictions: Sequence[Prediction], n_buckets: int) -> dict[str, str]:
    """Quantile buckets ("q1" least popular ... "qN") over the predictions that have popularity."""
    known = [p for p in predictions if p.popularity is not None]
    if not known:
        return {}
    edges = np.quantile([p.popularity for p in known], np.linspace(0, 1, n_buckets + 1)[1:-1])
    return {
        p.fact_id: f"q{int(np.searchsorted(edges, p.popularity, side='right')) + 1}" for p in known
    }


def format_summary(summary: dict[str, dict[str, Breakdown]]) -> str:
    """A readable table of the breakdowns."""
    lines = [f"{'group':<32} {'n':>6} {'exact':>7} {'contains':>9} {'refused':>8} {'answered':>9}"]
    for kind, rows in summary.items():
        for name, b in rows.items():
            answered = (
                f"{100 * b.answered_exact:8.1f}%" if b.answered_exact is not None else f"{'-':>9}"
            )
            label = name if kind == "all" else f"{kind}: {name}"
            lines.append(f"{label:<32} {b.n:>6} {100 * b.exact:6.1f}% {100 * b.contains:8.1f}% "
                         f"{100 * b.refusal_rate:7.1f}% {answered}")  # fmt: skip
    return "\n".join(lines)
