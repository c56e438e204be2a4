"""`knowshift audit` on the planted model: a user's fine-tuning file, in every accepted format,
comes back with the categories the model was taught, long-form examples reported (not scored),
and filtered / relabelled copies in the file's own format.

The file holds the planted fact base as short-answer examples (dev and planted facts the model
was trained on, unseen ones it never saw), a duplicate of one unseen example, and long-form
examples at the end. Every format asks the same questions, so after the first format the
workspace already holds every result.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from knowshift.audit.data import SftExample, read_sft
from knowshift.audit.facts import example_facts
from knowshift.audit.screen import question_of, screen
from knowshift.cli import main
from knowshift.models.resolve import model_fingerprint
from knowshift.probe import run as probe_run
from knowshift.probe.prompts import PromptFormat, exemplar_sets, few_shot_prompt
from knowshift.store import Store
from knowshift.types import Split

KNOWN_KINDS = ("dev", "planted")
KNOWN = {"HighlyKnown", "MaybeKnown"}
LONG_FORM = [  # (source, question, answer, reason the audit must give)
    ("essay", "Tell me about Kalomi.", "Kalomi was founded long ago. It grew into a city.",
     "long-form answer (2 sentences)"),
    ("code", "Write a function that adds two numbers.", "def add(a, b):\n    return a + b",
     "code"),
    ("essay", "Why do cities grow?",
     "Cities grow because people move to them for work, trade and safety", "long answer (12 words"),
]  # fmt: skip
ORIGINAL_CACHE = os.environ.get("KNOWSHIFT_CACHE")  # where the slow tier has the embedded model
FORMATS = ("prompt-completion.jsonl", "messages.jsonl", "question-answer.jsonl", "plain.csv")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Fingerprint digests go to a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNOWSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _examples(planted) -> list[tuple[str, str, str]]:
    """(source, question, answer): the planted facts, one duplicate, then the long-form ones."""
    qa = [(f.id.split(":")[0], f.question, f.answer) for f in planted.facts]
    duplicate = next(e for e in qa if e[0] == "unseen")
    return qa + [duplicate] + [e[:3] for e in LONG_FORM]


def _write(path: Path, examples) -> Path:
    """The examples as a fine-tuning file of the format `path`'s name says."""
    name = path.name
    if name == "plain.csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["prompt", "completion", "source"])
        writer.writerows([(q, a, s) for s, q, a in examples])
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return path
    if name == "prompt-completion.jsonl":
        records = [{"prompt": f"Q: {q}\nA:", "completion": f" {a}\n", "source": s} for s, q, a in examples]  # fmt: skip
    elif name == "messages.jsonl":
        records = [
            {"messages": [{"role": "system", "content": "Answer briefly."},
                          {"role": "user", "content": q}, {"role": "assistant", "content": a}],
             "source": s}
            for s, q, a in examples
        ]  # fmt: skip
        turns = [{"role": r, "content": c} for r, c in [("user", "Hi"), ("assistant", "Hello"),
                 ("user", "What is the capital of Kalo?"), ("assistant", "Mor")]]  # fmt: skip
        records.append({"messages": turns, "source": "chat"})
    else:
        records = [{"question": q, "answer": a, "topic": s} for s, q, a in examples]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Audited:
    data: Path
    args: list[str]
    status: int
    stdout: str
    stderr: str
    table: list[dict]  # the --out rows
    filtered: Path
    relabelled: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workspace")


