"""Verdicts on planted study stores (no model): each store is filled through the Store API with
numbers chosen so that the finding holds, is reversed, or is too noisy to say, and the tests
assert the exact verdict the declared rule must give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knowshift.errors import KnowshiftError
from knowshift.reproduce import (
    FINDINGS,
    ModelResults,
    ResultsContext,
    StudyData,
    Verdict,
    all_verdicts,
    get_finding,
    render_results,
    results_context,
    study_verdicts,
    verdict,
)
from knowshift.reproduce.verdicts import bootstrap, percentile_interval
from knowshift.store import Store

SEEDS = (0, 1, 2)
VERSIONS = {"knowshift": "0.1.0", "torch": "2.5.1", "numpy": "2.1.0"}


# --- planting -----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "knowshift.db") as opened:
        yield opened


def add_run(store: Store, study: str, run_id: str, variant: dict, seed: int, *,
            group_sizes: dict | None = None, records=(), predictions: dict | None = None) -> None:  # fmt: skip
    """A done study run: its config, per-epoch accuracies and per-fact predictions in its
    folder (runs/<run id>/predictions/<checkpoint>.jsonl beside the store)."""
    store.register_run(run_id, {"model": "tiny-model", "train": {"seed": seed},
                                "group_sizes": group_sizes or {}, "versions": VERSIONS})  # fmt: skip
    store.put_study_run(study, run_id, {**variant, "train.seed": seed, "folder": run_id}, "done")
    for epoch, accuracy in enumerate(records):
        store.put_train_record(run_id, float(epoch), epoch, 0.0, accuracy)
    for checkpoint, rows in (predictions or {}).items():
        path = Path(store.path).parent / "runs" / run_id / "predictions" / f"{checkpoint}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def answers(
    accuracy: float, n: int = 100, *, refused: int = 0, answered_correct: int | None = None
):
    """Predictions of n in-distribution facts q0..q(n-1): the first round(accuracy * n) right;
    with `refused`, the first `refused` facts refused and `answered_correct` of the rest right."""
    right = round(accuracy * n) if answered_correct is None else refused + answered_correct
    return [{"fact_id": f"q{i:03d}", "relation": "r", "prediction": "x", "exact": refused <= i < right,
             "contains": refused <= i < right, "refused": i < refused, "category": None,
             "popularity": None, "in_distribution": True} for i in range(n)]  # fmt: skip


def plant_training(store: Store, fracs, known, unknown, accuracy, *, seeds=SEEDS, epochs=6):
    """unknown-ratio runs whose fitted shares follow known(e, seed) / unknown(e, seed) and whose
    test/in accuracy is accuracy(known fitted share of |D|, unknown fitted share, seed, epoch)."""
    for seed in seeds:
        for frac in fracs:
            n_unknown = round(100 * frac)
            records = []
            for e in range(epochs):
                k, u = known(e, seed), unknown(e, seed)
                kn, unk = k * (100 - n_unknown) / 100, u * n_unknown / 100
                records.append({"train/Known": k, "train/Unknown": u, "dev": 0.5,
                                "test": accuracy(kn, unk, seed, e), "test/in": accuracy(kn, unk, seed, e)})  # fmt: skip
            add_run(store, "unknown-ratio", f"s{seed}-u{frac}", {"build.frac_unknown": frac}, seed,
                    group_sizes={"train": 100, "train/Known": 100 - n_unknown,
                                 "train/Unknown": n_unknown}, records=records)  # fmt: skip


def noise(seed: int, epoch: int) -> float:
    return float(np.random.default_rng(100 * seed + epoch).normal(0, 0.005))


def slow_unknown(e, seed):
    return min(1.0, 0.1 * e)


def fast_known(e, seed):
    return min(1.0, 0.6 + 0.1 * e)


# --- F1: Unknown fitted slower ----------------------------------------------------------------


def test_f1_unknown_fitted_slower_is_reproduced(store):
    plant_training(store, (0.25, 0.5, 0.75), fast_known, slow_unknown, lambda *a: 0.4)
    # An IDK run fits its (refusal) Unknown examples fast; it is not evidence either way.
    add_run(store, "unknown-ratio", "idk", {"build.recipe": "idk:unknown-ratio"}, 0,
            records=[{"train/Known": 0.1, "train/Unknown": 1.0}])  # fmt: skip
    result = verdict(store, "F1")
    assert result.verdict == "reproduced"
    assert (result.n_seeds, result.n_runs) == (3, 9)
    low, high = result.intervals["fit gap"]
    assert 0 < low <= result.statistics["fit gap"] <= high
    assert result.statistics["fit gap"] == pytest.approx(100 * np.mean(
        [fast_known(e, 0) - slow_unknown(e, 0) for e in range(6)]))  # fmt: skip


def test_f1_unknown_fitted_faster_is_not_reproduced(store):
    plant_training(store, (0.25, 0.5, 0.75), slow_unknown, fast_known, lambda *a: 0.4)
    assert verdict(store, "F1").verdict == "not reproduced"


def test_f1_seeds_that_disagree_are_inconclusive(store):
    gaps = {0: 0.2, 1: -0.2, 2: 0.01}  # the gap's sign flips with the seed
    plant_training(store, (0.5,), lambda e, s: 0.5 + gaps[s], lambda e, s: 0.5, lambda *a: 0.4)
    result = verdict(store, "F1")
    assert result.verdict == "inconclusive"
    low, high = result.intervals["fit gap"]
    assert low < 0 < high
    assert "contains 0" in result.reason


# --- F2: Unknown hurts at CONVERGENCE, less at EARLY_STOP --------------------------------------


def plant_ratio_accuracy(store: Store, last, early, seeds=SEEDS):
    """Runs at 0..100% Unknown whose last / early_stop test accuracy is last(frac, seed) /
    early(frac, seed), over 100 per-fact predictions; plus a D_Known run that must not count."""
    for seed in seeds:
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
            add_run(store, "unknown-ratio", f"s{seed}-u{frac}", {"build.frac_unknown": frac}, seed,
                    predictions={"last": answers(last(frac, seed)),
                                 "early_stop": answers(early(frac, seed))})  # fmt: skip
        add_run(store, "unknown-ratio", f"s{seed}-known", {"build.recipe": "known-only"}, seed,
                predictions={"last": answers(0.0), "early_stop": answers(0.0)})  # fmt: skip


def test_f2_falling_accuracy_at_convergence_is_reproduced(store):
    plant_ratio_accuracy(store, lambda f, s: 0.6 - 0.4 * f + 0.01 * s, lambda f, s: 0.6 - 0.05 * f)
    result = verdict(store, "F2")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics["slope at CONVERGENCE"] == pytest.approx(-40, abs=1)
    assert result.statistics["slope CONVERGENCE - EARLY_STOP"] == pytest.approx(-35, abs=1)
    assert result.resampled == "seeds > facts"
    assert result.n_runs == 15  # D_Known left out


def test_f2_rising_accuracy_is_not_reproduced(store):
    plant_ratio_accuracy(store, lambda f, s: 0.2 + 0.4 * f, lambda f, s: 0.3)
    result = verdict(store, "F2")
    assert result.verdict == "not reproduced"
    assert result.part_verdicts == {"slope at CONVERGENCE": "not reproduced",
                                    "slope CONVERGENCE - EARLY_STOP": "not reproduced"}  # fmt: skip


def test_f2_slopes_that_flip_with_the_seed_are_inconclusive(store):
    slopes = {0: -0.2, 1: 0.2, 2: -0.01}
    plant_ratio_accuracy(store, lambda f, s: 0.4 + slopes[s] * f, lambda f, s: 0.4)
    assert verdict(store, "F2").verdict == "inconclusive"


# --- F3: regression signs -----------------------------------------------------------------------


def test_f3_published_signs_are_reproduced(store):
    plant_training(store, (0.0, 0.25, 0.5, 0.75, 1.0), fast_known, slow_unknown,
                   lambda kn, unk, s, e: 0.4 + 0.1 * kn - 0.1 * unk + noise(s, e))  # fmt: skip
    result = verdict(store, "F3")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics["b_kn"] == pytest.approx(10, abs=2)
    assert result.statistics["b_unk"] == pytest.approx(-10, abs=2)


def test_f3_reversed_signs_are_not_reproduced(store):
    plant_training(store, (0.0, 0.25, 0.5, 0.75, 1.0), fast_known, slow_unknown,
                   lambda kn, unk, s, e: 0.4 - 0.1 * kn + 0.1 * unk + noise(s, e))  # fmt: skip
    result = verdict(store, "F3")
    assert result.part_verdicts == {"b_kn": "not reproduced", "b_unk": "not reproduced"}
    assert result.verdict == "not reproduced"


def test_f3_collinear_regressors_are_inconclusive(store):
    # Every run is half Unknown and fits both groups alike: the two shares are always equal.
    plant_training(store, (0.5,), slow_unknown, slow_unknown,
                   lambda kn, unk, s, e: 0.4 + noise(s, e))  # fmt: skip
    result = verdict(store, "F3")
    assert result.verdict == "inconclusive"
    assert result.statistics == {"b_kn": None, "b_unk": None}
    assert "cannot be computed" in result.reason


# --- F4: MaybeKnown best, Unknown worst ---------------------------------------------------------


def test_f4_maybeknown_best_and_unknown_worst_is_reproduced(store):
    accuracy = {
        "HighlyKnown": 0.40,
        "MaybeKnown": 0.50,
        "WeaklyKnown": 0.35,
        "Unknown": 0.20,
        "natural": 0.90,
    }  # natural is a mix, not a single-category set: left out
    for seed in SEEDS:
        for category, value in accuracy.items():
            add_run(store, "categories", f"s{seed}-{category}", {"build.category": category}, seed,
                    predictions={"last": answers(value + 0.01 * seed)})  # fmt: skip
    result = verdict(store, "F4")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics["MK - best other"] == pytest.approx(10)
    assert result.statistics["Unk - worst other"] == pytest.approx(-15)


# --- F5: IDK helps accuracy on answered questions -----------------------------------------------


def plant_idk(store: Store, idk_correct: int, plain_correct: int, seeds=SEEDS) -> None:
    """Per seed an IDK run (20 of 50 refused, `idk_correct` of the 30 answered right) and the
    plain 50% Unknown run (none refused, `plain_correct` of 50 right)."""
    for seed in seeds:
        add_run(store, "unknown-ratio", f"s{seed}-idk", {"build.recipe": "idk:unknown-ratio"},
                seed, predictions={"last": answers(0, 50, refused=20, answered_correct=idk_correct)})  # fmt: skip
        add_run(store, "unknown-ratio", f"s{seed}-u0.5", {"build.frac_unknown": 0.5}, seed,
                predictions={"last": answers(plain_correct / 50, 50)})  # fmt: skip


def test_f5_idk_raises_answered_accuracy_is_reproduced(store):
    plant_idk(store, idk_correct=24, plain_correct=20)
    result = verdict(store, "F5")
    assert result.verdict == "reproduced"
    assert result.statistics["IDK - plain (answered)"] == pytest.approx(100 * (24 / 30 - 20 / 50))


def test_f5_idk_lowering_answered_accuracy_is_not_reproduced(store):
    plant_idk(store, idk_correct=6, plain_correct=30)
    assert verdict(store, "F5").verdict == "not reproduced"


# --- F6, F7: size, mastery and restoration ------------------------------------------------------


def test_f6_small_set_and_mastery_are_reproduced(store):
    accuracy = {
        (8, 0): 0.50,
        (8, 2): 0.55,
        (8, 4): 0.55,
        (32, 0): 0.30,
        (32, 2): 0.45,
        (32, 4): 0.45,
    }
    for seed in SEEDS:
        for (size, level), value in accuracy.items():
            add_run(store, "size-mastery", f"s{seed}-{size}-{level}",
                    {"build.size": size, "build.mastery_level": level}, seed,
                    predictions={"last": answers(value + 0.01 * seed)})  # fmt: skip
    result = verdict(store, "F6")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics["small - large"] == pytest.approx(40 / 3)
    assert result.statistics["levels >= 1 - level 0"] == pytest.approx(15)


def sweep(unrestored: float, top20: float, top40: float) -> dict:
    points = [(0.0, unrestored), (0.01, unrestored), (0.2, top20), (0.4, top40), (0.6, 0.05),
              (1.0, 0.3)]  # fmt: skip
    return {"points": [{"fraction": f, "mode": "top", "report": {}, "metrics": {"accuracy": a}}
                       for f, a in points]}  # fmt: skip


def test_f7_restoration_after_the_larger_set_is_reproduced(store):
    for seed in SEEDS:
        for size, result in (
            (32, sweep(0.30, 0.40 + 0.01 * seed, 0.42)),
            (8, sweep(0.5, 0.1, 0.1)),
        ):
            run_id = f"s{seed}-{size}"
            add_run(
                store, "size-mastery", run_id, {"build.size": size, "build.mastery_level": 0}, seed
            )
            store.put_analysis("restore-sweep", f"{run_id}:last", {"percents": [20, 40]}, result)
    result = verdict(store, "F7")
    assert result.verdict == "reproduced", result.reason
    assert result.n_runs == 3  # only the larger set's runs
    assert result.statistics["restored - unrestored"] == pytest.approx(
        11.5
    )  # 0.41 + 0.005 * seed - 0.30, mean over seeds


# --- F8: consistent answers beat incompatible ones ----------------------------------------------


def plant_groups(store: Store, accuracy: dict[str, float], seeds=SEEDS, *, summaries=False):
    for seed in seeds:
        for group, value in accuracy.items():
            run_id = f"s{seed}-{group}"
            value += 0.01 * seed
            if summaries:  # no predictions file: the stored eval summary alone
                add_run(store, "intervention", run_id, {"build.group": group}, seed)
                breakdown = {"n": 100, "exact": value, "contains": value, "refusal_rate": 0.0,
                             "answered_exact": value}  # fmt: skip
                store.put_analysis(
                    "eval", f"{run_id}:last", {"limit": 100}, {"all": {"all": breakdown}}
                )
            else:
                add_run(
                    store,
                    "intervention",
                    run_id,
                    {"build.group": group},
                    seed,
                    predictions={"last": answers(value)},
                )


CONSISTENT_BEST = {"harmonious": 0.60, "incompatible": 0.30, "self-aligning": 0.45}


def test_f8_consistent_groups_beating_incompatible_is_reproduced(store):
    plant_groups(store, {**CONSISTENT_BEST, "mixture": 0.0})
    result = verdict(store, "F8")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics == {"harmonious - incompatible": pytest.approx(30),
                                 "self-aligning - incompatible": pytest.approx(15)}  # fmt: skip


def test_f8_incompatible_best_is_not_reproduced(store):
    plant_groups(store, {"harmonious": 0.20, "incompatible": 0.50, "self-aligning": 0.30})
    assert verdict(store, "F8").verdict == "not reproduced"


def test_f8_one_seed_is_inconclusive(store):
    plant_groups(store, CONSISTENT_BEST, seeds=(0,))
    result = verdict(store, "F8")
    assert (result.n_seeds, result.verdict) == (1, "inconclusive")
    assert set(result.part_verdicts.values()) == {"inconclusive"}
    assert "at least 2" in result.reason


def test_f8_from_stored_summaries_resamples_seeds_only(store):
    plant_groups(store, CONSISTENT_BEST, summaries=True)
    result = verdict(store, "F8")
    assert result.verdict == "reproduced"
    assert "9 of 9 evaluations had only a stored summary" in result.resampled
    # Seeds alone vary: the interval spans the seeds' own differences, here all equal.
    assert result.intervals["harmonious - incompatible"] == pytest.approx((30, 30))


# --- F9: packing damages --------------------------------------------------------------------------


def plant_packing(store: Store, negative: float, positive: float, refused_before: float):
    for seed in SEEDS:
        for n_unknown in (10, 50):
            run_id = f"s{seed}-n{n_unknown}"
            add_run(store, "lora-packing", run_id, {"build.n_unknown": n_unknown}, seed)
            store.put_analysis("shift", f"{run_id}:last", {},
                               {"negative_share": negative + 0.01 * seed, "positive_share": positive})  # fmt: skip
            store.put_analysis("collapse", f"{run_id}:last", {}, {
                "before": {"n_distinct": 80, "refusal_rate": refused_before},
                "after": {"n_distinct": 40 - seed, "refusal_rate": refused_before / 10}})  # fmt: skip


def test_f9_packing_damage_is_reproduced(store):
    plant_packing(store, negative=0.20, positive=0.05, refused_before=0.10)
    result = verdict(store, "F9")
    assert result.verdict == "reproduced", result.reason
    assert result.statistics["distinct answers after - before"] == pytest.approx(-41)
    assert result.statistics["refusals after - before"] == pytest.approx(-9)


def test_f9_without_refusals_before_is_inconclusive_by_rule(store):
    plant_packing(store, negative=0.20, positive=0.05, refused_before=0.0)
    result = verdict(store, "F9")
    assert result.part_verdicts == {"negative - positive shifts": "reproduced",
                                    "distinct answers after - before": "reproduced",
                                    "refusals after - before": "inconclusive"}  # fmt: skip
    assert result.verdict == "inconclusive"
    assert "by rule" in result.reason


def test_f9_more_positive_shifts_is_not_reproduced(store):
    plant_packing(store, negative=0.02, positive=0.20, refused_before=0.10)
    result = verdict(store, "F9")
    assert result.part_verdicts["negative - positive shifts"] == "not reproduced"
    assert result.verdict == "not reproduced"


# --- the bootstrap, the rule, the page ----------------------------------------------------------


def test_bootstrap_is_deterministic(store):
    plant_ratio_accuracy(store, lambda f, s: 0.6 - 0.4 * f + 0.05 * s, lambda f, s: 0.6)
    first, second = verdict(store, "F2"), verdict(store, "F2")
    assert first == second
    other = verdict(store, "F2", rng_seed=7)
    assert other.statistics == first.statistics  # the estimate does not depend on the draws


def test_draws_that_cannot_be_computed_widen_the_interval():
    draws = np.array([1.0] * 90 + [float("nan")] * 10)
    low, high = percentile_interval(draws)
    assert (low, high) == (-np.inf, np.inf)  # 10% unknown draws: no side of 0 is certain
    assert percentile_interval(np.arange(1.0, 101.0)) == (3.0, 98.0)


def test_bootstrap_draws_seeds_then_their_own_resample():
    class Seed:  # resampling doubles a seed's value, so every draw shows which seeds it drew
        def __init__(self, value):
            self.value = value

        def resample(self, rng):
            return Seed(2 * self.value)

    draws = bootstrap([Seed(1.0), Seed(100.0)], lambda picked: (sum(s.value for s in picked),), 50)
    assert set(draws[:, 0].tolist()) <= {4.0, 202.0, 400.0}


def test_every_finding_is_declared_once_with_a_published_side():
    assert [f.id for f in FINDINGS] == [f"F{i}" for i in range(1, 10)]
    assert all(part.sign in (-1, 1) for f in FINDINGS for part in f.parts)
    assert get_finding("regression-signs").id == "F3"
    with pytest.raises(KnowshiftError, match="did you mean"):
        get_finding("regresion-signs")


def test_all_verdicts_covers_every_finding(tmp_path):
    with (
        Store(tmp_path / "a" / "knowshift.db") as first,
        Store(tmp_path / "b" / "knowshift.db") as second,
    ):
        plant_groups(first, CONSISTENT_BEST)
        plant_idk(second, idk_correct=24, plain_correct=20)
        verdicts = all_verdicts([first, second], n_draws=200)
    by_id = {v.finding_id: v for v in verdicts}
    assert len(verdicts) == 9
    assert by_id["F8"].verdict == by_id["F5"].verdict == "reproduced"
    assert "was not run" in by_id["F9"].reason
    assert by_id["F1"].verdict == "inconclusive"  # the IDK store has no fitted shares


def test_results_md_is_byte_stable(store):
    plant_groups(store, CONSISTENT_BEST)
    data = StudyData.from_store(store, "intervention")
    models = [ModelResults("tiny", tuple(study_verdicts(store)), results_context([data]))]
    text = render_results(models)
    assert text == render_results(models)
    again = [ModelResults("tiny", tuple(study_verdicts(store)), results_context([data]))]
    assert text == render_results(again)
    assert "Model: tiny-model." in text
    assert (
        "| F8 consistent-beats-incompatible (Ren et al., ACL 2024) | +11 to +15; +5 to +10 | "
        in text
    )
    assert "- `intervention`: 9 done runs; seeds 0, 1, 2; " in text
    assert "| torch | 2.5.1 |" in text
    assert "nan" not in text and "-0.00" not in text


def test_results_md_formats_fixed_verdicts_exactly():
    parts = ("IDK - plain (answered)",)
    verdicts = (Verdict("F5", {parts[0]: 40.0}, {parts[0]: (30.004, 49.996)},
                        {parts[0]: "reproduced"}, 3, 6, "reproduced", "why", "seeds > facts"),
                Verdict("F3", {"b_kn": None, "b_unk": -0.001}, {"b_kn": None, "b_unk": (-np.inf, 0.5)},
                        {"b_kn": "inconclusive", "b_unk": "inconclusive"}, 1, 2, "inconclusive",
                        "a | b", "seeds > runs"))  # fmt: skip
    context = ResultsContext("m", (("unknown-ratio", "|D| = 120"),), (("torch", "2.5.1"),))
    text = render_results([ModelResults("m", verdicts, context)], {"a chart": "f/a.svg"})
    assert (
        "| F5 idk-helps-answered (Gekhman et al., EMNLP 2024) | +18.8 (61.8 vs 43.0) | "
        "IDK - plain (answered) = +40.00 [+30.00, +50.00] | 3 | **reproduced** |"
    ) in text
    assert "b_kn = n/a; b_unk = +0.00 [-inf, +0.50] | 1 | **inconclusive** |" in text
    assert (
        "| F3 regression-signs (Gekhman et al., EMNLP 2024) | +7.3; -8.3 | inconclusive |" in text
    )
    assert "F4 maybeknown" not in text  # a finding no model decided has no row
    assert "- `unknown-ratio`: |D| = 120" in text
    assert "![a chart](f/a.svg)" in text
    assert text.endswith("| torch | 2.5.1 |\n")
