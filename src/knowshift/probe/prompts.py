"""Few-shot prompts for probing (METHODS A): exemplar sets and the two prompt formats.

A prompt is the k exemplars of one exemplar set followed by the question. All questions of a
relation share the same Nex exemplar sets, so every prompt of one set starts with the same
tokens; the engine computes that prefix once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.types import Fact, FactSet, Split

PROMPT_FORMATS = ("plain", "chat")


@dataclass(frozen=True)
class ExemplarSet:
    """k exemplars plus one spare, used when the probed fact is itself an exemplar."""

    index: int
    facts: tuple[Fact, ...]

    def for_fact(self, fact: Fact, k: int) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.id != fact.id)[:k]


def exemplar_sets(
    facts: FactSet, relation: str, n_sets: int, k: int, seed: int
) -> list[ExemplarSet]:
    """Nex seeded exemplar sets of k (+1 spare) facts from the dev split of `relation`.

    Falls back to the train split when a relation has too few dev facts (small user files), and
    says so by raising when even that is not enough.
    """
    pool = [f for f in facts.by_relation(relation, Split.DEV) if not f.multi_answer]
    if len(pool) < k + 1:
        pool += [f for f in facts.by_relation(relation, Split.TRAIN) if not f.multi_answer]
    if len(pool) < k + 1:
        raise KnowshiftError(
            f"relation {relation!r} has {len(pool)} dev/train facts, fewer than the {k + 1} needed "
            f"for {k}-shot exemplars; lower --k-shot or add facts to the relation"
        )
    pool.sort(key=lambda f: f.id)
    rng = random.Random(f"{seed}:{relation}")
    return [ExemplarSet(i, tuple(rng.sample(pool, k + 1))) for i in range(n_sets)]


@dataclass(frozen=True)
class PromptFormat:
    """How exemplars and a question become a prompt, and what follows the prompt before an answer.

    plain: "Q: {question}\\nA: {answer}\\n\\n" blocks; the answer is the text after "A: " up to
    the first newline. chat: the model's chat template, one user/assistant turn per exemplar; the
    answer ends at the end-of-turn token (or a newline).
    """

    name: str
    tokenizer: Any

    def render(self, exemplars: Sequence[tuple[str, str]], question: str) -> str:
        if self.name == "plain":
            shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in exemplars)
            return f"{shots}Q: {question}\nA:"
        messages = []
        for q, a in exemplars:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    @property
    def answer_prefix(self) -> str:
        """Text the model writes between the prompt and the answer itself."""
        return " " if self.name == "plain" else ""


def prompt_format(name: str, tokenizer: Any) -> PromptFormat:
    """The named prompt format; `chat` needs a tokenizer with a chat template."""
    if name not in PROMPT_FORMATS:
        raise unknown_name("prompt format", name, PROMPT_FORMATS)
    if name == "chat" and not getattr(tokenizer, "chat_template", None):
        raise KnowshiftError(
            "this model's tokenizer has no chat template; use --prompt-format plain"
        )
    return PromptFormat(name, tokenizer)


def few_shot_prompt(fmt: PromptFormat, exemplars: Sequence[Fact], fact: Fact) -> str:
    """The prompt for `fact` with `exemplars` (each shown with its canonical answer)."""
    return fmt.render([(e.question, e.answer) for e in exemplars], fact.question)