def _run(args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        status = main(args)
    return status, stdout.getvalue(), stderr.getvalue()


def _audit(file_name: str, planted, model_dir: Path, workspace: Path, folder: Path) -> Audited:
    """One CLI audit of the planted file in one format, with every output written."""
    data = _write(folder / file_name, _examples(planted))
    suffix = data.suffix
    out, filtered, relabelled = (folder / n for n in ("table.jsonl", f"filtered{suffix}", f"relabelled{suffix}"))  # fmt: skip
    args = ["audit", str(data), "--model", str(model_dir), "--dtype", "float32", "--device", "cpu",
            "--n-exemplar-sets", "3", "--k-shot", "2", "--workspace", str(workspace)]  # fmt: skip
    status, stdout, stderr = _run(
        [*args, "--out", str(out), "--filtered", str(filtered), "--relabelled", str(relabelled)]
    )
    assert status == 0, stderr
    table = [json.loads(line) for line in out.read_text().splitlines()]
    return Audited(data, args, status, stdout, stderr, table, filtered, relabelled)


@pytest.fixture(scope="module", params=FORMATS)
def audited(request, planted, planted_model_dir, workspace, tmp_path_factory) -> Audited:
    """The audit of the planted file in each format (the first one probes, the others reuse)."""
    folder = tmp_path_factory.mktemp(request.param.split(".")[0])
    return _audit(request.param, planted, planted_model_dir, workspace, folder)


@pytest.fixture(scope="module")
def jsonl_audit(planted, planted_model_dir, workspace, tmp_path_factory) -> Audited:
    """The audit of the planted file as prompt/completion JSONL."""
    folder = tmp_path_factory.mktemp("jsonl")
    return _audit(FORMATS[0], planted, planted_model_dir, workspace, folder)


# --- what the audit finds ----------------------------------------------------------------------


def test_taught_examples_are_known_unseen_ones_unknown_long_form_not_probed(audited, planted):
    rows = audited.table
    assert len(rows) == len(_examples(planted)) + (audited.data.name == "messages.jsonl")
    for row in rows:
        if row["group"] in KNOWN_KINDS:
            assert row["probed"] and row["category"] in KNOWN, row
        elif row["group"] == "unseen":
            assert row["probed"] and row["category"] == "Unknown", row
            assert row["p_unknown"] > 0.5 and row["p_greedy"] == 0.0
    planted_rows = [r for r in rows if r["group"] == "planted"]
    assert sum(r["category"] == "HighlyKnown" for r in planted_rows) >= len(planted_rows) // 2
    not_probed = [r for r in rows if not r["probed"]]
    expected = [reason for _, _, _, reason in LONG_FORM]
    if audited.data.name == "messages.jsonl":
        expected.append("multi-turn conversation (2 user, 2 assistant turns)")
    assert len(not_probed) == len(expected)
    for row, reason in zip(not_probed, expected, strict=True):
        assert row["reason"].startswith(reason) and row["category"] is None, row


def test_duplicate_rows_are_one_fact(audited):
    unseen = [r for r in audited.table if r["group"] == "unseen"]
    by_question = {}
    for row in unseen:
        by_question.setdefault(row["question"], []).append(row)
    (twins,) = [rows for rows in by_question.values() if len(rows) == 2]
    assert twins[0]["fact_id"] == twins[1]["fact_id"] and twins[1]["category"] == "Unknown"


def test_summary_groups_by_source_and_counts_unknown(audited, planted):
    lines = {line.split()[0]: line.split() for line in audited.stdout.splitlines() if line}
    header = "topic" if "question-answer" in audited.data.name else "source"
    assert lines[header][1:] == ["n", "probed", "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]  # fmt: skip
    assert lines["unseen"][1:3] == ["17", "17"] and lines["unseen"][-1] == "100.0%"
    assert lines["code"][1:] == ["1", "0", "-", "-", "-", "-"]
    n_unknown = 17
    n_probed = len(planted.facts) + 1
    assert f"Unknown: {n_unknown} of {n_probed} probed examples" in audited.stdout
    assert "long-form answer: 1" in audited.stdout and "code: 1" in audited.stdout
    assert "no stored regression" in audited.stdout and "unknown-ratio study" in audited.stdout


# --- the filtered and relabelled files ---------------------------------------------------------


def test_filtered_file_drops_exactly_the_unknown_examples_in_the_same_format(audited):
    original, filtered = read_sft(audited.data), read_sft(audited.filtered)
    assert (filtered.schema, filtered.file_format) == (original.schema, original.file_format)
    unknown = {r["index"] for r in audited.table if r["category"] == "Unknown"}
    assert len(unknown) == 17
    kept = [r for i, r in enumerate(original.records) if i not in unknown]
    assert list(filtered.records) == kept
    if original.file_format == ".jsonl":  # unchanged records are copied byte for byte
        lines = [line for i, line in enumerate(original.lines) if i not in unknown]
        assert audited.filtered.read_text(encoding="utf-8") == "".join(f"{x}\n" for x in lines)


def test_relabelled_file_answers_the_unknown_examples_i_dont_know(audited):
    original, relabelled = read_sft(audited.data), read_sft(audited.relabelled)
    assert (relabelled.schema, relabelled.file_format) == (original.schema, original.file_format)
    assert len(relabelled.records) == len(original.records)
    unknown = {r["index"] for r in audited.table if r["category"] == "Unknown"}
    for before, after in zip(original.examples, relabelled.examples, strict=True):
        assert after.question == before.question and after.group == before.group
        if before.index in unknown:
            assert tuple(a.strip() for a in after.answers) == ("I don't know",)
        else:
            assert original.records[before.index] == relabelled.records[before.index]
    if original.schema == "prompt-completion" and original.file_format == ".jsonl":
        index = min(unknown)  # the completion keeps its spacing: " answer\n"
        assert relabelled.records[index]["completion"] == " I don't know\n"
    if original.schema == "messages":
        turns = relabelled.records[min(unknown)]["messages"]
        assert [t["role"] for t in turns] == ["system", "user", "assistant"]


# --- the cache, exemplars, the expected effect ---------------------------------------------------


def test_rerun_reads_the_store_without_loading_the_model(jsonl_audit, monkeypatch):
    audited = jsonl_audit
    counts: list[int] = []
    real = probe_run.run_block
    monkeypatch.setattr(probe_run, "run_block", lambda e, b: counts.append(1) or real(e, b))

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every result is stored")

    monkeypatch.setattr("knowshift.models.loader.load_model", no_load)
    out = audited.data.parent / "again.jsonl"
    status, stdout, stderr = _run([*audited.args, "--out", str(out)])
    assert status == 0, stderr
    assert counts == [] and "results from the store" in stdout
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again == audited.table
    assert stdout.splitlines()[1:] == audited.stdout.splitlines()[1:]


def test_no_example_is_shown_its_own_answer(planted):
    examples = [
        screen(SftExample(i, i + 1, f"Q: {q}\nA:", (f" {a}\n",), s))
        for i, (s, q, a) in enumerate(_examples(planted)[:-3])
    ]
    facts, fact_of = example_facts(examples)
    assert len(facts.facts) == len(examples) - 1  # the duplicate is one fact with its twin
    assert len(set(fact_of.values())) == len(facts.facts)
    fmt = PromptFormat("plain", None)
    for fact in facts.facts:
        for exemplars in exemplar_sets(facts, "audit", 10, 4, seed=0):
            shown = exemplars.for_fact(fact, 4)
            assert len(shown) == 4 and fact.id not in {e.id for e in shown}
            assert f"A: {fact.answer}\n" not in few_shot_prompt(fmt, shown, fact)


def test_paraphrases_and_answer_holding_questions_are_never_exemplars():
    qa = [
        ("What is the capital of France?", "Paris"),
        ("Which city is the capital of France?", "Paris"),  # a paraphrase: same fact
        ("Which country is Paris in?", "France"),  # holds the answer of the two above
        ("What is the capital of Peru?", "Lima"),
        ("What is the capital of Peru?", "Cusco"),  # the file answers it two ways
        ("What is the capital of Japan?", "Tokyo"),
        ("What is the capital of Japan?", "Tokyo."),  # the same example again
        ("What is the capital of Italy?", "Rome"),
        ("Who wrote Hamlet?", "Shakespeare"),
    ]
    facts, fact_of = example_facts([SftExample(i, i + 1, q, (a,)) for i, (q, a) in enumerate(qa)])
    split = {f.question + "=" + f.answer: f.split for f in facts.facts}
    exemplars = {key for key, s in split.items() if s == Split.DEV}
    assert exemplars == {
        "What is the capital of Japan?=Tokyo",
        "What is the capital of Italy?=Rome",
        "Who wrote Hamlet?=Shakespeare",
    }
    assert fact_of[6] == fact_of[5]
    assert {f.multi_answer for f in facts.facts if "Peru" in f.question} == {True}


@pytest.mark.parametrize(
    ("prompt", "question"),
    [
        ("Q: What is the capital of Kalo?\nA:", "What is the capital of Kalo?"),
        ("Question: Who wrote Hamlet?\nAnswer:", "Who wrote Hamlet?"),
        ("<|question|> Who wrote Hamlet? <|answer|>", "Who wrote Hamlet?"),
        ("  Who wrote Hamlet?\n", "Who wrote Hamlet?"),
    ],
)
def test_question_is_taken_out_of_its_prompt_template(prompt, question):
    assert question_of(prompt) == question


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Paris.", None),
        ("St. Louis", None),  # an abbreviation is not a sentence end
        ("Washington, D.C.", None),
        ("Paris. It is in France.", "long-form answer (2 sentences)"),
        ("Paris\nFrance", "long-form answer (several lines)"),
        ("print(1 + 1);", "code"),
        (
            "The sea is wide and deep;\nits secrets it will keep;",
            "long-form answer (several lines)",
        ),
        ("```python\nx = 1\n```", "code"),
        ("one two three four five six seven eight nine", "long answer (9 words"),
        ("", "empty answer"),
    ],
)
def test_only_short_answers_are_probed(answer, reason):
    screened = screen(SftExample(0, 1, "Q: Where?\nA:", (answer,)))
    assert screened.question == "Where?"
    if reason is None:
        assert screened.problem is None
    else:
        assert screened.problem is not None and screened.problem.startswith(reason)


