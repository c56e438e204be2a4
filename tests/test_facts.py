"""Fact sources read from files: EntityQuestions, PopQA, JSONL, CSV, and their errors."""

from __future__ import annotations

import json

import pytest
from helpers import fact_source_error

from knowshift.facts import SOURCE_NAMES, load_facts
from knowshift.types import Split

CHILDREN = {"Alan Smith": "Tom Smith", "Albert Jones": "Ann Jones", "Anna Lee": "Bo Lee",
            "Ben O'Neil": "Cy O'Neil", "Carl Nash": "Dee Nash", "Dora Kim": "Eli Kim"}  # fmt: skip
COLOURS = {"Alice": "blue", "Alfred": "red", "Bob": "green", "Carol": "teal"}


def _write_eq(root, relation, split, items):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / f"{relation}.{split}.json").write_text(json.dumps(items), encoding="utf-8")


@pytest.fixture
def eq_dir(tmp_path):
    root = tmp_path / "eq"
    people = list(CHILDREN.items())
    for split, chunk in (("train", people[:3]), ("dev", people[3:5]), ("test", people[5:])):
        items = [{"question": f"Who is {p}'s child?", "answers": [c]} for p, c in chunk]
        _write_eq(root, "P40", split, items)
    colours = [{"question": f"What is the favourite colour of {p}?", "answers": [c]}
               for p, c in COLOURS.items()]  # fmt: skip
    _write_eq(root, "P999", "train", colours[:3])
    _write_eq(root, "P999", "test", colours[3:])
    return root


def _one(facts, relation, subject):
    [fact] = [f for f in facts.by_relation(relation) if f.subject == subject]
    return fact


def test_entity_questions_recovers_subjects(eq_dir):
    facts = load_facts(f"entity-questions:{eq_dir}")
    assert {f.subject for f in facts.by_relation("P40")} == set(CHILDREN)
    child = _one(facts, "P40", "Ben O'Neil")
    assert child.answers == ("Cy O'Neil",) and child.question == "Who is Ben O'Neil's child?"
    assert _one(facts, "P40", "Dora Kim").split == Split.TEST
    relation = facts.relations["P40"]
    assert relation.question_templates[0] == "Who is {subject}'s child?"
    assert len(relation.question_templates) >= 3 and len(relation.completion_templates) >= 4


def test_entity_questions_outside_the_table_get_generic_templates(eq_dir):
    facts = load_facts(str(eq_dir))  # bare directory: EntityQuestions
    assert {f.subject for f in facts.by_relation("P999")} == set(COLOURS)
    relation = facts.relations["P999"]
    assert relation.question_templates[0] == "What is the favourite colour of {subject}?"
    assert len(relation.question_templates) >= 3 and len(relation.completion_templates) >= 4
    for fact in facts.facts:
        assert facts.relations[fact.relation].question(fact.subject) == fact.question


def test_entity_questions_drops_train_facts_that_leak_test_entities(tmp_path):
    root = tmp_path / "eq"
    _write_eq(root, "P26", "train", [
        {"question": "Who is Ann married to?", "answers": ["Bob"]},   # Bob is a test subject
        {"question": "Who is Cid married to?", "answers": ["Dee"]},
    ])  # fmt: skip
    _write_eq(root, "P26", "test", [{"question": "Who is Bob married to?", "answers": ["Ann"]}])
    facts = load_facts(f"entity-questions:{root}")
    assert {f.subject for f in facts.by_split("train")} == {"Cid"}


def test_popqa_tsv(tmp_path):
    path = tmp_path / "popqa.tsv"
    header = "id\tsubj\tprop\tobj\ts_pop\tquestion\tpossible_answers\tsubj_id"
    rows = [
        '1\tGeorge Rankin\toccupation\tpolitician\t142\tWhat is George Rankin\'s occupation?\t["politician", "political leader"]\t7',
        '2\tJohn Smith\toccupation\tboxer\t9\tWhat is John Smith\'s occupation?\t["boxer"]\t8',
        '3\tJohn Smith\toccupation\tsinger\t9\tWhat is John Smith\'s occupation?\t["singer"]\t9',
        '4\tLyon\tcountry\tFrance\t9000\tIn what country is Lyon?\t["France"]\t10',
    ]  # fmt: skip
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    facts = load_facts(f"popqa:{path}")
    rankin = _one(facts, "occupation", "George Rankin")
    assert rankin.answers == ("politician", "political leader") and rankin.popularity == 142
    assert facts.relations["occupation"].question_templates[0] == "What is {subject}'s occupation?"
    assert facts.relations["country"].question_templates[0] == "In what country is {subject}?"
    smith = _one(facts, "occupation", "John Smith")
    assert smith.multi_answer and set(smith.answers) == {"boxer", "singer"}
    assert load_facts(str(path)) == facts  # bare .tsv: PopQA


