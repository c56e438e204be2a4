"""The results database: what goes in comes out, a rerun never overwrites, exports read back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from knowshift.errors import KnowshiftError
from knowshift.store import Store
from knowshift.store.db import RESULT_COLUMNS
from knowshift.store.export import export_rows
from knowshift.types import Category, ProbeResult

EXACT = ProbeResult(
    fact_id="capital:kalo",
    estimator="exact",
    params_key="key-exact",
    model_fingerprint="model-a",
    p_greedy=0.7,
    p_sampled=0.55,
    category=Category.MAYBE_KNOWN,
    category_probs=(0.1, 0.8, 0.05, 0.05),
)
MASTERY = ProbeResult(
    fact_id="capital:rutozi",
    estimator="mastery",
    params_key="key-mastery",
    model_fingerprint="model-a",
    p_greedy=None,
    p_sampled=0.3,
    category=None,
    mastery_level=2,
    samples=("Pesho", "Rutozi has its capital in Pesho.", "Ünïcode ✓"),
)
INFO = {"capital:kalo": ("capital", "test"), "capital:rutozi": ("capital", "dev")}


def test_results_round_trip_including_mastery_nones(store):
    store.put_probe_results([EXACT], INFO)
    store.put_probe_results([MASTERY], INFO)
    assert store.probe_results("model-a", "key-exact") == [EXACT]
    assert store.probe_results("model-a", "key-mastery") == [MASTERY]
    back = store.probe_results("model-a", "key-mastery")[0]
    assert back.p_greedy is None and back.category is None and back.category_prob is None
    # Other models, keys and fact subsets select nothing, or just what was asked.
    assert store.probe_results("model-b", "key-exact") == []
    assert store.probe_results("model-a", "key-exact", ["capital:other"]) == []


def test_a_duplicate_key_keeps_the_first_result(store):
    store.put_probe_results([EXACT], INFO)
    later = ProbeResult(**{**EXACT.__dict__, "p_greedy": 1.0, "category": Category.HIGHLY_KNOWN})
    store.put_probe_results([later], INFO)
    assert store.probe_results("model-a", "key-exact") == [EXACT]
    (count,) = store.connection.execute("SELECT COUNT(*) FROM probe_results").fetchone()
    assert count == 1


def test_probed_fact_ids_are_per_model_and_settings(store):
    store.put_probe_results([EXACT, MASTERY], INFO)
    assert store.probed_fact_ids("model-a", "key-exact") == {"capital:kalo"}
    assert store.probed_fact_ids("model-a", "key-mastery") == {"capital:rutozi"}
    assert store.probed_fact_ids("model-b", "key-exact") == set()


def test_probe_rows_carry_relation_split_and_filter(store):
    store.put_probe_results([EXACT, MASTERY], INFO)
    rows = store.probe_rows()
    assert [tuple(r) for r in rows] == [RESULT_COLUMNS] * 2
    assert [(r["fact_id"], r["relation"], r["split"]) for r in rows] == [
        ("capital:kalo", "capital", "test"),
        ("capital:rutozi", "capital", "dev"),
    ]
    assert [r["fact_id"] for r in store.probe_rows("model-a", "key-mastery")] == ["capital:rutozi"]
    assert store.probe_rows("model-b") == []


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_reads_back(store, tmp_path, suffix):
    store.put_probe_results([EXACT, MASTERY], INFO)
    rows = store.probe_rows()
    path = export_rows(rows, tmp_path / "out" / f"results{suffix}")
    if suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        back = [json.loads(line) for line in lines]
    else:
        back = pq.read_table(path).to_pylist()
    assert back == rows
    assert back[1]["samples"][2] == "Ünïcode ✓" and back[1]["p_greedy"] is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_export_to_an_unknown_format_is_an_error(store, tmp_path):
    store.put_probe_results([EXACT], INFO)
    with pytest.raises(KnowshiftError, match=r"results\.csv.*\.jsonl or \.parquet"):
        export_rows(store.probe_rows(), tmp_path / "results.csv")
    assert not (tmp_path / "results.csv").exists()


def test_a_file_that_is_not_a_database_is_an_error(tmp_path):
    path = tmp_path / "knowshift.db"
    path.write_text("question,answer\nWhat is the capital of Kalo?,Mivane\n")
    with pytest.raises(KnowshiftError, match="not a usable knowshift database"):
        Store(path)
    assert path.read_text().startswith("question,answer")  # left as it was


def test_another_tools_sqlite_database_is_an_error(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE probe_results (id INTEGER, payload TEXT)")
    with pytest.raises(KnowshiftError, match="table probe_results has columns id, payload"):
        Store(path)


def test_a_workspace_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "workspace").write_text("")
    with pytest.raises(KnowshiftError, match="point --workspace at a folder"):
        Store.for_workspace(tmp_path / "workspace")


def test_database_is_in_wal_mode_and_sound_after_reopening(tmp_path):
    with Store.for_workspace(tmp_path) as store:
        store.put_probe_results([EXACT, MASTERY], INFO)
        (mode,) = store.connection.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    with Store.for_workspace(tmp_path) as store:
        (check,) = store.connection.execute("PRAGMA integrity_check").fetchone()
        assert check == "ok"
        assert store.probe_results("model-a", "key-exact") == [EXACT]


def test_a_failing_batch_stores_none_of_its_rows(store):
    # The second row breaks a NOT NULL column inside the transaction; the first must not land.
    broken = ProbeResult(**{**MASTERY.__dict__, "p_sampled": None})
    with pytest.raises(sqlite3.IntegrityError):
        store.put_probe_results([EXACT, broken], INFO)
    assert store.probe_rows() == []
    store.put_probe_results([EXACT], INFO)  # and the connection is usable afterwards
    assert store.probed_fact_ids("model-a", "key-exact") == {"capital:kalo"}


def test_register_settings_is_idempotent(store):
    store.register_settings("key-exact", "exact", {"k_shot": 4}, {"torch": "x"})
    store.register_settings("key-exact", "exact", {"k_shot": 99}, {"torch": "y"})
    rows = store.connection.execute("SELECT params_key, params FROM probe_settings").fetchall()
    assert rows == [("key-exact", '{"k_shot": 4}')]


STORE_AN_ANALYSIS = """
import sys, tempfile
from knowshift.store import Store
from knowshift.versions import environment_versions