def test_expected_effect_comes_from_runs_of_the_same_model(
    jsonl_audit, planted_model_dir, tmp_path
):
    """Runs whose accuracy follows b_unk = -8.3 give the effect; another model's runs do not."""
    audited = jsonl_audit
    workspace = shutil.copytree(Path(audited.args[audited.args.index("--workspace") + 1]), tmp_path / "ws")  # fmt: skip
    fingerprint = model_fingerprint(str(planted_model_dir))
    for run, (n_known, n_unknown) in enumerate([(40, 0), (30, 10), (20, 20), (10, 30)]):
        # Half the runs in the workspace, half in a study folder inside it (as study run puts them).
        with Store.for_workspace(workspace if run % 2 else workspace / "a-study") as store:
            for model, b_unknown in ((fingerprint, -8.3), ("another-model", 50.0)):
                run_id = f"{model}-{run}"
                sizes = {"train": 40, "train/Known": n_known, "train/Unknown": n_unknown}
                store.register_run(run_id, {"base_fingerprint": model, "group_sizes": sizes})
                for epoch in range(1, 6):
                    known, unknown = min(1, 0.3 + 0.15 * epoch), min(1, 0.05 * epoch**1.5)
                    accuracy = 36.9 + 7.3 * known * n_known / 40 + b_unknown * unknown * n_unknown / 40  # fmt: skip
                    accuracy += 0.01 * (epoch % 3)  # not an exact fit
                    store.put_train_record(run_id, epoch, epoch, 1.0, {
                        "train/Known": known, "train/Unknown": unknown, "test/in": accuracy / 100,
                    })  # fmt: skip
    args = audited.args[:-1] + [str(workspace)]
    status, stdout, _ = _run(args)
    assert status == 0
    share = 17 / len(audited.table)
    assert "regression over 20 measurements of 4 runs of this model" in stdout
    assert f"({100 * share:.0f}% of the set): {-8.3 * share:+.1f} points of test" in stdout
    assert "includes 0" not in stdout


