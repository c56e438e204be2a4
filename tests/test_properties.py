"""Property tests: no input, however malformed, crashes the fact loaders, answer normalisation,
the fine-tuning file reader or the study parser with anything but the documented KnowshiftError.

Each loader gets random bytes, random lines and random JSON structures written to a temporary
file; whatever it returns must be a sound FactSet (non-empty answers, unique ids). Example counts
are modest so the file runs in seconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from pathlib import Path

import pytest
from helpers import TOY_STUDY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knowshift.audit.data import read_sft
from knowshift.errors import KnowshiftError
from knowshift.facts import (
    contains_match,
    exact_match,
    load_facts,
    normalize_answer,
    surface_aliases,
)
from knowshift.study import parse_study
from knowshift.study.plan import Study, parse_overrides
from knowshift.types import FactSet, Split

# KNOWSHIFT_PROPERTY_EXAMPLES=2000 searches harder (minutes); the default keeps the file fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("KNOWSHIFT_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# JSON values of any shape, small: what a hand-edited or damaged record may hold.
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FACT_FIELDS = ("question", "answer", "answers", "subject", "relation", "split", "id", "popularity")
# A record that looks like a fact: known field names with values of any type, plus strays.
FACT_RECORDS = st.dictionaries(
    st.sampled_from(FACT_FIELDS) | st.text(max_size=6), JSON_VALUES, max_size=6
)
# Plausible field values, so that some random files load and the checks on success run.
PLAUSIBLE = {
    "question": st.text(min_size=1, max_size=30) | st.just("What is the capital of Kalo?"),
    "answers": st.lists(st.text(max_size=10), max_size=3) | st.text(max_size=10),
    "relation": st.sampled_from(["capital", "currency", ""]) | st.text(max_size=5),
    "split": st.sampled_from(["train", "dev", "test", "validation", "holdout", ""]),
    "id": st.text(max_size=4) | st.integers(0, 3),
    "popularity": st.integers(-5, 5) | st.floats() | st.text(max_size=3),
}
PLAUSIBLE_RECORDS = st.fixed_dictionaries(
    {"question": PLAUSIBLE["question"], "answers": PLAUSIBLE["answers"]},
    optional={k: v for k, v in PLAUSIBLE.items() if k not in ("question", "answers")},
)


_SCRATCH: list[Path] = []  # this module's folder (hypothesis runs many examples per test)
_NUMBERS = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def scratch(tmp_path_factory):
    """A folder for the examples' files, which pytest's temporary-folder policy cleans up."""
    _SCRATCH.append(tmp_path_factory.mktemp("properties"))
    yield
    _SCRATCH.clear()


def _fresh_folder() -> Path:
    folder = _SCRATCH[0] / str(next(_NUMBERS))
    folder.mkdir()
    return folder


def _write(name: str, data: bytes | str) -> Path:
    """A fresh file holding `data`."""
    path = _fresh_folder() / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def _load_or_error(spec: str) -> FactSet | None:
    """load_facts(spec): a sound FactSet, or None after a one-line KnowshiftError."""
    try:
        facts = load_facts(spec)
    except KnowshiftError as error:
        assert str(error).strip(), "an error must say something"
        return None
    ids = [f.id for f in facts.facts]
    assert len(ids) == len(set(ids)), "fact ids must be unique"
    for fact in facts.facts:
        assert fact.answers and all(a.strip() for a in fact.answers), fact
        assert isinstance(fact.split, Split) and fact.relation in facts.relations
    return facts


# --- fact loaders -----------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from(["jsonl", "csv", "tsv", "json"]))
def test_random_bytes_never_crash_a_fact_loader(data, suffix):
    _load_or_error(str(_write(f"facts.{suffix}", data)))


@SETTINGS
@given(lines=st.lists(st.text(max_size=40), max_size=6))
def test_random_lines_never_crash_the_jsonl_and_csv_loaders(lines):
    text = "\n".join(lines)
    _load_or_error(f"jsonl:{_write('facts.jsonl', text)}")
    header = "question,answer,relation\n"
    _load_or_error(f"csv:{_write('facts.csv', header + text)}")


@SETTINGS
@given(records=st.lists(FACT_RECORDS | JSON_VALUES, min_size=1, max_size=5))
def test_random_json_records_never_crash_the_jsonl_loader(records):
    text = "".join(json.dumps(r) + "\n" for r in records)
    _load_or_error(f"jsonl:{_write('facts.jsonl', text)}")
    _load_or_error(f"jsonl:{_write('facts.json', json.dumps(records))}")


@SETTINGS
@given(records=st.lists(PLAUSIBLE_RECORDS, min_size=1, max_size=8))
def test_plausible_jsonl_records_load_or_fail_cleanly(records):
    text = "".join(json.dumps(r) + "\n" for r in records)
    _load_or_error(f"jsonl:{_write('facts.jsonl', text)}")


@SETTINGS
@given(rows=st.lists(st.lists(st.text(max_size=12), min_size=0, max_size=5), max_size=6),
       header=st.lists(st.sampled_from(FACT_FIELDS) | st.text(max_size=5), max_size=5))  # fmt: skip
def test_random_csv_tables_never_crash_the_csv_loader(rows, header):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    _load_or_error(f"csv:{_write('facts.csv', buffer.getvalue())}")


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({
    "subj": st.text(max_size=10), "prop": st.text(max_size=6), "obj": st.text(max_size=8),
    "s_pop": st.text(max_size=4) | st.integers().map(str),
    "question": st.text(max_size=20),
    "possible_answers": JSON_VALUES.map(json.dumps) | st.text(max_size=10),
}), max_size=5))  # fmt: skip
def test_random_popqa_tables_never_crash_the_popqa_loader(rows):
    columns = ["id", "subj", "prop", "obj", "s_pop", "question", "possible_answers"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({"id": i, **row} for i, row in enumerate(rows))
    _load_or_error(f"popqa:{_write('popqa.tsv', buffer.getvalue())}")


@SETTINGS
@given(files=st.dictionaries(
    st.tuples(st.sampled_from(["train", "dev", "test"]), st.sampled_from(["P17", "P36", "Pxx"])),
    st.lists(FACT_RECORDS, max_size=4) | JSON_VALUES | st.binary(max_size=40),
    max_size=4))  # fmt: skip
def test_random_entity_questions_folders_never_crash_the_loader(files):
    root = _fresh_folder()
    for (split, relation), content in files.items():
        (root / split).mkdir(exist_ok=True)
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (root / split / f"{relation}.{split}.json").write_bytes(data)
    _load_or_error(f"entity-questions:{root}")


# --- answer normalisation ---------------------------------------------------------------------

TEXTS = st.text(max_size=40) | st.sampled_from(["USA", "the U.S.", "Côte d’Ivoire", "ℌ", "İ", "ß"])


@SETTINGS
@given(text=TEXTS)
def test_normal_forms_are_trimmed_single_spaced_and_stable(text):
    normal = normalize_answer(text)
    assert normal == " ".join(normal.split())
    assert normal == normalize_answer(normal)


@SETTINGS
@given(prediction=TEXTS, answers=st.lists(TEXTS, max_size=4))
def test_matching_never_crashes_and_exact_implies_contained(prediction, answers):
    exact = exact_match(prediction, answers)
    contained = contains_match(prediction, answers)
    assert isinstance(exact, bool) and isinstance(contained, bool)
    aliases = surface_aliases(answers)
    assert len({normalize_answer(a) for a in aliases}) == len(aliases)
    if (
        exact
        and normalize_answer(prediction)
        and not any(a.replace(".", "").isupper() for a in aliases)
    ):
        assert contained, (prediction, answers)


@SETTINGS
@given(a=TEXTS, b=TEXTS)
def test_exact_match_is_symmetric(a, b):
    assert exact_match(a, [b]) == exact_match(b, [a])


# --- fine-tuning files (knowshift audit) ------------------------------------------------------


@SETTINGS
@given(records=st.lists(st.dictionaries(
    st.sampled_from(["prompt", "completion", "messages", "question", "answer", "answers",
                     "source", "role", "content"]),
    JSON_VALUES | st.lists(st.dictionaries(st.sampled_from(["role", "content"]), JSON_VALUES),
                           max_size=3), max_size=4) | JSON_VALUES, min_size=1, max_size=4),
    suffix=st.sampled_from(["jsonl", "csv"]))  # fmt: skip
def test_random_fine_tuning_files_never_crash_the_reader(records, suffix):
    if suffix == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = "\n".join(",".join(map(str, r)) if isinstance(r, dict) else str(r) for r in records)
    try:
        sft = read_sft(_write(f"data.{suffix}", text))
    except KnowshiftError:
        return
    assert len(sft.examples) == len(sft.records)


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from(["jsonl", "csv"]))
def test_random_bytes_never_crash_the_fine_tuning_file_reader(data, suffix):
    with contextlib.suppress(KnowshiftError):
        read_sft(_write(f"data.{suffix}", data))


# --- study files ------------------------------------------------------------------------------

VALID = TOY_STUDY
SECTION_KEYS = {
    "model": ["name", "dtype", "nmae"],
    "facts": ["source", "relations"],
    "probe": ["estimator", "limit", "k_shot", "n_samples", "temperature", "prompt_format", "seed"],
    "build": ["recipe", "size", "frac_unknown", "category", "seed", "n_unknown", "split", "idk"],
    "train": ["epochs", "lr", "method", "batch_size", "lora_target_modules", "n_dev", "epocs"],
    "eval": ["checkpoints", "n_facts", "keep_checkpoints"],
}
YAML_SCALARS = (
    st.none() | st.booleans() | st.integers(-3, 1000) | st.floats(allow_nan=True)
    | st.sampled_from(["exact", "lora", "unknown-ratio", "known-only", "test", "5e-5", "last",
                       "Unknown", "jsonl:x.jsonl", "geo", "nosuch:x", ""])
    | st.text(max_size=8)
)  # fmt: skip
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def study_documents(draw) -> dict:
    """A valid study with a few of its values, keys or sections replaced at random."""
    document = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*SECTION_KEYS, "grid", "variants", "analyses",
                                        "study_analyses", "scale", "name", "overrides", "gird"]))  # fmt: skip
        if section in SECTION_KEYS:
            values = document.get(section)
            if not isinstance(values, dict):
                values = document[section] = {}
            values[draw(st.sampled_from(SECTION_KEYS[section]))] = draw(YAML_VALUES)
        elif section in ("grid", "overrides"):
            key = draw(st.sampled_from(["build.frac_unknown", "train.lr", "probe.limit", "x.y",
                                        "build", "train.epocs"]))  # fmt: skip
            document[section] = {key: draw(YAML_VALUES)}
        else:
            document[section] = draw(YAML_VALUES)
    return document


def _parse_or_error(document, **kwargs) -> Study | None:
    try:
        study = parse_study(document, **kwargs)
    except KnowshiftError as error:
        assert str(error).strip()
        return None
    assert study.runs and len({r.run_id for r in study.runs}) == len(study.runs)
    return study


@SETTINGS
@given(document=study_documents(), scale=st.none() | st.floats(-2, 4))
def test_damaged_study_files_parse_or_fail_cleanly(document, scale):
    study = _parse_or_error(document, scale=scale)
    if study is not None:  # the resolved document reads back as the same study
        again = parse_study(study.document)
        assert [r.run_id for r in again.runs] == [r.run_id for r in study.runs]


@SETTINGS
@given(document=YAML_VALUES | st.dictionaries(st.text(max_size=8), YAML_VALUES, max_size=5))
def test_random_yaml_structures_never_crash_the_study_parser(document):
    _parse_or_error(document)


@SETTINGS
@given(items=st.lists(st.text(max_size=20), max_size=3))
def test_random_set_overrides_parse_or_fail_cleanly(items):
    with contextlib.suppress(KnowshiftError):
        parse_overrides(items)


@pytest.mark.parametrize("value", ["[1", "{a: ", "'open", "a: b: c", "\t- x", "@x", "`y"])
def test_set_values_that_are_not_yaml_are_one_clear_error(value):
    with pytest.raises(KnowshiftError, match="train.epochs"):
        parse_overrides([f"train.epochs={value}"])
