"""EntityQuestions as published: the unpacked dataset.zip, read as it comes.

The download unpacks to dataset/{train,dev,test}/P<id>.<split>.json, each file a JSON list of
{"question", "answers"} with no subject and no id, plus folders that are not splits (one-off/).
The tests write a small download in exactly that layout and read it through `load_facts` and the
command line, as a user would.
"""

from __future__ import annotations

import json

import pytest
from helpers import fact_source_error, run_cli

from knowshift.facts import load_facts
from knowshift.types import Split

# relation -> split -> (question, answers) rows, as the published files hold them. P36 and P40 are
# in distribution in Gekhman et al., P50 out of distribution; P937 is not in knowshift's table.
DOWNLOAD = {
    "P36": {
        "train": [("What is the capital of France?", ["Paris"]),  # France is also a test subject
                  ("What is the capital of Peru?", ["Lima"]),
                  ("What is the capital of Kenya?", ["Nairobi"])],
        "dev": [("What is the capital of Chile?", ["Santiago"]),
                ("What is the capital of Norway?", ["Oslo"]),
                ("What is the capital of Egypt?", ["Cairo"])],
        "test": [("What is the capital of France?", ["Paris"]),
                 ("What is the capital of Japan?", ["Tokyo"]),
                 ("What is the capital of Italy?", ["Rome"])],
    },
    "P40": {
        # Two correct answers: the same question twice, one child each.
        "train": [("Who is Charles Darwin's child?", ["Francis Darwin"]),
                  ("Who is Charles Darwin's child?", ["George Darwin"]),
                  ("Who is Nicolas Cage's child?", ["Weston Cage"])],
        "dev": [("Who is Will Smith's child?", ["Jaden Smith"]),
                ("Who is Johnny Cash's child?", ["Rosanne Cash"]),
                ("Who is Bob Marley's child?", ["Ziggy Marley"])],
        "test": [("Who is Ozzy Osbourne's child?", ["Kelly Osbourne"]),
                 ("Who is Kirk Douglas's child?", ["Michael Douglas"])],
    },
    "P50": {
        "train": [("Who is the author of Emma?", ["Jane Austen", "Austen"])],  # aliases of one
        "dev": [("Who is the author of Ulysses?", ["James Joyce"]),
                ("Who is the author of Beloved?", ["Toni Morrison"]),
                ("Who is the author of Dune?", ["Frank Herbert"])],
        "test": [("Who is the author of Dracula?", ["Bram Stoker"]),
                 ("Who is the author of The Trial?", ["Franz Kafka"])],
    },
    "P937": {
        "dev": [("Where did Marie Curie work?", ["Paris"]),
                ("Where did Alan Turing work?", ["Manchester"]),
                ("Where did Niels Bohr work?", ["Copenhagen"])],
        "test": [("Where did Enrico Fermi work?", ["Chicago"])],
    },
}  # fmt: skip
N_FACTS = 24  # of 27 rows: Darwin's two rows are one two-answer fact (dropped); train France leaks


@pytest.fixture
def download(tmp_path):
    """The unpacked dataset.zip: tmp_path/entity_questions/dataset/..., with a one-off/ folder."""
    dataset = tmp_path / "entity_questions" / "dataset"
    for relation, splits in DOWNLOAD.items():
        for split, rows in splits.items():
            (dataset / split).mkdir(parents=True, exist_ok=True)
            items = [{"question": question, "answers": answers} for question, answers in rows]
            path = dataset / split / f"{relation}.{split}.json"
            path.write_text(json.dumps(items, indent=2), encoding="utf-8")
    (dataset / "one-off" / "nq-seen-questions").mkdir(parents=True)
    (dataset / "one-off" / "P36.test.json").write_text("not read", encoding="utf-8")
    return dataset


def _fact(facts, relation, subject):
    [fact] = [f for f in facts.by_relation(relation) if f.subject == subject]
    return fact


def _subjects(facts, relation, split=None):
    return {f.subject for f in facts.by_relation(relation, split)}


def test_the_download_loads_from_its_folder_or_the_one_above(download):
    facts = load_facts(f"entity-questions:{download}")
    assert len(facts.facts) == N_FACTS
    assert sorted(facts.relations) == ["P36", "P40", "P50", "P937"]
    for spec in (f"entity-questions:{download.parent}", str(download)):
        assert load_facts(spec).facts == facts.facts


def test_subjects_come_back_from_the_questions(download):
    facts = load_facts(f"entity-questions:{download}")
    assert _subjects(facts, "P36") == {"France", "Peru", "Kenya", "Chile", "Norway", "Egypt",
                                       "Japan", "Italy"}  # fmt: skip
    assert _fact(facts, "P40", "Kirk Douglas").answers == ("Michael Douglas",)
    trial = _fact(facts, "P50", "The Trial")
    assert trial.question == "Who is the author of The Trial?" and trial.id == "P50:trial"
    assert facts.relations["P50"].question_templates[0] == "Who is the author of {subject}?"
    assert facts.relations["P50"].description == "author"


