"""Frozen records that every stage hands to the next.

Stages exchange these (never live models or dicts with magic keys), so any intermediate result
can be stored, compared and tested without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Split(StrEnum):
    TRAIN = "train"
    DEV = "dev"
    TEST = "test"


class Category(StrEnum):
    """SliCK knowledge categories (METHODS A)."""

    HIGHLY_KNOWN = "HighlyKnown"
    MAYBE_KNOWN = "MaybeKnown"
    WEAKLY_KNOWN = "WeaklyKnown"
    UNKNOWN = "Unknown"


CATEGORIES: tuple[Category, ...] = tuple(Category)


@dataclass(frozen=True)
class Relation:
    """A relation with its question paraphrases and declarative completion templates.

    Templates use `{subject}` as the only placeholder. `question_templates[0]` is the canonical
    question used for probing; the others are paraphrases. `completion_templates` are for
    mastery probing ("{subject} is the capital of").
    """

    name: str
    question_templates: tuple[str, ...]
    completion_templates: tuple[str, ...] = ()
    description: str = ""

    def question(self, subject: str, template: int = 0) -> str:
        return self.question_templates[template].format(subject=subject)


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, object) fact with its question and gold answers.

    `answers` holds every accepted surface form of the single correct object (aliases); the
    first is the canonical one. `multi_answer` flags facts whose source lists more than one
    distinct correct object (METHODS B drops those from training sets).
    """

    id: str
    relation: str
    subject: str
    answers: tuple[str, ...]
    question: str
    split: Split
    popularity: float | None = None
    multi_answer: bool = False

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class FactSet:
    """Facts plus the relations they use, as one source produced them."""

    source: str
    relations: dict[str, Relation]
    facts: tuple[Fact, ...]

    def by_split(self, split: Split | str) -> tuple[Fact, ...]:
        split = Split(split)
        return tuple(f for f in self.facts if f.split == split)

    def by_relation(self, relation: str, split: Split | str | None = None) -> tuple[Fact, ...]:
        return tuple(
            f
            for f in self.facts
            if f.relation == relation and (split is None or f.split == Split(split))
        )


@dataclass(frozen=True)
class ProbeResult:
    """What one estimator found out about one fact; the same record for every estimator.

    p_greedy: share of exemplar sets whose greedy answer is correct, P(T=0) (None for mastery).
    p_sampled: share of temperature samples that are correct, P(T>0) (exact: its expectation;
        mastery: R, the share of completions that contain a gold alias).
    category: the reported category (for `exact`, the most likely one; None for mastery).
    category_probs: for `exact`, the probability that the sampling procedure would report each
        category, in CATEGORIES order; for sampling estimators, one-hot.
    mastery_level: 0-4 for the `mastery` estimator, else None.
    samples: sampled answers where answers were sampled (greedy answers first).
    """

    fact_id: str
    estimator: str
    params_key: str
    model_fingerprint: str
    p_greedy: float | None
    p_sampled: float
    category: Category | None
    category_probs: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mastery_level: int | None = None
    samples: tuple[str, ...] = field(default=(), repr=False)

    @property
    def category_prob(self) -> float | None:
        if self.category is None:
            return None
        return self.category_probs[CATEGORIES.index(self.category)]


@dataclass(frozen=True)
class Example:
    """One fine-tuning example (prompt + completion) and where it came from.

    kind: how the completion was made: "gold" (the fact's canonical answer), "idk" (the refusal
        string), "paraphrase" (gold answer, question asked with another template), "addition"
        (a HighlyKnown fact added to a pack), "self-aligned" (the model's own majority answer).
    category: the SliCK category of the source fact (None for mastery-probed facts).
    question_template: index of the relation's question template the question uses (0: the
        fact's own question).
    """

    fact_id: str
    relation: str
    question: str
    answer: str
    prompt: str
    completion: str
    kind: str
    category: str | None = None
    mastery_level: int | None = None
    question_template: int = 0


@dataclass(frozen=True)
class Manifest:
    """What a fine-tuning set holds and how it was made: recipe, spec, seed, counts, sources.

    Counts are keyed by category value ("none" for facts without one), relation, kind and mastery
    level (as a string). `examples_digest` is the sha256 of the written train.jsonl.
    """

    recipe: str
    spec: dict[str, Any]
    seed: int
    n_examples: int
    counts_by_category: dict[str, int]
    counts_by_relation: dict[str, int]
    counts_by_kind: dict[str, int]
    counts_by_relation_category: dict[str, dict[str, int]]
    counts_by_mastery_level: dict[str, int]
    facts_source: str
    estimator: str
    params_key: str
    model_fingerprint: str
    probe_params: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    examples_digest: str = ""
    knowshift_version: str = ""


@dataclass(frozen=True)
class TrainingSet:
    """A built fine-tuning set: its examples in order, and its manifest."""

    examples: tuple[Example, ...]
    manifest: Manifest
