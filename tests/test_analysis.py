"""Knowledge-shift analyses: constructed cases with known answers, and the planted-fact model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from knowshift.analysis.collapse import answer_collapse, collapse_stats
from knowshift.analysis.consistency import answer_options, consistency
from knowshift.analysis.regression import fit_regression, regression_points
from knowshift.analysis.shift import shift_matrix
from knowshift.analysis.stats import ols, partial_spearman, spearman
from knowshift.analysis.token_kl import first_token_kl, token_kl
from knowshift.errors import KnowshiftError
from knowshift.evaluate.qa import Prediction
from knowshift.types import Category

HK, MK, WK, UNK = (
    Category.HIGHLY_KNOWN,
    Category.MAYBE_KNOWN,
    Category.WEAKLY_KNOWN,
    Category.UNKNOWN,
)


def test_shift_matrix_of_a_constructed_case():
    before = {"a": HK, "b": HK, "c": MK, "d": UNK, "e": UNK, "f": WK, "g": MK, "h": HK}
    after = {"a": HK, "b": UNK, "c": HK, "d": MK, "e": UNK, "f": WK, "g": UNK, "h": MK, "zz": HK}
    result = shift_matrix(before, after)
    assert result.n_facts == 8  # "zz" has no base category
    assert result.counts["HighlyKnown"] == {
        "HighlyKnown": 1,
        "MaybeKnown": 1,
        "WeaklyKnown": 0,
        "Unknown": 1,
    }
    assert (
        result.counts["Unknown"]["MaybeKnown"] == 1
        and result.counts["MaybeKnown"]["HighlyKnown"] == 1
    )
    # positive: c (MK->HK), d (Unk->MK); negative: b (HK->Unk), g (MK->Unk), h (HK->MK)
    assert result.positive_share == pytest.approx(2 / 8)
    assert result.negative_share == pytest.approx(3 / 8)
    assert result.unchanged_share == pytest.approx(3 / 8)
    assert result.transitions["HighlyKnown->Unknown"] == pytest.approx(1 / 8)
    assert sum(sum(row.values()) for row in result.counts.values()) == 8


def test_ols_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    known, unknown = rng.uniform(0, 0.5, 200), rng.uniform(0, 0.5, 200)
    accuracy = 36.9 + 7.3 * known - 8.3 * unknown + rng.normal(0, 0.3, 200)
    fit = ols(accuracy, {"known_fitted": known, "unknown_fitted": unknown})
    for name, truth in (("intercept", 36.9), ("known_fitted", 7.3), ("unknown_fitted", -8.3)):
        c = fit.coefficient(name)
        assert c.ci_low < truth < c.ci_high
        assert abs(c.estimate - truth) < 0.5
    assert fit.r_squared > 0.9 and fit.n_points == 200
    # The interval shrinks with more points and widens with more confidence.
    wider = ols(accuracy, {"known_fitted": known, "unknown_fitted": unknown}, confidence=0.99)
    assert wider.coefficient("known_fitted").ci_high > fit.coefficient("known_fitted").ci_high


def test_regression_from_stored_runs_recovers_coefficients(store):
    """Runs with other compositions, each with epochs fitting more; accuracy planted linear."""
    rng = np.random.default_rng(1)
    for run, (n_known, n_unknown) in enumerate([(40, 0), (30, 10), (20, 20), (10, 30)]):
        run_id = f"run{run}"
        sizes = {"train": n_known + n_unknown, "train/Known": n_known, "train/Unknown": n_unknown}
        store.register_run(run_id, {"group_sizes": {k: v for k, v in sizes.items() if v}})
        for epoch in range(1, 6):
            known_acc, unknown_acc = min(1, 0.3 + 0.15 * epoch), min(1, 0.05 * epoch**1.5)
            known_share = known_acc * n_known / 40
            unknown_share = unknown_acc * n_unknown / 40
            test_in = 36.9 + 7.3 * known_share - 8.3 * unknown_share + rng.normal(0, 0.05)
            test_out = 36.2 + 3.2 * known_share - 3.0 * unknown_share + rng.normal(0, 0.05)
            accuracy = {
                "train/Known": known_acc,
                "test/in": test_in / 100,
                "test/out": test_out / 100,
            }
            if n_unknown:
                accuracy["train/Unknown"] = unknown_acc
            store.put_train_record(run_id, epoch, epoch * 5, 1.0, accuracy)
    points = regression_points(store)
    assert len(points) == 20
    result = fit_regression(points)
    assert result.fits["in"].coefficient("known_fitted").estimate == pytest.approx(7.3, abs=0.3)
    assert result.fits["in"].coefficient("unknown_fitted").estimate == pytest.approx(-8.3, abs=0.3)
    assert result.fits["out"].coefficient("unknown_fitted").estimate == pytest.approx(-3.0, abs=0.3)
    assert result.fits["in"].r_squared > 0.95


def test_regression_refuses_what_it_cannot_fit(store):
    with pytest.raises(KnowshiftError, match="no measurements"):
        fit_regression(regression_points(store))
    with pytest.raises(KnowshiftError, match="no run 'nope'"):
        regression_points(store, ["nope"])


def test_partial_spearman_removes_a_shared_cause():
    rng = np.random.default_rng(2)
    z = rng.normal(size=2000)
    x, y = z + 0.5 * rng.normal(size=2000), z + 0.5 * rng.normal(size=2000)
    assert spearman(x, y) > 0.6
    assert abs(partial_spearman(x, y, z)) < 0.08  # related only through z
    y_direct = x + 0.2 * rng.normal(size=2000)
    assert partial_spearman(x, y_direct, z) > 0.6
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _prediction(relation, text, right, refused=False):
    return Prediction("f", relation, text, right, right, refused, None, None, True)


def test_collapse_counts_distinct_and_exploded_answers():
    before = [_prediction("capital", f"City{i}", i % 2 == 0) for i in range(20)]
    before += [_prediction("continent", "Asia", True) for _ in range(10)]  # repeated but right
    after = [_prediction("capital", "Paris", False) for _ in range(15)]
    after += [_prediction("capital", "I don't know", False, refused=True) for _ in range(5)]
    after += [_prediction("continent", "Asia", True) for _ in range(10)]
    result = answer_collapse(before, after, explode_share=0.1)
    assert result.before.n_distinct == 21 and result.after.n_distinct == 3
    assert result.before.exploded == ()  # "Asia" is mostly right: not an explosion
    (exploded,) = result.after.exploded
    assert (exploded.relation, exploded.answer, exploded.n_questions) == ("capital", "paris", 15)
    assert exploded.share == pytest.approx(0.75)
    assert result.after.refusal_rate == pytest.approx(5 / 30)
    assert result.after.entropy_bits < result.before.entropy_bits
    assert result.after.top1_share == pytest.approx(15 / 30)
    assert collapse_stats([]).n_questions == 0


def test_first_token_kl_matches_a_hand_computation():
    torch.manual_seed(0)
    tuned, base = torch.randn(3, 50), torch.randn(3, 50)
    kl = first_token_kl(tuned, base, top_k=10)
    for row in range(3):
        ids = tuned[row].topk(10).indices
        p, q = tuned[row, ids].double().softmax(-1), base[row, ids].double().softmax(-1)
        assert kl[row] == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-9)
    assert np.allclose(first_token_kl(tuned, tuned.clone()), 0.0)


def test_a_model_is_perfectly_consistent_with_itself(planted, planted_model):
    targets = planted.by_split("test")
    result = consistency(planted_model, planted_model, planted, targets, n_options=4)
    assert result.n_questions == len(targets)
    assert result.identical_answer_share == 1.0
    assert result.mean_kl == pytest.approx(0.0, abs=1e-9)
    assert result.mean_rank_correlation == pytest.approx(1.0)
    assert result.base_accuracy == result.tuned_accuracy
    # The planted facts are known, the unseen ones not: the gold option wins on the first.
    assert result.base_option_accuracy >= 0.45


def test_answer_options_put_gold_first_and_never_repeat_it(planted):
    targets = planted.by_split("test")
    options = answer_options(planted, targets, n_options=4, seed=3)
    assert options == answer_options(planted, targets, n_options=4, seed=3)  # seeded
    for fact in targets:
        assert options[fact.id][0] == fact.answer
        assert len(set(options[fact.id])) == 4 and fact.answer not in options[fact.id][1:]


def test_token_kl_of_a_model_with_itself_is_zero(planted, planted_model):
    planted_facts = [f for f in planted.by_split("test") if f.id.startswith("planted:")]
    result = token_kl(planted_model, planted_model, planted_facts, selection="planted")
    assert result.mean_kl == pytest.approx(0.0, abs=1e-9)
    assert result.tuned_accuracy == result.base_accuracy > 0.8


def test_next_token_logits_equal_a_plain_forward_pass(planted, planted_model):
    from knowshift.probe.engine import Engine

    tokenizer = planted_model.tokenizer
    prompts = [
        tuple(tokenizer(f"Q: {f.question}\nA:").input_ids) for f in planted.by_split("test")[:6]
    ]
    prompts.append(prompts[0][:-3])  # a shorter prompt in the same batch
    logits = Engine(planted_model).next_token_logits(prompts)
    for prompt, row in zip(prompts, logits, strict=True):
        with torch.no_grad():
            expected = planted_model.model(torch.tensor([prompt])).logits[0, -1].float()
        assert torch.allclose(row, expected, atol=1e-4)
