"""What every recipe shares: the pool of eligible facts, exact apportioning, seeded draws, examples.

Determinism: every draw sorts its facts by id, then shuffles them with `random.Random(key)` for a
string key that names the seed, the recipe and the stratum (Python seeds a Random from a string
by its sha512, independent of PYTHONHASHSEED). A draw of n takes the first n of that order, so a
smaller draw is a prefix of a larger one: the 25% Unknown variant's Unknown facts are among the
50% variant's.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.mixtures.specs import BaseSpec, flag
from knowshift.types import CATEGORIES, Category, Example, Fact, FactSet, ProbeResult


def format_example(question: str, answer: str, template: str = "plain") -> tuple[str, str]:
    """(prompt, completion) for one question and answer; the loss goes on the completion only.

    plain: "Q: {question}\\nA:" + " {answer}\\n", the format the probe asks in, so a fact is
    trained the way it is probed (the newline is the stop the probe reads answers up to).
    tagged: "<|question|> {question} <|answer|>" + " {answer}" (Ye et al.).
    """
    if template == "plain":
        return f"Q: {question}\nA:", f" {answer}\n"
    if template == "tagged":
        return f"<|question|> {question} <|answer|>", f" {answer}"
    raise unknown_name("template", template, ("plain", "tagged"))


def make_example(
    fact: Fact,
    result: ProbeResult,
    spec: BaseSpec,
    *,
    kind: str = "gold",
    answer: str | None = None,
    question: str | None = None,
    question_template: int = 0,
) -> Example:
    """An example teaching `answer` (default: the gold answer) for `question` (default: the fact's)."""
    question = fact.question if question is None else question
    answer = fact.answer if answer is None else answer
    prompt, completion = format_example(question, answer, spec.template)
    return Example(
        fact_id=fact.id,
        relation=fact.relation,
        question=question,
        answer=answer,
        prompt=prompt,
        completion=completion,
        kind=kind,
        category=result.category.value if result.category else None,
        mastery_level=result.mastery_level,
        question_template=question_template,
    )


def eligible_facts(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: BaseSpec
) -> list[Fact]:
    """Facts a recipe may draw from, sorted by id: the spec's split and relations, probed, and
    with one correct object (METHODS B drops multi-answer facts)."""
    for name in spec.relations or ():
        if name not in facts.relations:
            raise unknown_name(f"relation in {facts.source}", name, facts.relations)
    wanted = set(spec.relations or facts.relations)
    pool = [
        f
        for f in facts.facts
        if f.split == spec.split and f.relation in wanted and not f.multi_answer and f.id in results
    ]
    if not pool:
        raise KnowshiftError(
            f"none of the {spec.split} facts of {facts.source} has a probe result; "
            f"probe them first (knowshift probe --split {spec.split})"
        )
    return sorted(pool, key=lambda f: f.id)


def by_relation(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    """Facts grouped by relation, relations in name order, facts in their given order."""
    groups: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts:
        groups[fact.relation].append(fact)
    return dict(sorted(groups.items()))


def by_relation_category(
    pool: Sequence[Fact], results: Mapping[str, ProbeResult]
) -> dict[str, dict[Category, list[Fact]]]:
    """relation -> category -> facts (every category present, possibly empty)."""
    if all(results[f.id].category is None for f in pool):
        estimator = results[pool[0].id].estimator
        raise KnowshiftError(
            f"the {estimator} probe results have no SliCK categories; use results of the exact, "
            "sampling or greedy estimator (or --recipe mastery)"
        )
    table: dict[str, dict[Category, list[Fact]]] = {}
    for relation, group in by_relation(pool).items():
        table[relation] = {c: [f for f in group if results[f.id].category == c] for c in CATEGORIES}
    return table


def share(frac: float, n: int) -> int:
    """round(frac * n), halves up (Python's round() sends halves to even)."""
    return math.floor(frac * n + 0.5)


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split `total` into integers proportional to `weights`, summing to `total` exactly.

    Largest remainder (Hamilton): every key gets the floor of its quota, and the units left go
    to the largest fractional parts, ties to the first key in name order.
    """
    exact = {key: Fraction(w) for key, w in weights.items()}  # no float error in the floors
    weight_sum = sum(exact.values())
    if weight_sum <= 0:
        return {key: 0 for key in weights}
    quotas = {key: total * w / weight_sum for key, w in exact.items()}
    counts = {key: math.floor(q) for key, q in quotas.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - counts[key]), key))
    for key in by_remainder[:left]:
        counts[key] += 1
    return counts


def shuffled(facts: Iterable[Fact], key: str) -> list[Fact]:
    """The facts in a seeded order that depends only on `key` and their ids."""
    order = sorted(facts, key=lambda f: f.id)
    random.Random(key).shuffle(order)
    return order


def stratified(facts: Sequence[Fact], n: int, key: str) -> list[Fact]:
    """n facts drawn within each relation, relation counts proportional to the facts'."""
    groups = by_relation(facts)
    quotas = apportion(n, {r: len(g) for r, g in groups.items()})
    return [f for r, g in groups.items() for f in shuffled(g, f"{key}:{r}")[: quotas[r]]]


def relation_sizes(
    table: Mapping[str, Mapping[Category, list[Fact]]], size: int | None
) -> dict[str, int]:
    """Examples per relation, the same for every variant of a study (so the relation mix is).

    size None: per relation the count of its smallest category (Gekhman et al.'s |D|), which every
    single-category variant can fill. size N: N split over relations in proportion to their
    probed facts (the pool's relation mix), by largest remainder.
    """
    if size is None:
        sizes = {r: min(len(facts) for facts in cats.values()) for r, cats in table.items()}
        if sum(sizes.values()) == 0:
            counts = "; ".join(f"{r}: {category_counts(cats)}" for r, cats in table.items())
            raise KnowshiftError(
                "no relation has facts in all four categories, so the default size (per "
                f"relation its smallest category, summed) is 0 ({counts}); pass --size"
            )
        return sizes
    available = {r: sum(len(f) for f in cats.values()) for r, cats in table.items()}
    if size > sum(available.values()):
        raise KnowshiftError(
            f"--size {size} is more than the {sum(available.values())} probed facts "
            f"({counts_text(available)}); lower --size"
        )
    return apportion(size, available)


def category_counts(categories: Mapping[Category, list[Fact]]) -> str:
    return ", ".join(f"{c.value} {len(facts)}" for c, facts in categories.items())


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items())


def draw_by_relation(
    relations: Iterable[str],
    groups: Sequence[tuple[str, Mapping[str, list[Fact]], Mapping[str, int]]],
    results: Mapping[str, ProbeResult],
    spec: BaseSpec,
    key: str,
) -> list[Example]:
    """Per relation and per (name, pool, counts) group, the first counts[relation] facts of the
    pool in the seeded order of f"{key}:{relation}:{name}", as examples.

    The order ignores the counts, so a smaller draw is a prefix of a larger one."""
    examples = []
    for relation in relations:
        for name, pool, counts in groups:
            drawn = shuffled(pool[relation], f"{key}:{relation}:{name}")
            examples += [make_example(f, results[f.id], spec) for f in drawn[: counts[relation]]]
    return examples


def require(
    needed: Mapping[str, int], available: Mapping[str, int], what: str, lower: Sequence[str]
) -> None:
    """Raise, naming every short relation and the spec fields to lower, when a draw asks too much.

    `lower` holds spec field names; an entry starting with "+" is a field to raise instead.
    """
    short = [r for r in needed if needed[r] > available.get(r, 0)]
    if not short:
        return
    gaps = "; ".join(f"{r} needs {needed[r]}, has {available.get(r, 0)}" for r in short)
    fixes = " or ".join(
        f"raise {flag(name[1:])}" if name.startswith("+") else f"lower {flag(name)}"
        for name in lower
    )
    raise KnowshiftError(
        f"not enough {what}: {gaps} (available per relation: {counts_text(available)}); {fixes}"
    )


def count_by(examples: Iterable[Example], attribute: str) -> dict[str, int]:
    """Examples per value of one attribute (None counts as "none"), keys in name order."""
    counts = Counter(str(getattr(e, attribute) if getattr(e, attribute) is not None else "none")
                     for e in examples)  # fmt: skip
    return dict(sorted(counts.items()))
