"""Consistency of a fine-tuned model with its base on held-out questions (METHODS D, Ren et al.).

Each question gets answer options: its gold answer and distractors drawn from the other answers
of its relation (seeded per fact). Both models score every option as a complete answer (the
teacher-forced log-probability of the answer and the stop after it); a softmax over the options
is the model's answer distribution. Per question:

- KL(base || fine-tuned) of the two answer distributions,
- the rank correlation of the two option-score vectors (Pearson of the rank vectors),
- whether the two greedy free-form answers are identical (after normalisation).

Then: does staying consistent go with scoring well? The Spearman partial correlation of each
consistency measure with the fine-tuned model's correctness, controlling for the base model's,
over questions and over relations.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from knowshift.analysis.stats import partial_spearman, spearman
from knowshift.facts.assemble import stable_hash
from knowshift.facts.normalize import normalize_answer, surface_aliases
from knowshift.types import Fact, FactSet


@dataclass(frozen=True)
class ConsistencyResult:
    """Means over questions, accuracies of both models, and the partial correlations."""

    n_questions: int
    n_options: int
    identical_answer_share: float
    mean_kl: float
    mean_rank_correlation: float
    base_accuracy: float  # greedy free-form answers, alias containment
    tuned_accuracy: float
    base_option_accuracy: float  # the gold option scored highest
    tuned_option_accuracy: float
    partial_correlation: dict[str, float]  # "<measure>/<unit>" -> Spearman partial correlation
    by_relation: dict[str, dict[str, float]]


def answer_options(
    facts: FactSet, targets: Sequence[Fact], n_options: int = 4, seed: int = 0
) -> dict[str, tuple[str, ...]]:
    """Per target: its gold answer first, then up to n_options - 1 distractors, other answers of
    the same relation that are not aliases of the gold one."""
    pools: dict[str, list[str]] = defaultdict(list)
    for fact in facts.facts:
        pools[fact.relation].append(fact.answer)
    pools = {r: sorted(set(answers)) for r, answers in pools.items()}
    options = {}
    for fact in targets:
        gold = {normalize_answer(a) for a in surface_aliases(fact.answers)}
        candidates = [a for a in pools[fact.relation] if normalize_answer(a) not in gold]
        rng = random.Random(stable_hash(f"{seed}:{fact.id}"))
        options[fact.id] = (
            fact.answer,
            *rng.sample(candidates, min(n_options - 1, len(candidates))),
        )
    return options


def option_logprobs(
    engine, targets: Sequence[Fact], options: dict[str, tuple[str, ...]], template: str
) -> list[np.ndarray]:
    """Per target: the log-probability of each option as a complete answer (then a stop)."""
    from knowshift.mixtures import format_example
    from knowshift.probe.engine import ScoreRequest

    tokenizer = engine.tokenizer
    requests = []
    for fact in targets:
        prompt = format_example(fact.question, "", template)[0]
        continuations = tuple(
            tuple(
                tokenizer(
                    format_example(fact.question, o, template)[1].rstrip("\n"),
                    add_special_tokens=False,
                ).input_ids
            )
            for o in options[fact.id]
        )
        requests.append(ScoreRequest(tuple(tokenizer(prompt).input_ids), continuations))
    order = sorted(range(len(requests)), key=lambda i: requests[i].prompt)
    scores = engine.score([[requests[i] for i in order]], temperature=1.0, top_k=engine.vocab_size)[
        0
    ]
    out: list[np.ndarray] = [np.empty(0)] * len(requests)
    for i, request_scores in zip(order, scores, strict=True):
        out[i] = np.array([s.logp_sample for s in request_scores])
    return out


def consistency(base, tuned, facts: FactSet, targets: Sequence[Fact], *, template: str = "plain",
                n_options: int = 4, seed: int = 0) -> ConsistencyResult:  # fmt: skip
    """Compare the fine-tuned model `tuned` with `base` (both LoadedModel) on `targets`."""
    from knowshift.evaluate.qa import predict
    from knowshift.probe.engine import Engine

    options = answer_options(facts, targets, n_options, seed)
    engines = Engine(base), Engine(tuned)
    base_lp, tuned_lp = (option_logprobs(e, targets, options, template) for e in engines)
    base_pred, tuned_pred = (
        predict(m, targets, engine=e, template=template)
        for m, e in zip((base, tuned), engines, strict=True)
    )
    kl = np.array([_kl(b, t) for b, t in zip(base_lp, tuned_lp, strict=True)])
    rank = np.array(
        [spearman(b, t) if len(b) >= 3 else np.nan for b, t in zip(base_lp, tuned_lp, strict=True)]
    )
    identical = np.array([normalize_answer(b.prediction) == normalize_answer(t.prediction)
                          for b, t in zip(base_pred, tuned_pred, strict=True)])  # fmt: skip
    base_ok = np.array([p.contains for p in base_pred], dtype=float)
    tuned_ok = np.array([p.contains for p in tuned_pred], dtype=float)
    measures = {"neg_kl": -kl, "rank_correlation": rank, "identical": identical.astype(float)}
    relations = [f.relation for f in targets]
    return ConsistencyResult(
        n_questions=len(targets),
        n_options=n_options,
        identical_answer_share=float(identical.mean()),
        mean_kl=float(kl.mean()),
        mean_rank_correlation=float(np.nanmean(rank)) if np.isfinite(rank).any() else float("nan"),
        base_accuracy=float(base_ok.mean()),
        tuned_accuracy=float(tuned_ok.mean()),
        base_option_accuracy=float(np.mean([lp.argmax() == 0 for lp in base_lp])),
        tuned_option_accuracy=float(np.mean([lp.argmax() == 0 for lp in tuned_lp])),
        partial_correlation=_partial_correlations(measures, tuned_ok, base_ok, relations),
        by_relation=_by_relation(relations, kl, rank, identical, base_ok, tuned_ok),
    )


def _kl(base_logp: np.ndarray, tuned_logp: np.ndarray) -> float:
    """KL(p || q) of the softmaxes over the options (0 for identical distributions)."""
    log_p = base_logp - np.logaddexp.reduce(base_logp)
    log_q = tuned_logp - np.logaddexp.reduce(tuned_logp)
    return float(max(0.0, (np.exp(log_p) * (log_p - log_q)).sum()))


def _partial_correlations(measures, tuned_ok, base_ok, relations) -> dict[str, float]:
    """Per consistency measure: over questions, and over relations (their means)."""
    out = {}
    names = sorted(set(relations))
    index = {r: [i for i, x in enumerate(relations) if x == r] for r in names}
    for name, values in measures.items():
        finite = np.isfinite(values)
        out[f"{name}/questions"] = partial_spearman(
            values[finite], tuned_ok[finite], base_ok[finite]
        )
        if len(names) >= 4:
            mean = lambda v: [float(np.nanmean(v[index[r]])) for r in names]  # noqa: E731
            out[f"{name}/relations"] = partial_spearman(mean(values), mean(tuned_ok), mean(base_ok))
    return out


def _by_relation(relations, kl, rank, identical, base_ok, tuned_ok) -> dict[str, dict[str, float]]:
    rows = {}
    for r in sorted(set(relations)):
        i = [k for k, x in enumerate(relations) if x == r]
        rows[r] = {"n": len(i), "mean_kl": float(kl[i].mean()), "identical": float(identical[i].mean()),
                   "rank_correlation": float(np.nanmean(rank[i])) if np.isfinite(rank[i]).any() else float("nan"),
                   "base_accuracy": float(base_ok[i].mean()), "tuned_accuracy": float(tuned_ok[i].mean())}  # fmt: skip
    return rows


def format_consistency(result: ConsistencyResult) -> str:
    lines = [
        f"{result.n_questions} held-out questions, {result.n_options} answer options each",
        f"identical greedy answers   {100 * result.identical_answer_share:6.1f}%",
        f"mean KL(base || tuned)     {result.mean_kl:8.4f}",
        f"mean rank correlation      {result.mean_rank_correlation:8.3f}",
        f"accuracy base -> tuned     {100 * result.base_accuracy:6.1f}% -> {100 * result.tuned_accuracy:.1f}%"
        f"   (options: {100 * result.base_option_accuracy:.1f}% -> {100 * result.tuned_option_accuracy:.1f}%)",
        "partial Spearman correlation with tuned accuracy, controlling for base accuracy:",
    ]
    for name, value in result.partial_correlation.items():
        lines.append(f"  {name:<30} {value:+.3f}")
    lines.append(
        f"\n{'relation':<24} {'n':>5} {'KL':>8} {'rank r':>7} {'same':>7} {'base':>7} {'tuned':>7}"
    )
    for r, row in result.by_relation.items():
        lines.append(f"{r:<24} {row['n']:>5} {row['mean_kl']:8.4f} {row['rank_correlation']:7.3f} "
                     f"{100 * row['identical']:6.1f}% {100 * row['base_accuracy']:6.1f}% {100 * row['tuned_accuracy']:6.1f}%")  # fmt: skip
    return "\n".join(lines)
