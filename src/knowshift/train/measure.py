"""Which examples a model gets right, per group, without a generation loop.

An item is correct when greedy decoding after its prompt produces one of its gold
continuations and then stops: the same verdict the exact estimator gives (a teacher-forced pass,
the gold token arg-max at every position and a stop token after it). One forward per item, in
batches, so measuring after every epoch stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from knowshift.probe.engine import Engine, ScoreRequest

GROUP_SIZE = 1024


@dataclass(frozen=True)
class EvalItem:
    """A question to check: its prompt, the accepted continuations (e.g. " Paris", without the
    stop), and the groups it counts in ("train", "train/Unknown", "test/HighlyKnown", "dev", ...)."""

    fact_id: str
    prompt: str
    continuations: tuple[str, ...]
    groups: tuple[str, ...]


def greedy_correct(engine: Engine, items: Sequence[EvalItem]) -> list[bool]:
    """Per item: does greedy decoding give one of its continuations exactly, then stop?"""
    if not items:
        return []
    tokenizer = engine.tokenizer
    prompts = tokenizer([item.prompt for item in items]).input_ids
    requests = [
        ScoreRequest(
            tuple(prompt),
            tuple(
                tuple(tokenizer(c, add_special_tokens=False).input_ids) for c in item.continuations
            ),
        )
        for prompt, item in zip(prompts, items, strict=True)
    ]
    # Sorted by prompt tokens, questions of one template sit together; scored in groups, each
    # shares its common prompt prefix (e.g. "Q: Which country is") across its rows.
    order = sorted(range(len(requests)), key=lambda i: requests[i].prompt)
    groups = [order[i : i + GROUP_SIZE] for i in range(0, len(order), GROUP_SIZE)]
    scores = engine.score(
        [[requests[i] for i in group] for group in groups], temperature=1.0, top_k=1
    )
    correct = [False] * len(requests)
    for group, group_scores in zip(groups, scores, strict=True):
        for i, request_scores in zip(group, group_scores, strict=True):
            correct[i] = any(s.greedy_ok for s in request_scores)
    return correct


def measure(engine: Engine, items: Sequence[EvalItem]) -> dict[str, float]:
    """Accuracy per group (share of its items greedy-correct)."""
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for item, correct in zip(items, greedy_correct(engine, items), strict=True):
        for group in item.groups:
            total[group] += 1
            right[group] += int(correct)
    return {group: right[group] / total[group] for group in sorted(total)}
