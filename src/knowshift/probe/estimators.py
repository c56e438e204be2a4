"""The four knowledge estimators (METHODS A, A', A'' and E), all producing ProbeResult records.

- sampling: SliCK as published: per exemplar set one greedy answer and n samples (T=0.5,
  top-k 40); answer = text up to the first newline; exact match after normalisation.
- exact: one teacher-forced pass per exemplar set and gold alias; the greedy verdict exactly and
  the distribution of the category the sampling procedure would report, in closed form.
- greedy: greedy answers only, alias containment (the LoRA-packing paper's HK / MK / Unknown).
- mastery: declarative completion templates x samples (T=0.7), containment, level 0-4.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from knowshift.facts.normalize import contains_match, exact_match, surface_aliases
from knowshift.probe.engine import Engine, SampleRequest, ScoreRequest
from knowshift.probe.prompts import ExemplarSet, PromptFormat, few_shot_prompt
from knowshift.types import CATEGORIES, Category, Fact, ProbeResult, Relation

ESTIMATORS = ("exact", "sampling", "greedy", "mastery")


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of one probe; everything that changes a result is in here (and in its key)."""

    estimator: str = "exact"
    n_exemplar_sets: int = 10
    k_shot: int = 4
    n_samples: int = 16
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 16
    prompt_format: str = "plain"
    seed: int = 0

    @classmethod
    def for_estimator(cls, estimator: str, **overrides) -> ProbeConfig:
        """Published defaults per estimator; `None` overrides are ignored."""
        defaults: dict = {}
        if estimator == "greedy":
            defaults = {"n_samples": 0, "temperature": 0.0}
        elif estimator == "mastery":  # Ye et al. 3.3: 10 samples at T=0.7, up to 32 new tokens
            defaults = {"n_samples": 10, "temperature": 0.7, "top_k": 50, "max_new_tokens": 32}
        defaults.update({k: v for k, v in overrides.items() if v is not None})
        return cls(estimator=estimator, **defaults)

    @classmethod
    def from_settings(cls, estimator: str, settings: object) -> ProbeConfig:
        """`for_estimator` with the SETTINGS read off `settings` (a request, parsed arguments)."""
        return cls.for_estimator(estimator, **{name: getattr(settings, name) for name in SETTINGS})


# What a caller may set on top of an estimator's defaults (ProbeConfig.from_settings).
SETTINGS = ("n_exemplar_sets", "k_shot", "n_samples", "temperature", "top_k", "max_new_tokens",
            "prompt_format", "seed")  # fmt: skip


@dataclass(frozen=True)
class Block:
    """Facts of one relation probed together, with what they are probed against."""

    relation: Relation
    facts: Sequence[Fact]
    exemplar_sets: Sequence[ExemplarSet]
    fmt: PromptFormat
    config: ProbeConfig
    fingerprint: str
    params_key: str


def slick_category(p_greedy: float, p_sampled: float) -> Category:
    """SliCK's rule: HK if greedy always right, MK if sometimes, WK if only samples, else Unknown."""
    if p_greedy >= 1.0:
        return Category.HIGHLY_KNOWN
    if p_greedy > 0.0:
        return Category.MAYBE_KNOWN
    return Category.WEAKLY_KNOWN if p_sampled > 0.0 else Category.UNKNOWN


def one_hot(category: Category) -> tuple[float, float, float, float]:
    return tuple(float(c == category) for c in CATEGORIES)  # type: ignore[return-value]


def run_block(engine: Engine, block: Block) -> list[ProbeResult]:
    """Probe one block with the block's estimator."""
    estimator = {"exact": _exact, "sampling": _sampling, "greedy": _greedy, "mastery": _mastery}
    return estimator[block.config.estimator](engine, block)


def _prompt_ids(
    engine: Engine, block: Block, fact: Fact, exemplar_set: ExemplarSet
) -> tuple[int, ...]:
    text = few_shot_prompt(block.fmt, exemplar_set.for_fact(fact, block.config.k_shot), fact)
    special = block.fmt.name == "plain"  # a chat template already holds its special tokens
    return tuple(engine.tokenizer(text, add_special_tokens=special).input_ids)


def _result(
    block: Block, fact: Fact, p_greedy, p_sampled, category, probs=None, level=None, samples=()
):
    return ProbeResult(
        fact_id=fact.id,
        estimator=block.config.estimator,
        params_key=block.params_key,
        model_fingerprint=block.fingerprint,
        p_greedy=p_greedy,
        p_sampled=p_sampled,
        category=category,
        category_probs=probs if probs is not None else one_hot(category),
        mastery_level=level,
        samples=tuple(samples),
    )


def _exact(engine: Engine, block: Block) -> list[ProbeResult]:
    """METHODS A': teacher-force every gold alias once per exemplar set."""
    config = block.config
    aliases = [surface_aliases(f.answers) for f in block.facts]
    continuations = [
        tuple(
            tuple(
                engine.tokenizer(
                    block.fmt.answer_prefix + alias, add_special_tokens=False
                ).input_ids
            )
            for alias in fact_aliases
        )
        for fact_aliases in aliases
    ]
    groups = [
        [
            ScoreRequest(_prompt_ids(engine, block, fact, e), conts)
            for fact, conts in zip(block.facts, continuations, strict=True)
        ]
        for e in block.exemplar_sets
    ]
    scores = engine.score(groups, config.temperature, config.top_k)
    results = []
    for index, fact in enumerate(block.facts):
        per_set = [group[index] for group in scores]  # per exemplar set: one Score per alias
        greedy_ok = [any(s.greedy_ok for s in alias_scores) for alias_scores in per_set]
        # Aliases are disjoint events (each ends with a stop), so their probabilities add.
        p_correct = [
            min(1.0, sum(math.exp(s.logp_sample) for s in alias_scores)) for alias_scores in per_set
        ]
        results.append(_exact_result(block, fact, greedy_ok, p_correct))
    return results