def test_jsonl_with_and_without_subjects(tmp_path):
    path = tmp_path / "facts.jsonl"
    records = [
        {"question": "What is the capital of Peru?", "answer": "Lima", "relation": "capital"},
        {"question": "What is the capital of Chad?", "answers": ["N'Djamena"], "relation": "capital"},
        {"question": "Who wrote Dune?", "answer": "Frank Herbert", "subject": "Dune",
         "relation": "author", "popularity": 5},
        {"question": "Why is the sky blue?", "answer": "Rayleigh scattering"},
        {"question": "What is love?", "answer": "baby don't hurt me"},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    facts = load_facts(f"jsonl:{path}")
    assert {f.subject for f in facts.by_relation("capital")} == {"Peru", "Chad"}
    assert facts.relations["capital"].question_templates[0] == "What is the capital of {subject}?"
    assert _one(facts, "author", "Dune").popularity == 5
    # Free-form questions share no pattern: the question is the subject.
    assert facts.relations["default"].question_templates[0] == "{subject}"
    assert _one(facts, "default", "What is love?").answers == ("baby don't hurt me",)
    for fact in facts.facts:
        assert facts.relations[fact.relation].question(fact.subject) == fact.question
    assert load_facts(str(path)) == facts


def test_json_list_file_with_given_splits(tmp_path):
    path = tmp_path / "facts.json"
    records = [{"question": f"Q{i}?", "answer": "a", "split": s, "id": f"q{i}"}
               for i, s in enumerate(["train", "dev", "test", "validation"])]  # fmt: skip
    path.write_text(json.dumps(records), encoding="utf-8")
    facts = load_facts(str(path))
    assert [f.split for f in facts.facts] == [Split.TRAIN, Split.DEV, Split.TEST, Split.DEV]
    assert [f.id for f in facts.facts] == ["q0", "q1", "q2", "q3"]


def test_csv_answers_as_pipes_or_json(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text(
        "question,answers,subject,relation\n"
        "Where is Kyiv?,Ukraine|Ukrainian SSR,Kyiv,country\n"
        '"Where is Oslo, really?","[""Norway"", ""Kingdom of Norway""]",Oslo,country\n',
        encoding="utf-8",
    )
    facts = load_facts(f"csv:{path}")
    assert _one(facts, "country", "Kyiv").answers == ("Ukraine", "Ukrainian SSR")
    assert _one(facts, "country", "Oslo").answers == ("Norway", "Kingdom of Norway")
    assert load_facts(str(path)) == facts


def test_generic_splits_are_deterministic(tmp_path):
    path = tmp_path / "many.jsonl"
    lines = [json.dumps({"question": f"What is the code of item {i}?", "answer": str(i)})
             for i in range(200)]  # fmt: skip
    path.write_text("\n".join(lines), encoding="utf-8")
    first, second = load_facts(str(path)), load_facts(str(path))
    assert first == second
    sizes = {split: len(first.by_split(split)) for split in Split}
    assert sizes == {Split.TRAIN: 140, Split.DEV: 20, Split.TEST: 40}


def test_unknown_source_name_lists_the_valid_ones():
    message = fact_source_error("entity-question:/tmp/x")
    assert "did you mean 'entity-questions'" in message
    assert all(name in message for name in SOURCE_NAMES)
    assert "geo" in fact_source_error("goe")


def test_missing_paths(tmp_path):
    assert "no such file" in fact_source_error(f"jsonl:{tmp_path / 'absent.jsonl'}")
    assert "no such file" in fact_source_error(tmp_path / "absent.csv")
    assert "no such directory" in fact_source_error(f"entity-questions:{tmp_path / 'absent'}")
    assert "no EntityQuestions files" in fact_source_error(f"entity-questions:{tmp_path}")


def test_malformed_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "Q?", "answer": "a"}\n{"question": "Q2?", \n', encoding="utf-8")
    message = fact_source_error(path)
    assert f"{path} line 2" in message and "malformed JSON" in message


def test_empty_answers_name_the_line(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"question": "Q?", "answers": []}\n', encoding="utf-8")
    assert f"{path} line 1: no answers" in fact_source_error(path)
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text("question,answer\nQ?,a\nQ2?,\n", encoding="utf-8")
    assert f"{csv_path} line 3: no answers" in fact_source_error(csv_path)


def test_missing_column_and_bad_values(tmp_path):
    path = tmp_path / "nocol.csv"
    path.write_text("query,answer\nQ?,a\n", encoding="utf-8")
    assert "missing column question" in fact_source_error(path)
    tsv = tmp_path / "popqa.tsv"
    tsv.write_text("subj\tprop\tquestion\n", encoding="utf-8")
    assert "missing column possible_answers" in fact_source_error(tsv)
    path = tmp_path / "split.jsonl"
    path.write_text('{"question": "Q?", "answer": "a", "split": "holdout"}\n', encoding="utf-8")
    assert "unknown split 'holdout'" in fact_source_error(path)
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"question": "Q?", "answer": "a", "split": "train"}\n'
                    '{"question": "R?", "answer": "b"}\n', encoding="utf-8")  # fmt: skip
    assert f"{path} line 2: split given for some rows only" in fact_source_error(path)
    path = tmp_path / "ids.jsonl"
    path.write_text('{"question": "Q?", "answer": "a", "id": "x"}\n'
                    '{"question": "R?", "answer": "b", "id": "x"}\n', encoding="utf-8")  # fmt: skip
    assert "duplicate fact id 'x'" in fact_source_error(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("question,answer\nWhere is Zürich?,Switzerland\n".encode("latin-1"))
    message = fact_source_error(path)
    assert f"{path} line 2" in message and "UTF-8" in message


def test_bad_specs():
    assert "geo takes no path" in fact_source_error("geo:somewhere")
    assert "needs a path" in fact_source_error("csv:")
