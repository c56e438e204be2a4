"""From raw source rows to a clean FactSet: merge, split, filter, name.

Every source reader produces `RawFact` rows; `assemble` turns them into facts the same way for
all sources:

1. Merge rows of one relation and subject (and given split). Rows whose answer sets share a
   normalised form name the same object and become one fact with the union of their aliases;
   rows naming different objects become one fact with all answers and `multi_answer=True`.
2. Split by subject where the source gives no split: within each relation, subjects are ranked
   by a hash of their normalised form (blake2b, so the same on every machine and run), the first
   20% go to test, the next 10% (at least 10, or a quarter of a small relation) to dev, the rest
   to train.
3. Entity-leakage filter, per relation, on train only: drop a train fact whose subject is a test
   subject or a test object of that relation, or whose object is a test subject.
   Objects that are answer classes shared by many facts (countries, continents, currencies,
   languages) are necessarily shared between train and test; only subject-identity leakage
   is removed.
4. Ids: "{relation}:{slug of subject}", with a short hash added where the slug is empty or
   two facts of a relation would share it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from knowshift.errors import KnowshiftError
from knowshift.facts.normalize import normalize_answer
from knowshift.types import Fact, FactSet, Relation, Split

TEST_FRACTION = 0.2
DEV_FRACTION = 0.1
MIN_DEV = 10  # few-shot prompts draw 4 exemplars from dev, in 10 fixed sets (METHODS A)


@dataclass(frozen=True)
class RawFact:
    """One row of a source, before merging. `question` None: ask with template 0."""

    relation: str
    subject: str
    answers: tuple[str, ...]
    question: str | None = None
    popularity: float | None = None
    split: Split | None = None
    id: str | None = None


@dataclass
class _Merged:
    """A merged row with its normalised subject and objects, computed once."""

    row: RawFact
    subject_key: str
    object_keys: frozenset[str]
    multi: bool
    split: Split | None


def assemble(source: str, relations: Mapping[str, Relation], rows: Iterable[RawFact]) -> FactSet:
    """Merge, split, filter and name the rows of one source (see the module docstring)."""
    by_relation: dict[str, list[_Merged]] = defaultdict(list)
    for merged in _merge(rows):
        by_relation[merged.row.relation].append(merged)
    kept = []
    for group in by_relation.values():
        _assign_splits([m for m in group if m.split is None])
        kept.extend(_drop_leaks(group))
    facts = _name(kept, relations)
    duplicates = [i for i, n in Counter(fact.id for fact in facts).items() if n > 1]
    if duplicates:
        raise KnowshiftError(
            f"{source}: duplicate fact id {duplicates[0]!r}; give every row a unique id"
        )
    return FactSet(source=source, relations=dict(relations), facts=facts)


def _merge(rows: Iterable[RawFact]) -> list[_Merged]:
    """One row per (relation, subject, given split), with a multi-answer flag."""
    groups: dict[tuple[str, str, Split | None], list[RawFact]] = defaultdict(list)
    for row in rows:
        groups[(row.relation, normalize_answer(row.subject), row.split)].append(row)
    merged = []
    for (_, subject_key, split), group in groups.items():
        objects = _cluster_objects([row.answers for row in group])
        answers = tuple(dict.fromkeys(a for _, aliases in objects for a in aliases))
        popularities = [row.popularity for row in group if row.popularity is not None]
        first = group[0]
        row = RawFact(
            relation=first.relation,
            subject=first.subject,
            answers=answers,
            question=first.question,
            popularity=max(popularities) if popularities else None,
            split=split,
            id=first.id,
        )
        keys = frozenset().union(*(keys for keys, _ in objects))
        merged.append(_Merged(row, subject_key, keys, len(objects) > 1, split))
    return merged


def _cluster_objects(answer_lists: Sequence[tuple[str, ...]]) -> list[tuple[set[str], list[str]]]:
    """Group alias lists that share a normalised form: each group (keys, aliases) is one object."""
    clusters: list[tuple[set[str], list[str]]] = []
    for answers in answer_lists:
        keys, aliases = {normalize_answer(a) for a in answers}, []
        for cluster in [c for c in clusters if c[0] & keys]:
            keys |= cluster[0]
            aliases.extend(cluster[1])
            clusters.remove(cluster)
        aliases.extend(answers)
        clusters.append((keys, list(dict.fromkeys(aliases))))
    return clusters


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def split_sizes(n_subjects: int) -> tuple[int, int]:
    """(n_test, n_dev) for a relation with `n_subjects` subjects."""
    n_test = round(TEST_FRACTION * n_subjects)
    n_dev = max(round(DEV_FRACTION * n_subjects), min(MIN_DEV, math.ceil(n_subjects / 4)))
    return n_test, min(n_dev, n_subjects - n_test)


def _assign_splits(unsplit: list[_Merged]) -> None:
    """Split one relation's facts by the hash rank of their normalised subjects."""
    ranked = sorted(unsplit, key=lambda m: (stable_hash(m.subject_key), m.subject_key))
    n_test, n_dev = split_sizes(len(ranked))
    for rank, merged in enumerate(ranked):
        if rank < n_test:
            merged.split = Split.TEST
        else:
            merged.split = Split.DEV if rank < n_test + n_dev else Split.TRAIN


def _drop_leaks(group: list[_Merged]) -> list[_Merged]:
    """Drop train facts of one relation whose entities appear in its test facts."""
    test = [m for m in group if m.split == Split.TEST]
    test_subjects = {m.subject_key for m in test}
    test_entities = test_subjects.union(*(m.object_keys for m in test))
    return [
        m
        for m in group
        if m.split != Split.TRAIN
        or not (m.subject_key in test_entities or m.object_keys & test_subjects)
    ]


def slug(text: str) -> str:
    """A lower-case ASCII slug of the normalised text ("São Paulo" -> "sao-paulo")."""
    return _slug_of_key(normalize_answer(text))


def _slug_of_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key).strip("-")


def _name(kept: list[_Merged], relations: Mapping[str, Relation]) -> tuple[Fact, ...]:
    """Turn merged rows into Facts with stable ids, sorted by relation then id."""
    slugs = [_slug_of_key(m.subject_key) for m in kept]
    clashes = Counter((m.row.relation, s) for m, s in zip(kept, slugs, strict=True) if not m.row.id)
    facts = []
    for merged, name in zip(kept, slugs, strict=True):
        row, split = merged.row, merged.split
        assert split is not None
        facts.append(
            Fact(
                id=row.id or _fact_id(row, name, split, clashes[(row.relation, name)] > 1),
                relation=row.relation,
                subject=row.subject,
                answers=row.answers,
                question=row.question or relations[row.relation].question(row.subject),
                split=split,
                popularity=row.popularity,
                multi_answer=merged.multi,
            )
        )
    order = {name: index for index, name in enumerate(relations)}
    return tuple(sorted(facts, key=lambda f: (order[f.relation], f.id)))


def _fact_id(row: RawFact, name: str, split: Split, clash: bool) -> str:
    """ "{relation}:{slug}", plus a short hash where the slug is empty or not unique."""
    if name and not clash:
        return f"{row.relation}:{name}"
    digest = f"{stable_hash(f'{split}|{row.subject}') % 16**6:06x}"
    return f"{row.relation}:{name}-{digest}" if name else f"{row.relation}:{digest}"
