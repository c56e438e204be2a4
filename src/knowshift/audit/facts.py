"""A fine-tuning file's short-answer examples as the facts of one relation, and which of them may
serve as few-shot exemplars for the others.

SliCK (METHODS A) asks every fact with exemplars from the dev split of its relation; a fact is
never shown its own answer because dev and test hold different subjects. A user's file has no
such split, so the examples are their own exemplar pool (the seeded exemplar sets are shared by
all its examples, as in SliCK), and three rules keep any answer from being given away:

1. An example is never its own exemplar: the probe's exemplar sets hold k + 1 facts, and a fact
   that sits in a set is asked with the other k (`ExemplarSet.for_fact`).
2. Rows with the same question and answer (after normalisation) are one fact, so a copy cannot
   be the exemplar of its twin.
3. Some examples are probed but never exemplars (split TEST; the pool is the DEV split):
   - a question the file answers in different ways (each answer a fact, flagged multi_answer);
   - paraphrases: examples with the same answer whose questions share a rare word (one in at
     most max(3, 5%) of the questions: a name, not template words like "capital");
   - an example whose question holds another example's answer ("Which country is Paris in?"
     would give away "What is the capital of France?").
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from knowshift.audit.data import SftExample
from knowshift.facts.normalize import normalize_answer
from knowshift.types import Fact, FactSet, Relation, Split

RELATION = Relation(
    "audit", ("{subject}",), description="an example of a fine-tuning file, asked as it stands"
)
RARE_SHARE = 0.05  # a word in at most this share of the questions (and at least 3) is rare


def example_facts(examples: Sequence[SftExample]) -> tuple[FactSet, dict[int, str]]:
    """The examples as facts of the relation "audit", and each example's fact id.

    Exemplar candidates are in the DEV split, the others in TEST (see the module docstring).
    """
    first: dict[tuple[str, tuple[str, ...]], SftExample] = {}
    fact_of: dict[int, str] = {}
    for example in examples:
        key = (normalize_answer(example.question), tuple(map(normalize_answer, example.answers)))
        fact_of[example.index] = f"example:{first.setdefault(key, example).index}"
    answers_per_question = Counter(question for question, _ in first)
    facts = [
        Fact(
            id=f"example:{example.index}",
            relation=RELATION.name,
            subject=example.question,
            answers=example.answers,
            question=example.question,
            split=Split.DEV,
            multi_answer=answers_per_question[question] > 1,
        )  # fmt: skip
        for (question, _), example in first.items()
    ]
    kept_out = giveaways(facts) | {f.id for f in facts if f.multi_answer}
    facts = [replace(f, split=Split.TEST) if f.id in kept_out else f for f in facts]
    return FactSet("audit", {RELATION.name: RELATION}, tuple(facts)), fact_of


def giveaways(facts: Sequence[Fact]) -> set[str]:
    """Ids of the facts that, shown as an exemplar, could give another fact's answer away:
    paraphrases of a fact with the same answer, and questions that hold another fact's answer."""
    questions = {f.id: " ".join(normalize_answer(f.question).split()) for f in facts}
    words = {i: set(q.split()) for i, q in questions.items()}
    frequency = Counter(w for ws in words.values() for w in ws)
    rare = max(3, math.ceil(RARE_SHARE * len(facts)))
    by_answer: dict[str, set[str]] = defaultdict(set)
    for fact in facts:
        for answer in {normalize_answer(a) for a in fact.answers} - {""}:
            by_answer[answer].add(fact.id)
    with_word: dict[str, set[str]] = defaultdict(set)
    for i, ws in words.items():
        for w in ws:
            with_word[w].add(i)
    flagged: set[str] = set()
    for answer, ids in by_answer.items():
        # Paraphrases: same answer, and a rare word (a name) in more than one of the questions.
        shared = Counter(w for i in ids for w in words[i] if frequency[w] <= rare)
        flagged |= {i for i in ids if any(shared[w] > 1 for w in words[i] if frequency[w] <= rare)}
        # Questions of other facts that hold this answer as whole words.
        holders = set.intersection(*(with_word[w] for w in answer.split())) - ids
        flagged |= {i for i in holders if f" {answer} " in f" {questions[i]} "}
    return flagged
