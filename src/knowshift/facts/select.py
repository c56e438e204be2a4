"""Choose which facts of a source to work on."""

from __future__ import annotations

from collections.abc import Sequence

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.facts.assemble import stable_hash
from knowshift.types import Fact, FactSet, Split


def select_facts(
    facts: FactSet,
    relations: Sequence[str] | None = None,
    split: str = "test",
    limit: int | None = None,
) -> list[Fact]:
    """Facts of the given relations and split ("all" for every split), spread over relations.

    With `limit`, facts are taken round-robin over relations, each relation in a fixed
    pseudo-random order, so a small limit still covers every relation and is reproducible.
    """
    if split != "all" and split not in {s.value for s in Split}:
        raise unknown_name("split", split, [*(s.value for s in Split), "all"])
    for name in relations or ():
        if name not in facts.relations:
            raise unknown_name(f"relation in {facts.source}", name, facts.relations)
    if limit is not None and limit < 1:
        raise KnowshiftError("--limit must be at least 1")
    wanted = set(relations or facts.relations)
    chosen = [
        f for f in facts.facts if f.relation in wanted and (split == "all" or f.split == split)
    ]
    if not chosen:
        raise KnowshiftError(f"no facts in {facts.source} for split {split!r}; try --split all")
    if limit is None or limit >= len(chosen):
        return chosen
    queues: dict[str, list[Fact]] = {}
    for fact in sorted(chosen, key=lambda f: stable_hash(f.id)):
        queues.setdefault(fact.relation, []).append(fact)
    picked: list[Fact] = []
    while len(picked) < limit:
        for name in sorted(queues):
            if queues[name] and len(picked) < limit:
                picked.append(queues[name].pop(0))
    return picked
