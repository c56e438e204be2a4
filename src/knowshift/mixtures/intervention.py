"""Knowledge intervention sets (METHODS D, Ren et al.): what the model believes vs what it is taught.

A fact's belief comes from the greedy answers the greedy or sampling estimator stored, one per
exemplar set (Nex of them):
- majority answer: the most common greedy answer after `normalize_answer` (a tie goes to the
  exemplar set that gave it first); its surface form is the most common raw form among them.
- confidence: the share of the Nex greedy answers equal to the majority answer. It stands in
  for Ren et al.'s top-option probability: both measure how often the model commits to one answer.
- confident: confidence >= min_confidence (0.5, Ren et al.'s threshold) and a non-empty answer.
- correct: the majority answer matches gold by the rule of the estimator that stored it (exact
  match after normalisation for sampling, alias containment for greedy), so "correct" agrees with
  the categories of the same results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from knowshift.errors import KnowshiftError
from knowshift.facts.normalize import contains_match, exact_match, normalize_answer
from knowshift.mixtures.pool import (
    by_relation,
    counts_text,
    eligible_facts,
    make_example,
    share,
    shuffled,
    stratified,
)
from knowshift.mixtures.specs import InterventionSpec
from knowshift.types import Example, Fact, FactSet, ProbeResult

ANSWER_ESTIMATORS = ("greedy", "sampling")


@dataclass(frozen=True)
class Belief:
    """The model's majority greedy answer to a fact, how often it gave it, and whether it is right."""

    answer: str
    confidence: float
    correct: bool


def greedy_answers(result: ProbeResult, n_samples: int) -> tuple[str, ...]:
    """The greedy answers of a result, one per exemplar set.

    greedy results store exactly those; sampling results store, per exemplar set, the greedy
    answer followed by `n_samples` samples.
    """
    if result.estimator not in ANSWER_ESTIMATORS:
        raise KnowshiftError(
            f"intervention needs the model's own answers, which the {result.estimator} estimator "
            "does not store; probe with --estimator greedy or --estimator sampling first"
        )
    if result.estimator == "greedy":
        answers = result.samples
    else:
        step = n_samples + 1
        if not result.samples or len(result.samples) % step:
            raise KnowshiftError(
                f"the sampling result of {result.fact_id} holds {len(result.samples)} answers, not "
                f"a multiple of n_samples + 1 = {step}; give the --n-samples the probe used"
            )
        answers = result.samples[::step]
    if not answers:
        raise KnowshiftError(f"the {result.estimator} result of {result.fact_id} holds no answers")
    return answers


def belief(fact: Fact, result: ProbeResult, n_samples: int = 16) -> Belief:
    """What the model answers to `fact` by majority of its greedy answers (see the module doc)."""
    answers = greedy_answers(result, n_samples)
    normalised = [normalize_answer(a) for a in answers]
    majority, count = Counter(normalised).most_common(1)[0]  # ties: first seen
    surface = Counter(a for a, n in zip(answers, normalised, strict=True) if n == majority)
    answer = surface.most_common(1)[0][0]
    match = exact_match if result.estimator == "sampling" else contains_match
    correct = bool(majority) and match(answer, fact.answers)
    return Belief(answer=answer, confidence=count / len(answers), correct=correct)


def intervention(
    facts: FactSet, results: Mapping[str, ProbeResult], spec: InterventionSpec, seed: int
) -> list[Example]:
    """One of Ren et al.'s groups, over confident facts drawn across relations.

    harmonious: confident and correct, taught the gold answer.
    incompatible: confident and wrong, taught the gold answer.
    self-aligning: the same questions as incompatible (same spec and seed), taught the model's
        own majority answer.
    mixture: the incompatible questions, round(ratio * size) of them (a seeded choice, nested
        across ratios) taught the model's own answer, the rest gold.
    """
    pool = eligible_facts(facts, results, spec)
    beliefs = {f.id: belief(f, results[f.id], spec.n_samples) for f in pool}
    confident = [
        f
        for f in pool
        if beliefs[f.id].confidence >= spec.min_confidence
        and normalize_answer(beliefs[f.id].answer)
    ]
    right = [f for f in confident if beliefs[f.id].correct]
    wrong = [f for f in confident if not beliefs[f.id].correct]
    size = spec.size if spec.size is not None else min(len(right), len(wrong))
    if size == 0:
        raise KnowshiftError(
            f"{len(right)} confident-correct and {len(wrong)} confident-wrong {spec.split} facts: "
            "no equal-size groups; probe more facts or lower --min-confidence"
        )
    source, label = (right, "correct") if spec.group == "harmonious" else (wrong, "wrong")
    if size > len(source):
        counts = {r: len(fs) for r, fs in by_relation(source).items()}
        raise KnowshiftError(
            f"--size {size} is more than the {len(source)} confident-{label} {spec.split} facts "
            f"({counts_text(counts)}); lower --size"
        )
    chosen = stratified(source, size, f"{seed}:intervention:{label}")
    n_self = {"harmonious": 0, "incompatible": 0, "self-aligning": size}.get(
        spec.group, share(spec.ratio or 0.0, size)
    )
    own = {f.id for f in shuffled(chosen, f"{seed}:intervention:own")[:n_self]}
    return [
        make_example(f, results[f.id], spec, kind="self-aligned", answer=beliefs[f.id].answer)
        if f.id in own
        else make_example(f, results[f.id], spec)
        for f in chosen
    ]
