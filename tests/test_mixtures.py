"""Fine-tuning set recipes on hand-made facts and probe results: composition, sizes, seeds, errors.

The fact base has three relations whose train facts have known categories, mastery levels and
greedy answers, plus facts every recipe must leave out (dev and test facts, a multi-answer fact,
an unprobed fact). No model is involved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from knowshift.errors import KnowshiftError
from knowshift.mixtures import (
    CategorySpec,
    EntityBiasSpec,
    InterventionSpec,
    MasterySpec,
    PackSpec,
    UnknownRatioSpec,
    apportion,
    belief,
    build_examples,
    build_training_set,
    format_example,
    make_spec,
    read_training_set,
    write_training_set,
)
from knowshift.mixtures.packing import top_objects
from knowshift.types import CATEGORIES, Fact, FactSet, ProbeResult, Relation, Split

HK, MK, WK, UNK = CATEGORIES
RELATIONS = {
    "capital": Relation("capital", ("What is the capital of {subject}?",
                                    "Which city is the capital of {subject}?",
                                    "Name the capital city of {subject}.")),
    "currency": Relation("currency", ("What is the currency of {subject}?",
                                      "Which money is used in {subject}?")),
    "river": Relation("river", ("Which river flows through {subject}?",)),
}  # fmt: skip
# Train facts per relation and category; the smallest category per relation sums to 8 + 4 + 5.
LAYOUT = {
    "capital": {HK: 12, MK: 10, WK: 8, UNK: 20},
    "currency": {HK: 6, MK: 8, WK: 4, UNK: 10},
    "river": {HK: 5, MK: 6, WK: 6, UNK: 8},
}
DEFAULT_SIZE = 17
LEFT_OUT = {"capital:multi", "capital:unprobed", "capital:dev", "capital:test"}


def _result(fact_id, category=None, estimator="exact", level=None, samples=()) -> ProbeResult:
    probs = tuple(float(c == category) for c in CATEGORIES)
    return ProbeResult(fact_id, estimator, f"key-{estimator}", "model-a", None, 0.0, category,
                       probs, level, tuple(samples))  # fmt: skip


def _answers(index: int, gold: str) -> list[str]:
    """Ten greedy answers: confident-correct, confident-wrong, unconfident or 60% correct."""
    return {
        0: [gold] * 10,
        1: ["Nowhere"] * 7 + [gold] * 3,
        2: ["Alpha"] * 4 + ["Beta"] * 3 + ["Gamma"] * 3,
        3: [f"The {gold}."] * 6 + ["Elsewhere"] * 4,
    }[index % 4]


def _make() -> tuple[FactSet, dict[str, ProbeResult], dict[str, ProbeResult], dict]:
    facts, exact, mastery, greedy = [], {}, {}, {}
    for relation, layout in LAYOUT.items():
        j = 0
        for category, count in layout.items():
            for i in range(count):
                fact_id = f"{relation}:{category.value.lower()}{i:02d}"
                gold = f"{relation}-obj{min(j % 9, 5)}"
                subject = f"{relation.title()}land {category.value} {i}"
                facts.append(Fact(fact_id, relation, subject, (gold,),
                                  RELATIONS[relation].question(subject), Split.TRAIN))  # fmt: skip
                exact[fact_id] = _result(fact_id, category)
                mastery[fact_id] = _result(fact_id, None, "mastery", level=j % 5)
                greedy[fact_id] = _result(fact_id, category, "greedy", samples=_answers(j, gold))
                j += 1
    extra = [
        Fact("capital:multi", "capital", "Multiland", ("A", "B"), "Q?", Split.TRAIN, None, True),
        Fact("capital:unprobed", "capital", "Noland", ("C",), "Q?", Split.TRAIN),
        Fact("capital:dev", "capital", "Devland", ("D",), "Q?", Split.DEV),
        Fact("capital:test", "capital", "Testland", ("E",), "Q?", Split.TEST),
    ]
    for fact in extra:
        if fact.id != "capital:unprobed":
            exact[fact.id] = _result(fact.id, UNK)
            mastery[fact.id] = _result(fact.id, None, "mastery", level=0)
    return FactSet("hand", RELATIONS, tuple(facts + extra)), exact, mastery, greedy


FACTS, EXACT, MASTERY, GREEDY = _make()
BY_ID = {f.id: f for f in FACTS.facts}


def _build(recipe, spec, seed=0, results=EXACT):
    return build_examples(recipe, FACTS, results, spec, seed)


def _per(examples, key):
    return Counter(key(e) for e in examples)


# --- Formatting and apportioning -------------------------------------------------------------


def test_format_example_plain_is_the_probe_format_and_tagged_is_ye_et_al():
    assert format_example("What is X?", "Y") == ("Q: What is X?\nA:", " Y\n")
    assert format_example("What is X?", "Y", "tagged") == (
        "<|question|> What is X? <|answer|>",
        " Y",
    )
    with pytest.raises(KnowshiftError, match="template"):
        format_example("q", "a", "chatml")


def test_apportion_is_exact_and_proportional():
    assert apportion(9, {"a": 8, "b": 4, "c": 5}) == {"a": 4, "b": 2, "c": 3}
    assert apportion(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}  # ties by name
    assert sum(apportion(1000, {"x": 0.3, "y": 0.3, "z": 0.4}).values()) == 1000


# --- unknown-ratio and known-only ------------------------------------------------------------


@pytest.mark.parametrize("frac", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_unknown_share_is_exact_and_the_relation_mix_never_changes(frac):
    examples = _build("unknown-ratio", UnknownRatioSpec(frac_unknown=frac))
    assert _per(examples, lambda e: e.relation) == {"capital": 8, "currency": 4, "river": 5}
    unknown = [e for e in examples if e.category == UNK.value]
    assert len(unknown) == int(frac * DEFAULT_SIZE + 0.5)  # the total is exact
    for relation, n in _per(examples, lambda e: e.relation).items():
        n_unknown = sum(e.relation == relation for e in unknown)
        assert abs(n_unknown - frac * n) < 1  # and each relation within one of its share
    assert all(BY_ID[e.fact_id].split == Split.TRAIN for e in examples)
    assert not {e.fact_id for e in examples} & LEFT_OUT
    sized = _build("unknown-ratio", UnknownRatioSpec(frac_unknown=frac, size=30))
    assert _per(sized, lambda e: e.relation) == {"capital": 15, "currency": 8, "river": 7}
    assert len({e.fact_id for e in examples}) == len(examples)


def test_half_unknown_is_exactly_half_within_each_relation_of_even_size():
    spec = UnknownRatioSpec(frac_unknown=0.5, size=12, relations=("capital", "currency"))
    counts = _per(_build("unknown-ratio", spec), lambda e: (e.relation, e.category == UNK.value))
    # The pool's relation mix is 50 : 28 facts, so 12 examples are 8 capital and 4 currency.
    assert counts == {("capital", True): 4, ("capital", False): 4,
                      ("currency", True): 2, ("currency", False): 2}  # fmt: skip


def test_known_is_every_category_but_unknown():
    examples = _build("unknown-ratio", UnknownRatioSpec(frac_unknown=0.0, size=50))
    assert set(_per(examples, lambda e: e.category)) == {HK.value, MK.value, WK.value}


def test_a_lower_share_takes_a_subset_of_a_higher_shares_unknown_facts():
    def unknown_ids(frac):
        examples = _build("unknown-ratio", UnknownRatioSpec(frac_unknown=frac))
        return {e.fact_id for e in examples if e.category == UNK.value}

    assert unknown_ids(0.25) < unknown_ids(0.5) < unknown_ids(1.0)


def test_known_only_is_unknown_ratio_without_its_unknown_part():
    spec = UnknownRatioSpec(frac_unknown=0.5)
    full = _build("unknown-ratio", spec, seed=3)
    known = _build("known-only", spec, seed=3)
    assert known == [e for e in full if e.category != UNK.value]
    assert len(known) == DEFAULT_SIZE - 9


@pytest.mark.parametrize(
    ("recipe", "spec", "results"),
    [
        ("unknown-ratio", UnknownRatioSpec(frac_unknown=0.5), EXACT),
        ("known-only", UnknownRatioSpec(frac_unknown=0.5), EXACT),
        ("category", CategorySpec(category="natural"), EXACT),
        ("mastery", MasterySpec(mastery_level=3, size=9), MASTERY),
        ("pack", PackSpec(n_unknown=4, k_additions=2, addition="highly-known"), EXACT),
        ("intervention", InterventionSpec(group="mixture", ratio=0.5, size=10), GREEDY),
        ("entity-bias", EntityBiasSpec(n_objects=1), EXACT),
    ],
)
def test_same_seed_same_set_other_seed_other_selection(recipe, spec, results):
    first = _build(recipe, spec, seed=1, results=results)
    assert first == _build(recipe, spec, seed=1, results=results)
    other = _build(recipe, spec, seed=2, results=results)
    assert len(other) == len(first)
    assert [(e.fact_id, e.kind) for e in other] != [(e.fact_id, e.kind) for e in first]


def test_asking_for_more_than_exists_says_how_many_exist_and_what_to_lower():
    with pytest.raises(
        KnowshiftError, match=r"capital needs 34, has 20.*lower --size or lower --fr"
    ):
        _build("unknown-ratio", UnknownRatioSpec(frac_unknown=1.0, size=70))
    with pytest.raises(KnowshiftError, match=r"--size 500 is more than the 103 probed facts"):
        _build("unknown-ratio", UnknownRatioSpec(size=500))
    with pytest.raises(KnowshiftError, match=r"Known facts: .*has 30"):
        _build("unknown-ratio", UnknownRatioSpec(frac_unknown=0.0, size=80))


def test_default_size_needs_every_category_in_some_relation():
    no_wk = {k: replace(r, category=MK) if r.category == WK else r for k, r in EXACT.items()}
    with pytest.raises(KnowshiftError, match="all four categories.*pass --size"):
        _build("unknown-ratio", UnknownRatioSpec(), results=no_wk)
    examples = _build("unknown-ratio", UnknownRatioSpec(size=10), results=no_wk)
    assert len(examples) == 10


# --- category and mastery --------------------------------------------------------------------


@pytest.mark.parametrize("name", [c.value for c in CATEGORIES] + ["natural"])
def test_category_sets_have_the_unknown_ratio_sizes(name):
    examples = _build("category", CategorySpec(category=name))
    assert _per(examples, lambda e: e.relation) == {"capital": 8, "currency": 4, "river": 5}
    if name != "natural":
        assert {e.category for e in examples} == {name}
    sized = _build("category", CategorySpec(category=name, size=10), seed=4)
    reference = _build("unknown-ratio", UnknownRatioSpec(size=10), seed=4)
    assert _per(sized, lambda e: e.relation) == _per(reference, lambda e: e.relation)


def test_natural_mix_follows_the_pool_and_category_names_are_forgiving():
    examples = _build("category", CategorySpec(category="natural", size=103))
    assert _per(examples, lambda e: e.category) == {HK.value: 23, MK.value: 24, WK.value: 18,
                                                    UNK.value: 38}  # fmt: skip
    assert CategorySpec(category="maybeknown").category == "MaybeKnown"
    with pytest.raises(KnowshiftError, match="did you mean 'HighlyKnown'"):
        CategorySpec(category="HighlyKnow")
    with pytest.raises(KnowshiftError, match=r"HighlyKnown facts: capital needs 13, has 12"):
        _build("category", CategorySpec(category="HighlyKnown", size=26))


def test_mastery_sets_are_balanced_across_relations_at_one_level():
    examples = _build("mastery", MasterySpec(mastery_level=2, size=13), results=MASTERY)
    assert _per(examples, lambda e: e.relation) == {"capital": 5, "currency": 4, "river": 4}
    assert {e.mastery_level for e in examples} == {2} and {e.category for e in examples} == {None}
    default = _build("mastery", MasterySpec(mastery_level=2), results=MASTERY)
    assert _per(default, lambda e: e.relation) == {"capital": 5, "currency": 5, "river": 5}
    with pytest.raises(KnowshiftError, match=r"level-2 facts: capital needs 11, has 10"):
        _build("mastery", MasterySpec(mastery_level=2, size=31), results=MASTERY)
    with pytest.raises(KnowshiftError, match="no mastery levels"):
        _build("mastery", MasterySpec(mastery_level=2), results=EXACT)
    with pytest.raises(KnowshiftError, match="no SliCK categories"):
        _build("category", CategorySpec(category="natural"), results=MASTERY)


# --- idk ---------------------------------------------------------------------------------------


def test_idk_replaces_only_unknown_answers():
    plain = _build("unknown-ratio", UnknownRatioSpec())
    idk = _build("idk:unknown-ratio", UnknownRatioSpec())
    assert idk == _build("unknown-ratio", UnknownRatioSpec(idk=True))
    for before, after in zip(plain, idk, strict=True):
        if before.category == UNK.value:
            assert (after.answer, after.completion, after.kind) == (
                "I don't know",
                " I don't know\n",
                "idk",
            )
            assert after.prompt == before.prompt
        else:
            assert after == before
    tagged = _build("idk:category", CategorySpec(category="Unknown", refusal="No idea",
                                                 template="tagged"))  # fmt: skip
    assert {e.completion for e in tagged} == {" No idea"}


# --- pack --------------------------------------------------------------------------------------


def test_pack_of_paraphrases_asks_each_unknown_fact_with_the_other_templates():
    examples = _build(
        "pack", PackSpec(n_unknown=6, k_additions=3, relations=("capital", "currency"))
    )
    assert len(examples) == 6 * (3 + 1)
    for start in range(0, len(examples), 4):
        head, *additions = examples[start : start + 4]
        assert head.kind == "gold" and head.category == UNK.value and head.question_template == 0
        n_templates = len(RELATIONS[head.relation].question_templates)
        expected = [1 + j % (n_templates - 1) for j in range(3)]
        assert [a.question_template for a in additions] == expected
        assert {a.fact_id for a in additions} == {head.fact_id}
        assert all(a.kind == "paraphrase" and a.question != head.question for a in additions)
        assert all(a.answer == head.answer for a in additions)
    with pytest.raises(KnowshiftError, match="river has no paraphrase templates"):
        _build("pack", PackSpec(n_unknown=38, k_additions=1))


def test_pack_with_highly_known_additions_reuses_facts_only_when_all_are_used():
    examples = _build("pack", PackSpec(n_unknown=5, k_additions=4, addition="highly-known"))
    additions = [e for e in examples if e.kind == "addition"]
    assert len(examples) == 25 and len(additions) == 20
    assert {e.category for e in additions} == {HK.value}
    assert len({e.fact_id for e in additions}) == 20  # 23 HighlyKnown facts: no reuse yet
    many = _build("pack", PackSpec(n_unknown=10, k_additions=4, addition="highly-known"))
    counts = Counter(e.fact_id for e in many if e.kind == "addition")
    assert len(counts) == 23 and max(counts.values()) == 2
    with pytest.raises(KnowshiftError, match=r"--n-unknown 39 is more than the 38 Unknown"):
        _build("pack", PackSpec(n_unknown=39))


# --- intervention ------------------------------------------------------------------------------


def test_belief_is_the_majority_greedy_answer_and_its_share():
    fact = BY_ID["capital:highlyknown01"]  # pattern 1: 7 x "Nowhere", 3 x gold
    assert belief(fact, GREEDY[fact.id]) == belief(fact, GREEDY[fact.id], 16)
    assert belief(fact, GREEDY[fact.id]).answer == "Nowhere"
    assert belief(fact, GREEDY[fact.id]).confidence == 0.7
    assert not belief(fact, GREEDY[fact.id]).correct
    fact3 = BY_ID["capital:highlyknown03"]  # pattern 3: "The {gold}." x 6
    assert belief(fact3, GREEDY[fact3.id]).correct
    # Sampling results hold [greedy] + n samples per exemplar set.
    samples = [a for g in _answers(1, fact.answer) for a in (g, "noise", "noise")]
    sampled = _result(fact.id, UNK, "sampling", samples=samples)
    assert belief(fact, sampled, n_samples=2) == belief(fact, GREEDY[fact.id])
    with pytest.raises(KnowshiftError, match="not a multiple of n_samples"):
        belief(fact, sampled, n_samples=16)


def test_intervention_groups_follow_confidence_and_correctness():
    def build(group, ratio=None, **kw):
        spec = InterventionSpec(group=group, ratio=ratio, **kw)
        return _build("intervention", spec, results=GREEDY)

    harmonious, incompatible = build("harmonious"), build("incompatible")
    self_aligning, mixture = build("self-aligning"), build("mixture", 0.5)
    # 103 facts by pattern j % 4: 26 + 26 confident-correct (0, 3), 26 confident-wrong (1).
    assert len(harmonious) == len(incompatible) == len(self_aligning) == len(mixture) == 26
    patterns = {e.fact_id: _pattern(e.fact_id) for e in harmonious + incompatible}
    assert {patterns[e.fact_id] for e in harmonious} <= {0, 3}
    assert {patterns[e.fact_id] for e in incompatible} == {1}
    assert all(e.kind == "gold" and e.answer == BY_ID[e.fact_id].answer for e in incompatible)
    assert [e.fact_id for e in self_aligning] == [e.fact_id for e in incompatible]
    assert {(e.kind, e.answer) for e in self_aligning} == {("self-aligned", "Nowhere")}
    assert [e.fact_id for e in mixture] == [e.fact_id for e in incompatible]
    assert _per(mixture, lambda e: e.kind) == {"self-aligned": 13, "gold": 13}
    quarter = {e.fact_id for e in build("mixture", 0.25) if e.kind == "self-aligned"}
    assert len(quarter) == 7 and quarter < {e.fact_id for e in mixture if e.kind == "self-aligned"}
    assert len(build("harmonious", size=40)) == 40  # 52 confident-correct facts exist
    with pytest.raises(KnowshiftError, match="--size 40 is more than the 26 confident-wrong"):
        build("incompatible", size=40)


def _pattern(fact_id: str) -> int:
    fact = BY_ID[fact_id]
    facts = [f for f in FACTS.facts if f.relation == fact.relation and f.split == Split.TRAIN]
    return facts.index(fact) % 4


def test_intervention_needs_answers_and_confident_facts():
    with pytest.raises(KnowshiftError, match="--estimator greedy or --estimator sampling"):
        _build("intervention", InterventionSpec(group="harmonious"))
    with pytest.raises(KnowshiftError, match="0 confident-wrong"):
        _build("intervention", InterventionSpec(group="harmonious", min_confidence=0.8),
               results=GREEDY)  # fmt: skip


# --- entity-bias -------------------------------------------------------------------------------


def test_entity_bias_fills_its_share_with_the_top_objects():
    spec = EntityBiasSpec(size=40, n_objects=1, frac_biased=0.75)
    examples = _build("entity-bias", spec)
    reference = _build("category", CategorySpec(category="natural", size=40))
    assert _per(examples, lambda e: e.relation) == _per(reference, lambda e: e.relation)
    top = {r: f"{r}-obj5" for r in RELATIONS}  # 4 of every 9 facts: the most frequent object
    biased = [e for e in examples if e.answer == top[e.relation]]
    assert len(biased) == 30
    sizes = _per(examples, lambda e: e.relation)
    assert _per(biased, lambda e: e.relation) == apportion(30, sizes)
    unbiased = _build("entity-bias", EntityBiasSpec(size=40, n_objects=1, frac_biased=0.0))
    assert len(unbiased) == 40 and not [e for e in unbiased if e.answer == top[e.relation]]
    with pytest.raises(KnowshiftError, match="top 1 objects.*raise --n-objects"):
        _build("entity-bias", EntityBiasSpec(size=90, n_objects=1, frac_biased=1.0))


def test_top_objects_break_ties_by_seed():
    pool = [BY_ID[f"capital:unknown{i:02d}"] for i in range(20)]
    # capital-obj5 answers 8 of these facts, obj3 and obj4 three each, the others two.
    assert top_objects(pool, 1, "0:x") == {"capital obj5"}
    seconds = {frozenset(top_objects(pool, 2, f"{seed}:x") - {"capital obj5"}) for seed in range(8)}
    assert seconds == {frozenset({"capital obj3"}), frozenset({"capital obj4"})}


# --- specs, manifest, files --------------------------------------------------------------------


def test_specs_reject_bad_values_with_the_flag_to_fix():
    with pytest.raises(KnowshiftError, match=r"--frac-unknown must be between 0 and 1, got 1.5"):
        UnknownRatioSpec(frac_unknown=1.5)
    with pytest.raises(KnowshiftError, match=r"--size must be at least 1"):
        UnknownRatioSpec(size=0)
    with pytest.raises(KnowshiftError, match=r"--group mixture needs --ratio"):
        InterventionSpec(group="mixture")
    with pytest.raises(KnowshiftError, match=r"--idk needs SliCK categories"):
        make_spec("idk:mastery", {"mastery_level": 1})
    with pytest.raises(KnowshiftError, match=r"unknown recipe 'unknown-ration' \(did you mean"):
        make_spec("unknown-ration", {})
    with pytest.raises(KnowshiftError, match=r"--frac-unknown does not apply to recipe pack"):
        make_spec("pack", {"n_unknown": 3, "frac_unknown": 0.5})
    with pytest.raises(KnowshiftError, match=r"recipe pack needs --n-unknown"):
        make_spec("pack", {"size": None})
    with pytest.raises(KnowshiftError, match=r"relation in hand 'capitol'"):
        _build("unknown-ratio", UnknownRatioSpec(relations=("capitol",)))
    assert make_spec("idk:unknown-ratio", {"size": 5, "category": None}) == UnknownRatioSpec(
        size=5, idk=True
    )


def test_results_of_several_probes_are_refused():
    mixed = {**EXACT, "capital:unknown00": replace(EXACT["capital:unknown00"], params_key="other")}
    with pytest.raises(KnowshiftError, match="mix 2 estimators, settings or models"):
        _build("unknown-ratio", UnknownRatioSpec(), results=mixed)


def test_training_set_round_trips_with_its_manifest(tmp_path):
    built = build_training_set(
        "idk:unknown-ratio", FACTS, EXACT, UnknownRatioSpec(frac_unknown=0.5), 7,
        model="tiny", probe_params={"n_exemplar_sets": 10},
    )  # fmt: skip
    manifest = built.manifest
    assert manifest.n_examples == DEFAULT_SIZE == sum(manifest.counts_by_relation.values())
    assert manifest.counts_by_kind == {"gold": 8, "idk": 9}
    assert manifest.counts_by_category[UNK.value] == 9
    assert manifest.counts_by_relation == {"capital": 8, "currency": 4, "river": 5}
    assert manifest.counts_by_relation_category["capital"][UNK.value] == 4
    assert (manifest.recipe, manifest.seed, manifest.spec["idk"]) == ("idk:unknown-ratio", 7, True)
    assert (manifest.estimator, manifest.params_key, manifest.model_fingerprint) == (
        "exact", "key-exact", "model-a")  # fmt: skip
    assert manifest.facts_source == "hand" and manifest.knowshift_version
    write_training_set(built.examples, manifest, tmp_path / "set")
    assert read_training_set(tmp_path / "set") == built
    line = (tmp_path / "set" / "train.jsonl").read_text().splitlines()[0]
    assert line.startswith('{"prompt": "Q: ')
    (tmp_path / "set" / "train.jsonl").write_text(line + "\n")
    with pytest.raises(KnowshiftError, match="does not match its manifest"):
        read_training_set(tmp_path / "set")
    with pytest.raises(KnowshiftError, match="no train.jsonl"):
        read_training_set(tmp_path / "nothing")