def _exact_result(
    block: Block, fact: Fact, greedy_ok: list[bool], p_correct: list[float]
) -> ProbeResult:
    """The category distribution the sampling procedure would report, in closed form."""
    p_greedy = sum(greedy_ok) / len(greedy_ok)
    p_sampled = sum(p_correct) / len(p_correct)  # the expectation of the sampled share
    if p_greedy > 0:
        category = slick_category(p_greedy, 0.0)
        return _result(block, fact, p_greedy, p_sampled, category)
    # Greedy never right: Unknown iff none of the n samples per set is right (independent draws).
    log_none = sum(block.config.n_samples * math.log1p(-min(p, 1.0 - 1e-300)) for p in p_correct)
    p_unknown = math.exp(log_none)
    probs = (0.0, 0.0, 1.0 - p_unknown, p_unknown)
    category = Category.UNKNOWN if p_unknown >= 0.5 else Category.WEAKLY_KNOWN
    return _result(block, fact, p_greedy, p_sampled, category, probs)


def _sample_seed(config: ProbeConfig, fact: Fact, stream: int) -> int:
    digest = hashlib.blake2b(f"{config.seed}|{fact.id}|{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _first_line(engine: Engine, tokens: list[int]) -> str:
    return engine.tokenizer.decode(tokens, skip_special_tokens=True).split("\n", 1)[0].strip()


def _few_shot_answers(engine: Engine, block: Block, n_samples: int) -> list[list[list[str]]]:
    """Per fact, per exemplar set: [greedy answer] + n sampled answers."""
    config = block.config
    groups = [
        [
            SampleRequest(_prompt_ids(engine, block, f, e), _sample_seed(config, f, e.index))
            for f in block.facts
        ]
        for e in block.exemplar_sets
    ]
    outputs = engine.sample(
        groups, n_samples, max(config.temperature, 1e-6), config.top_k, config.max_new_tokens
    )
    return [
        [[_first_line(engine, row) for row in outputs[e][i]] for e in range(len(groups))]
        for i in range(len(block.facts))
    ]


def _sampling(engine: Engine, block: Block) -> list[ProbeResult]:
    """METHODS A as published: greedy + n samples per exemplar set, exact match."""
    n_samples = block.config.n_samples
    results = []
    for fact, per_set in zip(block.facts, _few_shot_answers(engine, block, n_samples), strict=True):
        greedy_right = sum(exact_match(answers[0], fact.answers) for answers in per_set)
        samples_right = sum(
            exact_match(a, fact.answers) for answers in per_set for a in answers[1:]
        )
        p_greedy = greedy_right / len(per_set)
        p_sampled = samples_right / (n_samples * len(per_set)) if n_samples else 0.0
        samples = [a for answers in per_set for a in answers]
        results.append(
            _result(
                block,
                fact,
                p_greedy,
                p_sampled,
                slick_category(p_greedy, p_sampled),
                samples=samples,
            )
        )
    return results


def _greedy(engine: Engine, block: Block) -> list[ProbeResult]:
    """METHODS E: greedy only, alias containment; HK = all sets, MK = some, Unknown = none."""
    results = []
    for fact, per_set in zip(block.facts, _few_shot_answers(engine, block, 0), strict=True):
        answers = [answers[0] for answers in per_set]
        p_greedy = sum(contains_match(a, fact.answers) for a in answers) / len(answers)
        category = slick_category(p_greedy, 0.0)
        results.append(_result(block, fact, p_greedy, 0.0, category, samples=answers))
    return results


def _mastery(engine: Engine, block: Block) -> list[ProbeResult]:
    """METHODS A'': R = share of completions containing a gold alias; level 0 or ceil(4R)."""
    config, templates = block.config, block.relation.completion_templates
    if not templates:
        raise ValueError(f"relation {block.relation.name} has no completion templates")
    groups = [
        [
            SampleRequest(_completion_ids(engine, t, f), _sample_seed(config, f, 1000 + j))
            for f in block.facts
        ]
        for j, t in enumerate(templates)
    ]

    def contains_gold(fact_index: int, tokens: list[int]) -> bool:
        # Once a completion contains the answer, later tokens cannot change the verdict.
        return contains_match(
            engine.tokenizer.decode(tokens, skip_special_tokens=True),
            block.facts[fact_index].answers,
        )

    outputs = engine.sample(
        groups, config.n_samples, config.temperature, config.top_k, config.max_new_tokens,
        greedy=False, stop_at_newline=False, is_done=contains_gold,
    )  # fmt: skip
    results = []
    for i, fact in enumerate(block.facts):
        texts = [
            engine.tokenizer.decode(row, skip_special_tokens=True)
            for group in outputs
            for row in group[i]
        ]
        share = sum(contains_match(t, fact.answers) for t in texts) / len(texts)
        level = 0 if share == 0 else min(4, math.ceil(share * 4))
        results.append(
            _result(block, fact, None, share, None, probs=(0.0,) * 4, level=level, samples=texts)
        )
    return results


def _completion_ids(engine: Engine, template: str, fact: Fact) -> tuple[int, ...]:
    return tuple(engine.tokenizer(template.format(subject=fact.subject)).input_ids)
