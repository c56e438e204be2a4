"""The built-in geo fact base."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from knowshift.facts import exact_match, load_facts, normalize_answer
from knowshift.facts.geo import build_geo
from knowshift.types import Split


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def geo(cache_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNOWSHIFT_CACHE", str(cache_dir))
        return load_facts("geo")  # builds and writes the cache


def _fact(facts, relation, subject):
    matches = [f for f in facts.by_relation(relation) if f.subject == subject]
    assert len(matches) == 1, (relation, subject, matches)
    return matches[0]


def test_geo_is_large_and_has_many_relations(geo):
    assert len(geo.relations) >= 6
    assert len(geo.facts) >= 20_000
    assert {f.relation for f in geo.facts} == set(geo.relations)


def test_every_relation_has_paraphrases_and_completions(geo):
    for relation in geo.relations.values():
        assert len(relation.question_templates) >= 3
        assert len(relation.completion_templates) >= 4
        for template in relation.question_templates + relation.completion_templates:
            assert template.format(subject="X") != template


def test_known_facts_are_right(geo):
    assert exact_match("Paris", _fact(geo, "country_capital", "France").answers)
    assert exact_match("Japan", _fact(geo, "city_country", "Tokyo").answers)
    assert exact_match("USA", _fact(geo, "city_country", "Chicago").answers)
    assert exact_match("California", _fact(geo, "us_city_state", "Los Angeles").answers)
    assert exact_match("Euro", _fact(geo, "country_currency", "Germany").answers)
    assert exact_match("Asia", _fact(geo, "country_continent", "Japan").answers)
    assert exact_match("Japanese", _fact(geo, "country_language", "Japan").answers)
    assert exact_match("India", _fact(geo, "subdivision_country", "Madhya Pradesh").answers)


def test_country_answers_carry_their_aliases(geo):
    answers = _fact(geo, "city_country", "Chicago").answers
    assert answers[0] == "United States"
    assert {"United States of America", "USA"} <= set(answers)


def test_city_facts_have_population_as_popularity(geo):
    for relation in ("city_country", "us_city_state"):
        assert all(f.popularity and f.popularity > 0 for f in geo.by_relation(relation))
    assert _fact(geo, "city_country", "Tokyo").popularity > 1_000_000


def test_shared_city_names_are_merged_and_flagged(geo):
    # Birmingham (UK, 1.2M) and Birmingham (Alabama, 0.2M): neither dominates.
    birmingham = _fact(geo, "city_country", "Birmingham")
    assert birmingham.multi_answer
    assert exact_match("UK", birmingham.answers) and exact_match("USA", birmingham.answers)
    # London, Ontario is 20 times smaller than London: the UK dominates.
    london = _fact(geo, "city_country", "London")
    assert not london.multi_answer and not exact_match("Canada", london.answers)
    for relation in geo.relations:
        subjects = Counter(normalize_answer(f.subject) for f in geo.by_relation(relation))
        assert max(subjects.values()) == 1, relation


def test_template_zero_is_each_facts_question(geo):
    for fact in geo.facts:
        assert geo.relations[fact.relation].question(fact.subject) == fact.question


def test_splits_are_deterministic_and_cached(geo, cache_dir, monkeypatch):
    assert build_geo() == geo
    assert list(cache_dir.glob("facts/geo-*.json"))
    monkeypatch.setenv("KNOWSHIFT_CACHE", str(cache_dir))
    assert load_facts("geo") == geo  # read back from the cache


def test_dev_gives_every_relation_exemplars(geo):
    for relation in geo.relations:
        sizes = Counter(f.split for f in geo.by_relation(relation))
        assert sizes[Split.DEV] >= 10
        assert sizes[Split.TRAIN] > sizes[Split.TEST] > sizes[Split.DEV] / 2


def test_no_entity_leaks_from_test_into_train(geo):
    test_entities: dict[str, set[str]] = defaultdict(set)
    test_subjects: dict[str, set[str]] = defaultdict(set)
    for fact in geo.by_split(Split.TEST):
        test_subjects[fact.relation].add(normalize_answer(fact.subject))
        test_entities[fact.relation] |= {normalize_answer(a) for a in fact.answers}
    test_entities = {r: test_entities[r] | test_subjects[r] for r in test_entities}
    for fact in geo.by_split(Split.TRAIN):
        assert normalize_answer(fact.subject) not in test_entities[fact.relation]
        assert not {normalize_answer(a) for a in fact.answers} & test_subjects[fact.relation]


def test_fact_ids_are_unique_and_readable(geo):
    assert len({f.id for f in geo.facts}) == len(geo.facts)
    assert _fact(geo, "country_capital", "France").id == "country_capital:france"
    assert _fact(geo, "city_country", "São Paulo").id == "city_country:sao-paulo"