with Store.for_workspace(tempfile.mkdtemp()) as store:
    store.put_analysis("eval", "run:last", {}, {"exact": 0.5})
print(sorted(environment_versions()), "torch" in sys.modules, "transformers" in sys.modules)
"""


def test_storing_an_analysis_records_the_versions_without_importing_torch():
    # `knowshift analyze regression` stores an analysis and needs no model: it must not pay
    # for importing torch just to write down torch's version.
    done = subprocess.run([sys.executable, "-c", STORE_AN_ANALYSIS], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("] ")[1].split() == ["False", "False"]
    assert "'torch'" in done.stdout and "'transformers'" in done.stdout


def test_merging_a_runs_database_takes_its_rows_and_only_its_rows(store, tmp_path):
    """A Ray task's database merged into the study's: the run's config, records and analyses
    replace the study's, probe results are added where missing, other runs are left alone."""
    store.register_settings("key-exact", "exact", {"n": 1}, {})
    store.put_probe_results([EXACT], INFO)
    store.register_run("run-a", {"lr": 1})
    store.put_train_record("run-a", 1, 4, 0.9, {"test": 0.1})
    store.register_run("run-b", {"lr": 2})
    store.put_train_record("run-b", 1, 4, 0.8, {"test": 0.5})
    store.put_study_run("toy", "run-a", {}, "running")
    with Store(tmp_path / "task" / "knowshift.db") as task:
        assert task.merge_runs(store, []) == 2  # a task's seed: the probe results, no run
        assert task.probe_results("model-a", "key-exact") == [EXACT] and task.run_ids() == []
        # The task resumes run-a: epoch 1 again, then epoch 2, an eval and a new probe result.
        task.register_run("run-a", {"lr": 1, "resumed": True})
        task.put_train_record("run-a", 1, 4, 0.7, {"test": 0.2})
        task.put_train_record("run-a", 2, 8, 0.6, {"test": 0.3})
        task.put_analysis("eval", "run-a:last", {"n": 1}, {"exact": 0.3})
        task.put_analysis("eval", "run-ab:last", {"n": 1}, {"exact": 0.9})  # another run's
        task.put_probe_results([MASTERY], INFO)
        task.put_study_run("toy", "run-a", {}, "done")
        assert store.merge_runs(task, ["run-a"]) == 1 + 2 + 1 + 1  # run, records, eval, probe
        assert store.merge_runs(task, ["run-a"]) == 4  # again: the run's rows, rewritten alike
    assert store.run_config("run-a") == {"lr": 1, "resumed": True}
    assert [r["accuracy"] for r in store.train_records("run-a")] == [{"test": 0.2}, {"test": 0.3}]
    assert [a["result"] for a in store.analyses("eval")] == [{"exact": 0.3}]
    assert store.probe_results("model-a", "key-mastery") == [MASTERY]
    assert store.probe_results("model-a", "key-exact") == [EXACT]
    assert store.run_config("run-b") == {"lr": 2}
    assert [r["accuracy"] for r in store.train_records("run-b")] == [{"test": 0.5}]
    assert [r["status"] for r in store.study_runs("toy")] == ["running"]  # the driver's to set