def test_a_relation_outside_the_table_gets_generic_templates(download):
    facts = load_facts(f"entity-questions:{download}")
    assert _subjects(facts, "P937") == {"Marie Curie", "Alan Turing", "Niels Bohr", "Enrico Fermi"}
    relation = facts.relations["P937"]
    assert relation.question_templates[0] == "Where did {subject} work?"
    assert "generic" in relation.description


def test_splits_are_the_folders(download):
    facts = load_facts(f"entity-questions:{download}")
    assert _subjects(facts, "P36", Split.DEV) == {"Chile", "Norway", "Egypt"}
    assert _subjects(facts, "P36", Split.TEST) == {"France", "Japan", "Italy"}
    assert _subjects(facts, "P50", Split.TEST) == {"Dracula", "The Trial"}
    assert _subjects(facts, "P937", Split.TRAIN) == set()


def test_a_question_with_two_correct_answers_is_dropped(download):
    facts = load_facts(f"entity-questions:{download}")
    assert _subjects(facts, "P40", Split.TRAIN) == {"Nicolas Cage"}  # Darwin: two children
    assert not any(f.multi_answer for f in facts.facts)
    emma = _fact(facts, "P50", "Emma")  # one row's answers are aliases of one author: kept
    assert emma.answers == ("Jane Austen", "Austen") and emma.split == Split.TRAIN


def test_a_train_fact_whose_subject_is_in_test_is_dropped(download):
    facts = load_facts(f"entity-questions:{download}")
    assert _subjects(facts, "P36", Split.TRAIN) == {"Peru", "Kenya"}
    assert _fact(facts, "P36", "France").split == Split.TEST


def test_facts_command_summarises_the_download(download):
    status, stdout, stderr = run_cli(["facts", f"entity-questions:{download.parent}"])
    assert status == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == f"entity-questions:{download.parent}: {N_FACTS} facts, 4 relations"
    assert lines[2].split() == ["P36", "2", "3", "3", "What", "is", "the", "capital", "of",
                                "{subject}?"]  # fmt: skip
    assert lines[4].split()[:4] == ["P50", "1", "3", "2"]


@pytest.mark.usefixtures("private_cache")
def test_probe_runs_on_the_download(download, planted_model_dir, tmp_path):
    workspace = tmp_path / "workspace"
    status, stdout, stderr = run_cli([
        "probe", "--model", str(planted_model_dir), "--facts", f"entity-questions:{download}",
        "--k-shot", "2", "--n-exemplar-sets", "2", "--limit", "4", "--dtype", "float32",
        "--device", "cpu", "--workspace", str(workspace),
    ])  # fmt: skip
    assert status == 0, stderr
    assert f"probing 4 facts of entity-questions:{download}" in stderr
    assert "Unknown" in stdout  # the planted model knows none of these facts
    assert (workspace / "knowshift.db").is_file()


# --- bad downloads: one line naming the file and the fix ------------------------------------------


def test_a_folder_without_question_files(tmp_path):
    (tmp_path / "dataset" / "train").mkdir(parents=True)
    (tmp_path / "dataset" / "train" / "notes.txt").write_text("x", encoding="utf-8")
    message = fact_source_error(f"entity-questions:{tmp_path}")
    assert f"{tmp_path / 'dataset'}: no EntityQuestions files found" in message
    assert "test/P<id>.test.json" in message


def test_a_split_folder_given_for_the_download(download):
    message = fact_source_error(f"entity-questions:{download / 'test'}")
    assert "this is the test/ folder of an EntityQuestions download" in message
    assert message.endswith(f"point entity-questions: at the folder that holds it, {download}")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"data": [{"question": "What is the capital of Peru?", "answers": ["Lima"]}]},
         "P36.train.json: expected a JSON list of questions; fix the file"),
        (["What is the capital of Peru?"],
         "P36.train.json item 0: expected a JSON object with question and answers"),
        ([{"question": "What is the capital of Peru?", "answer": "Lima"}],
         "P36.train.json item 0: missing answers; give every record an answers list"),
    ],
    ids=["not-a-list", "a-question-alone", "answer-not-answers"],
)  # fmt: skip
def test_a_file_that_is_not_a_list_of_questions_and_answers(download, content, expected):
    (download / "train" / "P36.train.json").write_text(json.dumps(content), encoding="utf-8")
    message = fact_source_error(f"entity-questions:{download}")
    assert str(download / "train") in message and expected in message


def test_a_file_cut_off_names_its_line(download):
    path = download / "test" / "P50.test.json"
    path.write_text('[\n  {"question": "Who is the author of Dracula?",\n', encoding="utf-8")
    message = fact_source_error(f"entity-questions:{download}")
    assert message.startswith(f"{path} line 3: malformed JSON")
