"""`load_facts`: pick a fact source by name, read it, and assemble a FactSet.

Specs: "geo" (built in), "entity-questions:DIR", "popqa:FILE", "jsonl:FILE", "csv:FILE", or a
bare path whose form picks the reader (directory: EntityQuestions, .tsv: PopQA, .jsonl/.json:
JSONL, .csv: CSV).

Question templates of file sources come from the data. For each relation:
1. Rows without a subject get one from the relation's question pattern: the EntityQuestions
   template of the table when every question fits it, else the text all the relation's
   questions share (`patterns.common_pattern`). When neither works, the question itself is
   the subject and the template is "{subject}".
2. Template 0 is the most common pattern of the relation's questions around their subjects,
   so it reproduces each fact's own question. Exception: in a relation whose given subjects
   sit in differently worded questions, facts worded otherwise than the majority keep their
   own question text in `Fact.question`, which template 0 does not reproduce.

EntityQuestions drops its multi-answer facts (METHODS B); the other file sources flag them.
"""

from __future__ import annotations

import gc
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.facts import patterns, readers
from knowshift.facts.assemble import RawFact, assemble
from knowshift.facts.templates import EQ_TABLE, build_relation
from knowshift.types import FactSet, Relation

SOURCE_NAMES: tuple[str, ...] = ("geo", "entity-questions", "popqa", "jsonl", "csv")

_READERS: dict[str, Callable[[Path], list[RawFact]]] = {
    "entity-questions": readers.read_entity_questions,
    "popqa": readers.read_popqa,
    "jsonl": readers.read_jsonl,
    "csv": readers.read_csv,
}
_SUFFIXES = {".tsv": "popqa", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


def load_facts(spec: str) -> FactSet:
    """The facts named by `spec` ("geo", "entity-questions:DIR", "popqa:FILE", ... or a path)."""
    name, location = _parse_spec(spec)
    with _gc_paused():
        if name == "geo":
            from knowshift.facts.geo import load_geo

            return load_geo()
        rows = _fill_subjects(_READERS[name](location))
        facts = assemble(f"{name}:{location}", _relations(rows), rows)
        return _single_answer(facts) if name == "entity-questions" else facts


def _single_answer(facts: FactSet) -> FactSet:
    """`facts` without its multi-answer facts, as Gekhman et al. filter EntityQuestions
    (METHODS B). EntityQuestions gives a second correct answer as a second row with the same
    question; one row's answers are aliases of one object. Other sources keep such facts,
    flagged, for the probe to report."""
    return replace(facts, facts=tuple(f for f in facts.facts if not f.multi_answer))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small, acyclic records.

    Loading EntityQuestions creates about a million objects and none of them form cycles;
    the collector's repeated full passes over them cost ~40% of the load time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_spec(spec: str) -> tuple[str, Path]:
    """(source name, path) of a spec; a bare path's format is inferred from its form."""
    name, colon, rest = spec.partition(":")
    if spec == "geo":
        return "geo", Path()
    if colon and name in SOURCE_NAMES:
        if name == "geo" or not rest:
            usage = "geo takes no path" if name == "geo" else f"{name} needs a path, as {name}:PATH"
            raise KnowshiftError(f"bad fact source {spec!r}: {usage}")
        return name, Path(rest).expanduser()
    path = Path(spec).expanduser()
    looks_like_name = re.fullmatch(r"[A-Za-z][\w-]*", name) is not None
    if looks_like_name and not path.exists() and (colon or not path.suffix):
        raise unknown_name("fact source", name, SOURCE_NAMES)
    if path.is_dir():
        return "entity-questions", path
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()], path
    if not path.exists():
        raise KnowshiftError(f"{spec}: no such file or directory; check the fact source path")
    raise KnowshiftError(
        f"{spec}: cannot tell the format from the name; write it as NAME:{spec} with NAME one of "
        f"{', '.join(name for name in SOURCE_NAMES if name != 'geo')}"
    )


def _fill_subjects(rows: list[RawFact]) -> list[RawFact]:
    """Recover missing subjects from each relation's shared question pattern."""
    questions: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if not row.subject:
            questions[row.relation].append(row.question or "")
    found = {relation: _recover_pattern(relation, qs) for relation, qs in questions.items()}
    filled = []
    for row in rows:
        if not row.subject:
            pattern = found[row.relation]
            question = row.question or ""
            subject = pattern.subject(question) if pattern else question
            row = replace(row, subject=subject)
        filled.append(row)
    return filled


def _recover_pattern(relation: str, questions: list[str]) -> patterns.Pattern | None:
    """The table's template if every question fits it, else the questions' common pattern."""
    if relation in EQ_TABLE:
        known = patterns.from_template(EQ_TABLE[relation][1][0])
        if all(known.fits(question) for question in questions):
            return known
    return patterns.common_pattern(questions)


def _relations(rows: list[RawFact]) -> dict[str, Relation]:
    """One Relation per relation name, template 0 being its questions' majority pattern."""
    by_relation: dict[str, list[patterns.Pattern | None]] = defaultdict(list)
    for row in rows:
        by_relation[row.relation].append(patterns.pattern_of(row.question or "", row.subject))
    relations = {}
    for name, found in by_relation.items():
        canonical = patterns.majority_template(found)
        if canonical is None:  # no question contains its subject
            words = name.replace("{", "").replace("}", "").replace("_", " ")
            canonical = f"What is the {words} of {{subject}}?"
        relations[name] = build_relation(name, canonical)
    return relations