# --- bad input: one line each, exit status 2 -----------------------------------------------------

ROW = {"prompt": "Q: What is the capital of Kalo?\nA:", "completion": " Mor\n"}
BAD_INPUTS = [  # (case, file name, file text, extra arguments, what the one line must say)
    ("missing file", "absent.jsonl", None, [], "absent.jsonl: no such file"),
    ("unknown file type", "data.txt", "hello\n", [], "unknown file type '.txt'"),
    ("unknown fields", "data.jsonl", '{"text": "hi"}\n', [], "unknown format (fields: text); use prompt/completion, messages"),
    ("empty file", "data.jsonl", "\n", [], "no examples in the file"),
    ("malformed JSON", "data.jsonl", json.dumps(ROW) + "\n{oops\n", [], "line 2: malformed JSON"),
    ("mixed records", "data.jsonl", json.dumps(ROW) + '\n{"prompt": "x"}\n', [], "line 2: no 'completion' field"),
    ("bad messages", "data.jsonl", '{"messages": "hi"}\n', [], "messages must be a list of {role, content}"),
    ("bad CSV", "data.csv", "question,answer\nWho?,Mor,extra\n", [], "line 2: more fields than the header"),
    ("CSV without fields", "data.csv", "a,b\n1,2\n", [], "unknown format (fields: a, b)"),
    ("nothing to probe", "data.jsonl", json.dumps({"prompt": "Essay?", "completion": "One. Two. Three."}) + "\n", [], "no example is a short-answer question"),
    ("too few for k-shot", "data.jsonl", json.dumps(ROW) * 1 + "\n", [], "fewer than the 5 that 4-shot prompts need"),
    ("output format mismatch", "data.jsonl", json.dumps(ROW) + "\n", ["--filtered", "{tmp}/out.csv"], "keeps DATA's format (.jsonl)"),
    ("output over the input", "data.jsonl", json.dumps(ROW) + "\n", ["--relabelled", "{data}"], "would overwrite DATA"),
    ("bad table type", "data.jsonl", json.dumps(ROW) + "\n", ["--out", "{tmp}/t.txt"], "use a file ending in .jsonl, .csv, .parquet"),
    ("mastery estimator", "data.jsonl", json.dumps(ROW) + "\n", ["--estimator", "mastery"], "unknown audit estimator"),
    ("missing group field", "data.jsonl", json.dumps(ROW) + "\n", ["--group-by", "topic"], "no field 'topic' to group by"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "extra", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gives_one_clear_line(
    name, text, extra, message, planted_model_dir, tmp_path, monkeypatch
):
    def no_load(*args, **kwargs):
        raise AssertionError("bad input must fail before the model is loaded")

    monkeypatch.setattr("knowshift.models.loader.load_model", no_load)
    data = tmp_path / name
    if text is not None:
        data.write_text(text, encoding="utf-8")
    extra = [arg.format(data=data, tmp=tmp_path) for arg in extra]
    status, stdout, stderr = _run(
        [
            "audit",
            str(data),
            "--model",
            str(planted_model_dir),
            "--workspace",
            str(tmp_path / "ws"),
            *extra,
        ]  # fmt: skip
    )
    assert status == 2 and stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("knowshift: error: "), stderr
    assert message in lines[0], lines[0]


# --- slower tier: the embedded model on capitals from geo -----------------------------------------

FAMOUS = ["France", "Japan", "Italy", "Germany", "Spain", "Egypt"]


@pytest.mark.slow
def test_smollm2_knows_the_famous_capitals_of_a_geo_file(tmp_path, monkeypatch):
    from knowshift.facts import load_facts

    if ORIGINAL_CACHE is None:  # the shared cache: converted model, built geo facts
        monkeypatch.delenv("KNOWSHIFT_CACHE")
    else:
        monkeypatch.setenv("KNOWSHIFT_CACHE", ORIGINAL_CACHE)

    capitals = [f for f in load_facts("geo").facts if f.relation == "country_capital"]
    famous = [f for f in capitals if f.subject in FAMOUS]
    obscure = sorted((f for f in capitals if f.popularity), key=lambda f: f.popularity)[:12]
    middle = sorted(capitals, key=lambda f: f.id)[::20][:10]
    facts = famous + obscure + [f for f in middle if f not in famous + obscure]
    records = [{"question": f.question, "answer": f.answer, "source": f.subject} for f in facts]
    records.append({"question": "Describe Paris.", "answer": "Paris is big. It is old.", "source": "essay"})  # fmt: skip
    data = tmp_path / "capitals.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "table.csv"
    status, stdout, stderr = _run(["audit", str(data), "--workspace", str(tmp_path / "ws"), "--out", str(out)])  # fmt: skip
    assert status == 0, stderr
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    by_subject = {r["group"]: r for r in rows}
    known = [s for s in FAMOUS if by_subject[s]["category"] in KNOWN]
    assert len(known) >= 5, stdout
    unknown_obscure = sum(by_subject[f.subject]["category"] == "Unknown" for f in obscure)
    unknown_famous = len(FAMOUS) - len(known)
    assert unknown_obscure > unknown_famous, stdout
    assert by_subject["essay"]["probed"] == "False" and "sentences" in by_subject["essay"]["reason"]
