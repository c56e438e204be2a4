"""Sets for packing new facts into an adapter (METHODS E): packs, and entity-skewed sets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

from knowshift.errors import KnowshiftError
from knowshift.facts.normalize import normalize_answer
from knowshift.mixtures.pool import (
    apportion,
    by_relation_category,
    counts_text,
    draw_by_relation,
    eligible_facts,
    make_example,
    relation_sizes,
    require,
    share,
    shuffled,
    stratified,
)
from knowshift.mixtures.specs import NATURAL, EntityBiasSpec, PackSpec
from knowshift.types import Category, Example, Fact, FactSet, ProbeResult


def pack(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: PackSpec, seed: int
) -> list[Example]:
    """n_unknown Unknown facts, each followed by its k_additions additions: n * (k + 1) examples.

    The Unknown facts are drawn across relations in proportion to their Unknown counts.
    paraphrase: the same fact asked with the relation's other question templates (1, 2, ...,
        cycling when k exceeds them, so paraphrases repeat).
    highly-known: k HighlyKnown facts of the pool each, drawn without replacement over the whole
        pack; only once every HighlyKnown fact is used are they used again.
    """
    table = by_relation_category(eligible_facts(facts, results, spec), results)
    unknown_by_relation = {r: cats[Category.UNKNOWN] for r, cats in table.items()}
    unknown = [f for fs in unknown_by_relation.values() for f in fs]
    if spec.n_unknown > len(unknown):
        counts = {r: len(fs) for r, fs in unknown_by_relation.items()}
        raise KnowshiftError(
            f"--n-unknown {spec.n_unknown} is more than the {len(unknown)} Unknown {spec.split} "
            f"facts ({counts_text(counts)}); lower --n-unknown"
        )
    chosen = stratified(unknown, spec.n_unknown, f"{seed}:pack:unknown")
    added: list[Fact] = []
    if spec.addition == "highly-known":
        known = [f for cats in table.values() for f in cats[Category.HIGHLY_KNOWN]]
        added = _highly_known(known, len(chosen) * spec.k_additions, f"{seed}:pack:highly-known")
    examples = []
    for index, fact in enumerate(chosen):
        examples.append(make_example(fact, results[fact.id], spec))
        if spec.addition == "paraphrase":
            examples += _paraphrases(facts, fact, results[fact.id], spec)
        else:
            batch = added[index * spec.k_additions : (index + 1) * spec.k_additions]
            examples += [make_example(f, results[f.id], spec, kind="addition") for f in batch]
    return examples


def _paraphrases(facts: FactSet, fact: Fact, result: ProbeResult, spec: PackSpec) -> list[Example]:
    """k examples of `fact` asked with question templates 1, 2, ... (cycling)."""
    relation = facts.relations[fact.relation]
    n_paraphrases = len(relation.question_templates) - 1
    if spec.k_additions and n_paraphrases < 1:
        raise KnowshiftError(
            f"relation {relation.name} has no paraphrase templates; use --addition highly-known"
        )
    examples = []
    for j in range(spec.k_additions):
        template = 1 + j % n_paraphrases
        question = relation.question(fact.subject, template)
        examples.append(
            make_example(
                fact, result, spec, kind="paraphrase", question=question, question_template=template
            )
        )
    return examples


def _highly_known(known: Sequence[Fact], n: int, key: str) -> list[Fact]:
    """n HighlyKnown facts in a seeded order, reusing facts only once all have been used."""
    if n and not known:
        raise KnowshiftError(
            "no HighlyKnown facts to add to the pack; use --addition paraphrase or --k-additions 0"
        )
    order = shuffled(known, key)
    return [order[i % len(order)] for i in range(n)]


def entity_bias(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: EntityBiasSpec, seed: int
) -> list[Example]:
    """The per-relation sizes of unknown-ratio, with answers skewed towards a few objects.

    Per relation, the `n_objects` most frequent gold answers of the pool (after normalisation;
    ties broken by a seeded order) are its top objects. Share `frac_biased` of the examples
    (round(frac_biased * size) in all, split over relations by largest remainder) are facts
    answered by a top object; the rest are drawn uniformly from the facts with other answers, so
    the biased share is exact.
    """
    table = by_relation_category(eligible_facts(facts, results, spec), results)
    sizes = relation_sizes(table, spec.size)
    n_biased = apportion(share(spec.frac_biased, sum(sizes.values())), sizes)
    biased: dict[str, list[Fact]] = {}
    other: dict[str, list[Fact]] = {}
    for relation, cats in table.items():
        if spec.category == NATURAL:
            pool = [f for fs in cats.values() for f in fs]
        else:
            pool = cats[Category(spec.category)]
        top = top_objects(pool, spec.n_objects, f"{seed}:entity-bias:{relation}:objects")
        biased[relation] = [f for f in pool if normalize_answer(f.answer) in top]
        other[relation] = [f for f in pool if normalize_answer(f.answer) not in top]
    n_other = {r: sizes[r] - n_biased[r] for r in sizes}
    require(
        n_biased,
        {r: len(fs) for r, fs in biased.items()},
        f"facts answered by their relation's top {spec.n_objects} objects",
        ["frac_biased", "size", "+n_objects"],
    )
    require(n_other, {r: len(fs) for r, fs in other.items()}, "facts with other answers",
            ["size", "+frac_biased"])  # fmt: skip
    groups = (("biased", biased, n_biased), ("other", other, n_other))
    return draw_by_relation(table, groups, results, spec, f"{seed}:entity-bias")


def top_objects(pool: Sequence[Fact], n_objects: int, key: str) -> set[str]:
    """The n most frequent normalised gold answers of the pool; ties in a seeded order."""
    counts = Counter(normalize_answer(f.answer) for f in pool)
    order = sorted(counts)
    random.Random(key).shuffle(order)
    order.sort(key=lambda answer: -counts[answer])  # stable: ties keep the seeded order
    return set(order[:n_objects])
