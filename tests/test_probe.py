"""The probe on the planted-fact model: estimators must say what the model was taught."""

from __future__ import annotations

import math

import pytest
import torch

from knowshift.probe import run as probe_run
from knowshift.probe.engine import Engine, SampleRequest, ScoreRequest
from knowshift.probe.estimators import ProbeConfig, slick_category
from knowshift.probe.run import category_table, probe
from knowshift.types import Category


def _by_kind(results, kind):
    return [r for r in results if r.fact_id.startswith(f"{kind}:")]


@pytest.mark.parametrize("estimator", ["exact", "sampling", "greedy"])
def test_planted_facts_are_highly_known_and_unseen_ones_unknown(
    estimator, planted, planted_model, store
):
    results = probe(
        planted_model,
        planted,
        planted.by_split("test"),
        ProbeConfig.for_estimator(estimator),
        store,
    )
    assert len(results) == 32
    assert {r.category for r in _by_kind(results, "planted")} == {Category.HIGHLY_KNOWN}
    assert {r.category for r in _by_kind(results, "unseen")} == {Category.UNKNOWN}
    assert all(r.p_greedy == 1.0 for r in _by_kind(results, "planted"))
    assert all(r.model_fingerprint == planted_model.fingerprint for r in results)


def test_mastery_levels_separate_planted_from_unseen(planted, planted_model, store):
    results = probe(
        planted_model,
        planted,
        planted.by_split("test"),
        ProbeConfig.for_estimator("mastery"),
        store,
    )
    assert {r.mastery_level for r in _by_kind(results, "planted")} == {4}
    assert {r.mastery_level for r in _by_kind(results, "unseen")} == {0}
    assert all(r.category is None and r.p_greedy is None for r in results)
    assert "level 4" in category_table(results, {f.id: f for f in planted.facts})


def test_exact_agrees_with_sampling_and_reports_probabilities(planted, planted_model, store):
    targets = planted.by_split("test")
    exact = probe(planted_model, planted, targets, ProbeConfig.for_estimator("exact"), store)
    sampled = probe(planted_model, planted, targets, ProbeConfig.for_estimator("sampling"), store)
    assert [r.category for r in exact] == [r.category for r in sampled]
    for result in exact:
        assert math.isclose(sum(result.category_probs), 1.0, abs_tol=1e-9)
        assert result.category_prob >= 0.5
    # The exact expected share of correct samples matches the sampled share closely here.
    for e, s in zip(exact, sampled, strict=True):
        assert abs(e.p_sampled - s.p_sampled) < 0.15


def _reference_logp(model, clean_stop, prompt, continuation, temperature=0.5, top_k=40):
    """log P(one top-k/temperature sample == continuation + stop), from one plain forward."""
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    start, logp = len(prompt) - 1, 0.0
    for t, gold in enumerate(continuation):
        top = logits[start + t].topk(top_k).values
        if logits[start + t, gold] < top[-1]:
            return -math.inf
        logp += float(logits[start + t, gold] / temperature - torch.logsumexp(top / temperature, 0))
    top, top_ids = logits[start + len(continuation)].topk(top_k)
    logps = top / temperature - torch.logsumexp(top / temperature, 0)
    return logp + float(torch.logsumexp(logps.masked_fill(~clean_stop[top_ids], -math.inf), 0))


def test_shared_prefix_and_alias_branches_equal_plain_forwards(planted_model):
    """Shared prefix cache + aliases packed as branches give the numbers of one forward each."""
    engine = Engine(planted_model)
    tokenizer = planted_model.tokenizer
    shots = "Q: What is the capital of Kalo?\nA: Mivane\n\nQ: What is the capital of Rutozi?\nA: Pesho\n\n"
    cases = [("Ka", ["Lo", "Lomi", "Kavazi"]), ("Mimorbel", ["Dravaqui"]), ("Zi", ["Netoka", "Ne"])]
    requests = [
        ScoreRequest(
            tuple(tokenizer(shots + f"Q: What is the capital of {s}?\nA:").input_ids),
            tuple(tuple(tokenizer(" " + a, add_special_tokens=False).input_ids) for a in answers),
        )
        for s, answers in cases
    ]
    scores = engine.score([requests], temperature=0.5, top_k=40)[0]
    for request, request_scores in zip(requests, scores, strict=True):
        assert len(request_scores) == len(request.continuations)
        for continuation, score in zip(request.continuations, request_scores, strict=True):
            expected = _reference_logp(
                planted_model.model, engine.clean_stop_tokens, request.prompt, continuation
            )
            assert math.isclose(score.logp_sample, expected, rel_tol=1e-4, abs_tol=1e-4)


