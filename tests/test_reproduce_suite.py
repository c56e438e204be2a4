"""The reproduction suite: the tiny suite (tests/reproduce_tiny: the same study names, recipes
and analyses as configs/reproduce, two seeds) run on the planted model through `knowshift
reproduce run`, its compact export, RESULTS.md regenerated from data alone, and the committed
RESULTS.md checked against the committed data (no number hand-edited)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from knowshift.cli import main
from knowshift.errors import KnowshiftError
from knowshift.reproduce import FINDINGS, verdict
from knowshift.reproduce.data import (
    FORMAT,
    StudyData,
    read_data_folder,
    read_study_data,
    study_data_document,
    study_data_from_document,
)
from knowshift.reproduce.suite import load_suite, suite_study, suite_verdicts, write_results
from knowshift.store import Store

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).resolve().parent / "reproduce_tiny" / "suite.yaml"
N_DRAWS = 200  # enough to exercise the bootstrap; the committed page uses the full count


@pytest.fixture(scope="module")
def tiny(planted_model_dir, facts_file, tmp_path_factory):
    """The tiny suite run once: its folder (work/, data/, RESULTS.md) and what the user saw."""
    root = tmp_path_factory.mktemp("reproduce")
    log = io.StringIO()
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        status = main(["reproduce", "run", "--suite", str(TINY), "--work", str(root / "work"),
                       "--data", str(root / "data"), "--out", str(root / "RESULTS.md"),
                       "--set", f"model.name={planted_model_dir}",
                       "--set", f"facts.source=jsonl:{facts_file}"])  # fmt: skip
    (root / "log.txt").write_text(log.getvalue())
    assert status == 0, log.getvalue()[-3000:]
    return root


def test_the_tiny_suite_runs_every_study_for_two_seeds(tiny):
    suite = load_suite(TINY)
    for model, study in suite.selected():
        with Store.for_workspace(tiny / "work" / model / study) as store:
            rows = store.study_runs(study)
        assert rows and {r["status"] for r in rows} == {"done"}, study
        assert {r["variant"]["train.seed"] for r in rows} == {0, 1}
        assert (tiny / "data" / model / f"{study}.json").is_file()
    # The studies of one model share their probing (the model folder's database).
    assert (tiny / "work" / "planted" / "knowshift.db").is_file()


def test_the_export_decides_every_finding_as_the_store_does(tiny):
    for f in FINDINGS:
        folder = tiny / "work" / "planted" / f.study
        with Store.for_workspace(folder) as store:
            from_store = verdict(store, f, n_draws=N_DRAWS)
        exported = read_study_data(tiny / "data" / "planted" / f"{f.study}.json")
        assert verdict(exported, f, n_draws=N_DRAWS) == from_store, f.id
        assert from_store.n_seeds == 2, f.id


def test_the_export_keeps_every_fact_and_flag(tiny):
    folder = tiny / "work" / "planted" / "unknown-ratio"
    with Store.for_workspace(folder) as store:
        data = StudyData.from_store(store, "unknown-ratio")
    assert len(data.runs) == 10 and data.predictions
    run = data.runs[0]
    lines = (folder / "runs" / run.variant["folder"] / "predictions" / "last.jsonl").read_text()
    original = [json.loads(line) for line in lines.splitlines()]
    restored = study_data_from_document(json.loads(json.dumps(study_data_document(data))))
    assert restored.evaluation(run.run_id, "last") == [
        {"fact_id": p["fact_id"], "exact": p["exact"], "contains": p["contains"],
         "refused": p["refused"], "in_distribution": p["in_distribution"]}
        for p in original
    ]  # fmt: skip
    assert restored.train_records(run.run_id) == data.train_records(run.run_id)
    assert [(r.run_id, r.variant, r.seed) for r in restored.runs] == [
        (r.run_id, r.variant, r.seed) for r in data.runs
    ]


def test_results_are_regenerated_from_the_data_alone(tiny, tmp_path):
    # A copy of the data, nowhere near the runs: the page and figures come out byte-identical.
    data = tmp_path / "data"
    for path in (tiny / "data").glob("planted/*.json"):
        (data / "planted").mkdir(parents=True, exist_ok=True)
        (data / "planted" / path.name).write_bytes(path.read_bytes())
    written = write_results(load_suite(TINY), data, tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == (tiny / "RESULTS.md").read_text()
    for path in written[:-1]:
        assert path.read_bytes() == (tiny / "data" / "figures" / path.name).read_bytes()
    text = (tiny / "RESULTS.md").read_text()
    for f in FINDINGS:
        assert f"| {f.id} {f.name} ({f.paper}) |" in text
    assert "planted-verdicts.svg" in text and "planted-unknown-ratio.svg" in text
    assert "nan" not in text and "-0.00" not in text


def test_planted_known_facts_are_fitted_before_unknown_ones(tiny):
    # The planted facts are memorised (p >= 0.99) and the unseen ones made of syllables the
    # model never saw: at every epoch more Known than Unknown examples are fitted, so F1's gap
    # is positive on every seed.
    data = read_study_data(tiny / "data" / "planted" / "unknown-ratio.json")
    result = verdict(data, "F1", n_draws=N_DRAWS)
    assert result.verdict == "reproduced" and result.n_seeds == 2


def test_a_rerun_of_the_suite_trains_nothing(tiny, planted_model_dir, facts_file, monkeypatch, capsys):  # fmt: skip
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("knowshift.train.run.run_training", no_training)
    assert main(["reproduce", "run", "--suite", str(TINY), "--work", str(tiny / "work"),
                 "--study", "categories", "--no-results",
                 "--set", f"model.name={planted_model_dir}",
                 "--set", f"facts.source=jsonl:{facts_file}"]) == 0  # fmt: skip
    assert "4 done earlier, 0 to run" in capsys.readouterr().err


def test_studies_not_run_yet_are_inconclusive_and_say_so(tmp_path):
    models = suite_verdicts(load_suite(TINY), {})
    (planted,) = models
    assert [v.finding_id for v in planted.verdicts] == [f.id for f in FINDINGS]
    assert all(v.verdict == "inconclusive" and "no exported runs yet" in v.reason for v in planted.verdicts)  # fmt: skip
    written = write_results(load_suite(TINY), tmp_path / "none", tmp_path / "RESULTS.md")
    assert written == [tmp_path / "RESULTS.md"]  # no statistic, no figure


# --- the committed results ------------------------------------------------------------------------


def test_committed_results_md_is_generated_from_the_committed_data(tmp_path):
    """RESULTS.md and its figures, regenerated from results/reproduce/, equal the committed
    files: no number in them is edited by hand."""
    data = ROOT / "results" / "reproduce"
    out = tmp_path / "RESULTS.md"
    written = write_results(load_suite(ROOT / "configs" / "reproduce" / "suite.yaml"), data, out,
                            figures=tmp_path / "results" / "reproduce" / "figures")  # fmt: skip
    assert out.read_text() == (ROOT / "RESULTS.md").read_text(), (
        "RESULTS.md differs from what the committed data give: run knowshift reproduce results"
    )
    committed = sorted(p.name for p in (data / "figures").glob("*.svg"))
    assert sorted(p.name for p in written[:-1]) == committed
    for path in written[:-1]:
        assert path.read_bytes() == (data / "figures" / path.name).read_bytes(), path.name
    # Every exported study is one of the suite's, in the suite's format.
    suite = load_suite(ROOT / "configs" / "reproduce" / "suite.yaml")
    for model, studies in (read_data_folder(data) if data.is_dir() else {}).items():
        assert {d.study for d in studies} <= set(suite.models[model])


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []", "must map models: to each model's studies"),
        ("studies: [a]", "must map models:"),
        ("models: {m: unknown-ratio}", "must be a list of study names"),
        ("models: {m: [no-such-study]}", "there is no"),
        ("models: {m: {studies: [unknown-ratio], sets: {a: 1}}}", "takes studies: and set:"),
        ("models: {m: {studies: [unknown-ratio], set: 3}}", "must map settings"),
    ],
)
def test_bad_suite_files_say_what_to_write(tmp_path, text, message):
    (tmp_path / "unknown-ratio.yaml").write_text("name: unknown-ratio\n")
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(KnowshiftError, match=message):
        load_suite(path)


def test_a_models_settings_reach_each_of_its_studies(tmp_path):
    for name in ("unknown-ratio", "categories"):
        (tmp_path / f"{name}.yaml").write_text((TINY.parent / f"{name}.yaml").read_text())
    (tmp_path / "suite.yaml").write_text(
        "models:\n  a: [unknown-ratio]\n"
        "  b: {studies: [unknown-ratio, categories], set: {probe.limit: 24, train.epochs: 3}}\n"
    )
    suite = load_suite(tmp_path / "suite.yaml")
    plain, changed = (suite_study(suite, m, "unknown-ratio") for m in ("a", "b"))
    assert plain.runs[0].config.probe.limit == 32 and changed.runs[0].config.probe.limit == 24
    assert {r.config.train.config.epochs for r in changed.runs} == {3}
    assert plain.runs[0].config.model.name == "a"  # the suite's model name, set in every study
    # The smollm2 studies of the committed suite change nothing but the model's name.
    committed = load_suite(ROOT / "configs" / "reproduce" / "suite.yaml")
    assert committed.settings["smollm2-135m"] == ()


def test_unknown_models_and_studies_are_named(capsys):
    suite = load_suite(TINY)
    with pytest.raises(KnowshiftError, match="did you mean 'planted'"):
        suite.selected(models=["planed"])
    assert main(["reproduce", "export", "--suite", str(TINY), "--study", "categoris"]) == 2
    assert "categories" in capsys.readouterr().err


def test_data_in_another_format_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something-else", "runs": []}))
    with pytest.raises(KnowshiftError, match=f"expected '{FORMAT}'"):
        read_study_data(path)
    path.write_text("{not json")
    with pytest.raises(KnowshiftError, match="not valid JSON"):
        read_study_data(path)
