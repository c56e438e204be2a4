"""Sets of controlled category composition (METHODS B) and mastery level (METHODS C).

Every variant of one study has the same examples per relation (`relation_sizes`): only what
fills them changes, so the relation mix never confounds the comparison. "Known" is every category
but Unknown (HighlyKnown + MaybeKnown + WeaklyKnown), as in Gekhman et al.
"""

from __future__ import annotations

from collections.abc import Mapping

from knowshift.errors import KnowshiftError
from knowshift.mixtures.pool import (
    apportion,
    by_relation,
    by_relation_category,
    draw_by_relation,
    eligible_facts,
    make_example,
    relation_sizes,
    require,
    share,
    shuffled,
)
from knowshift.mixtures.specs import NATURAL, CategorySpec, MasterySpec, UnknownRatioSpec
from knowshift.types import Category, Example, FactSet, ProbeResult

KNOWN = (Category.HIGHLY_KNOWN, Category.MAYBE_KNOWN, Category.WEAKLY_KNOWN)


def unknown_ratio(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: UnknownRatioSpec, seed: int
) -> list[Example]:
    """Share `frac_unknown` of Unknown facts, the rest Known, the share applied within each relation.

    The Unknown total is round(frac_unknown * size), split over relations in proportion to their
    sizes by largest remainder, so the total is exact and each relation is within one example of
    its exact share. Known facts keep their natural HK/MK/WK mix. Examples come relation by
    relation, Unknown first.
    """
    table = by_relation_category(eligible_facts(facts, results, spec), results)
    sizes = relation_sizes(table, spec.size)
    n_unknown = apportion(share(spec.frac_unknown, sum(sizes.values())), sizes)
    unknown = {r: cats[Category.UNKNOWN] for r, cats in table.items()}
    known = {r: [f for c in KNOWN for f in cats[c]] for r, cats in table.items()}
    n_known = {r: sizes[r] - n_unknown[r] for r in sizes}
    require(n_unknown, _lengths(unknown), "Unknown facts", ["size", "frac_unknown"])
    require(n_known, _lengths(known), "Known facts", ["size"])
    # The draw order ignores frac_unknown, so a lower share takes a prefix of a higher one.
    groups = (("unknown", unknown, n_unknown), ("known", known, n_known))
    return draw_by_relation(table, groups, results, spec, f"{seed}:unknown-ratio")


def known_only(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: UnknownRatioSpec, seed: int
) -> list[Example]:
    """The unknown-ratio set of the same spec and seed without its Unknown examples (D_Known)."""
    examples = unknown_ratio(facts, results, spec, seed)
    return [e for e in examples if e.category != Category.UNKNOWN.value]


def category_set(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: CategorySpec, seed: int
) -> list[Example]:
    """Every example from one category, or the natural mix, with the per-relation sizes of
    unknown-ratio (so D_HighlyKnown ... D_Natural and the X% variants have the same size)."""
    table = by_relation_category(eligible_facts(facts, results, spec), results)
    sizes = relation_sizes(table, spec.size)
    if spec.category == NATURAL:
        pool = {r: [f for fs in cats.values() for f in fs] for r, cats in table.items()}
    else:
        pool = {r: cats[Category(spec.category)] for r, cats in table.items()}
    require(sizes, _lengths(pool), f"{spec.category} facts", ["size"])
    examples = []
    for relation, relation_pool in pool.items():
        drawn = shuffled(relation_pool, f"{seed}:category:{relation}:{spec.category}")
        examples += [make_example(f, results[f.id], spec) for f in drawn[: sizes[relation]]]
    return examples


def mastery_set(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: MasterySpec, seed: int
) -> list[Example]:
    """`size` facts of one mastery level, equally many per relation (Ye et al.).

    With a size that does not divide evenly, the extra examples go to the relations first in
    name order. The relations are every relation of the pool (or `relations`).
    """
    pool = [
        f for f in eligible_facts(facts, results, spec) if results[f.id].mastery_level is not None
    ]
    if not pool:
        raise KnowshiftError(
            "the probe results have no mastery levels; probe with --estimator mastery first"
        )
    groups = by_relation(pool)
    at_level = {
        r: [f for f in fs if results[f.id].mastery_level == spec.mastery_level]
        for r, fs in groups.items()
    }
    available = _lengths(at_level)
    if spec.size is None:
        fewest = min(available.values())
        if fewest == 0:
            empty = ", ".join(r for r, n in available.items() if n == 0)
            raise KnowshiftError(
                f"no level-{spec.mastery_level} facts in {empty}, so no balanced set exists; "
                "leave those out with --relations or choose another --mastery-level"
            )
        needed = {r: fewest for r in groups}
    else:
        needed = apportion(spec.size, {r: 1.0 for r in groups})
    require(needed, available, f"level-{spec.mastery_level} facts", ["size"])
    examples = []
    for relation, relation_pool in at_level.items():
        drawn = shuffled(relation_pool, f"{seed}:mastery:{relation}:{spec.mastery_level}")
        examples += [make_example(f, results[f.id], spec) for f in drawn[: needed[relation]]]
    return examples


def _lengths(groups: Mapping[str, list]) -> dict[str, int]:
    return {key: len(value) for key, value in groups.items()}
