"""Token-level change at the first answer token (METHODS C, Ye et al.).

On the facts the base model masters best, after the question's prompt: take the fine-tuned
model's top-10 next-token ids, read the same ids' logits from the base model, softmax each set of
10 on its own, and compute KL(p_ft || p_pre). The published finding: larger KL goes with lower
accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from knowshift.analysis.stats import spearman
from knowshift.types import Fact


@dataclass(frozen=True)
class TokenKLResult:
    """KL statistics over the selected facts, and how KL goes with the fine-tuned accuracy."""

    n_facts: int
    selection: str  # which facts, e.g. "mastery level 4" or "HighlyKnown"
    top_k: int
    mean_kl: float
    median_kl: float
    base_accuracy: float
    tuned_accuracy: float
    mean_kl_tuned_correct: float | None
    mean_kl_tuned_wrong: float | None
    kl_accuracy_spearman: float  # per fact: KL vs the fine-tuned model being right
    by_relation: dict[str, dict[str, float]]


def first_token_kl(tuned_logits, base_logits, top_k: int = 10) -> np.ndarray:
    """Per row: KL(p_ft || p_pre) over the fine-tuned model's top-k ids, each side softmaxed
    over those k ids alone. Both are [n, vocab] tensors."""
    import torch

    top_ids = tuned_logits.topk(top_k, dim=-1).indices
    log_ft = torch.log_softmax(tuned_logits.gather(1, top_ids).double(), dim=-1)
    log_pre = torch.log_softmax(base_logits.gather(1, top_ids).double(), dim=-1)
    return (log_ft.exp() * (log_ft - log_pre)).sum(-1).clamp(min=0).numpy()


def token_kl(base, tuned, targets: Sequence[Fact], *, template: str = "plain", top_k: int = 10,
             selection: str = "") -> TokenKLResult:  # fmt: skip
    """KL at the first answer token between `tuned` and `base` (LoadedModels) on `targets`."""
    from knowshift.mixtures import format_example
    from knowshift.probe.engine import Engine
    from knowshift.train.items import fact_item
    from knowshift.train.measure import greedy_correct

    engines = Engine(base), Engine(tuned)
    prompts = [
        tuple(base.tokenizer(format_example(f.question, "", template)[0]).input_ids)
        for f in targets
    ]
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])  # one template per run of rows
    base_logits, tuned_logits = (e.next_token_logits([prompts[i] for i in order]) for e in engines)
    kl = np.empty(len(targets))
    kl[order] = first_token_kl(tuned_logits, base_logits, top_k)
    items = [fact_item(f, template, ()) for f in targets]
    base_ok, tuned_ok = (np.array(greedy_correct(e, items), dtype=float) for e in engines)
    right, wrong = kl[tuned_ok == 1], kl[tuned_ok == 0]
    return TokenKLResult(
        n_facts=len(targets),
        selection=selection,
        top_k=top_k,
        mean_kl=float(kl.mean()),
        median_kl=float(np.median(kl)),
        base_accuracy=float(base_ok.mean()),
        tuned_accuracy=float(tuned_ok.mean()),
        mean_kl_tuned_correct=float(right.mean()) if len(right) else None,
        mean_kl_tuned_wrong=float(wrong.mean()) if len(wrong) else None,
        kl_accuracy_spearman=spearman(kl, tuned_ok),
        by_relation=_by_relation(targets, kl, tuned_ok),
    )


def _by_relation(
    targets: Sequence[Fact], kl: np.ndarray, tuned_ok: np.ndarray
) -> dict[str, dict[str, float]]:
    index: dict[str, list[int]] = defaultdict(list)
    for i, fact in enumerate(targets):
        index[fact.relation].append(i)
    return {r: {"n": len(i), "mean_kl": float(kl[i].mean()), "tuned_accuracy": float(tuned_ok[i].mean())}
            for r, i in sorted(index.items())}  # fmt: skip


def format_token_kl(result: TokenKLResult) -> str:
    def kl_text(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "-"

    lines = [
        f"{result.n_facts} facts ({result.selection}); KL(p_ft || p_pre) over the fine-tuned top-{result.top_k} ids",
        f"mean KL {result.mean_kl:.4f}   median {result.median_kl:.4f}",
        f"accuracy base -> tuned: {100 * result.base_accuracy:.1f}% -> {100 * result.tuned_accuracy:.1f}%",
        f"mean KL where tuned is right {kl_text(result.mean_kl_tuned_correct)}, "
        f"wrong {kl_text(result.mean_kl_tuned_wrong)}; Spearman(KL, right) {result.kl_accuracy_spearman:+.3f}",
        f"\n{'relation':<24} {'n':>5} {'mean KL':>9} {'tuned acc':>10}",
    ]
    for relation, row in result.by_relation.items():
        lines.append(
            f"{relation:<24} {row['n']:>5} {row['mean_kl']:9.4f} {100 * row['tuned_accuracy']:9.1f}%"
        )
    return "\n".join(lines)