def test_samples_do_not_depend_on_batching(planted_model):
    """Counter-based random numbers: the same request gives the same samples in any batch."""
    engine = Engine(planted_model)
    tokenizer = planted_model.tokenizer
    prompts = [
        tuple(tokenizer(f"Q: What is the capital of {s}?\nA:").input_ids)
        for s in ("Ka", "Lomi", "Zito")
    ]
    requests = [SampleRequest(p, seed=11 + i) for i, p in enumerate(prompts)]
    together = engine.sample([requests], n_samples=6, temperature=1.0, top_k=40, max_new_tokens=6)[
        0
    ]
    alone = engine.sample(
        [requests[1:2]], n_samples=6, temperature=1.0, top_k=40, max_new_tokens=6
    )[0]
    assert together[1] == alone[0]
    # Samples differ with the seed (greedy does not). At a high temperature the 40 candidates
    # are near-uniform, so 6 samples of one seed repeating another's cannot happen by chance
    # however confident the model is (the planted model is near-deterministic at T=1).
    hot = [engine.sample([[SampleRequest(prompts[1], seed)]], 6, 50.0, 40, 6)[0][0]
           for seed in (12, 99)]  # fmt: skip
    assert hot[0][0] == together[1][0] and hot[0][1:] != hot[1][1:]


def test_rerun_skips_stored_facts_and_resumes(planted, planted_model, store, monkeypatch):
    targets = planted.by_split("test")
    config = ProbeConfig.for_estimator("exact")
    first = probe(planted_model, planted, targets[:10], config, store)
    calls = []
    real = probe_run.run_block
    monkeypatch.setattr(
        probe_run,
        "run_block",
        lambda engine, block: calls.append(len(block.facts)) or real(engine, block),
    )
    everything = probe(planted_model, planted, targets, config, store)
    assert sum(calls) == len(targets) - 10  # only the facts not probed before
    assert [r for r in everything if r.fact_id in {f.fact_id for f in first}] == first
    calls.clear()
    probe(planted_model, planted, targets, config, store)
    assert calls == []


def test_settings_change_the_key(planted, planted_model, store):
    targets = planted.by_split("test")[:4]
    a = probe(planted_model, planted, targets, ProbeConfig.for_estimator("exact"), store)
    b = probe(
        planted_model,
        planted,
        targets,
        ProbeConfig.for_estimator("exact", n_exemplar_sets=3),
        store,
    )
    assert a[0].params_key != b[0].params_key


def test_chat_format_needs_a_chat_template(planted, planted_model, store):
    from knowshift.errors import KnowshiftError

    with pytest.raises(KnowshiftError, match="chat template"):
        probe(
            planted_model,
            planted,
            planted.by_split("test"),
            ProbeConfig(prompt_format="chat"),
            store,
        )


@pytest.mark.parametrize(
    ("p_greedy", "p_sampled", "category"),
    [(1.0, 0.9, Category.HIGHLY_KNOWN), (0.3, 0.2, Category.MAYBE_KNOWN),
     (0.0, 0.01, Category.WEAKLY_KNOWN), (0.0, 0.0, Category.UNKNOWN)],
)  # fmt: skip
def test_slick_rule(p_greedy, p_sampled, category):
    assert slick_category(p_greedy, p_sampled) is category


def test_edited_facts_are_probed_anew(planted, planted_model, store):
    """The settings key holds the facts' content, so an edited fact file is not served stale."""
    from dataclasses import replace

    from knowshift.probe.run import settings_key

    config = ProbeConfig.for_estimator("exact")
    edited_fact = replace(planted.facts[-1], answers=("Elsewhere",))
    edited = replace(planted, facts=(*planted.facts[:-1], edited_fact))
    assert settings_key(config, planted, "float32")[0] != settings_key(config, edited, "float32")[0]
    moved = replace(planted, source="planted:/another/path.jsonl")
    assert settings_key(config, planted, "float32")[0] == settings_key(config, moved, "float32")[0]
    before = probe(planted_model, planted, planted.facts[-1:], config, store)
    after = probe(planted_model, edited, edited.facts[-1:], config, store)
    assert before[0].params_key != after[0].params_key
