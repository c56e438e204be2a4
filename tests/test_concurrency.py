"""Two processes on one workspace at once neither corrupt nor duplicate results.

Probes of overlapping facts share the database (WAL, a busy timeout, one transaction per block,
the first result of a fact kept); a run folder or a study folder is worked on by one process at a
time, and a second one is refused with a clear message instead of interleaving its writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from killable import Zygote, tail
from test_crash import SMALL_BLOCKS, _integrity, _probe_args, _training_commands
from test_study import _tiny_study, _write

from knowshift.store import Store


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    with Zygote({"KNOWSHIFT_CACHE": str(tmp_path_factory.mktemp("cache"))}) as zygote:
        yield zygote


def _held(zygote: Zygote, go: Path, pids: list[int]) -> None:
    """Wait until every process in `pids` has reached its hold (a file `go.PID`)."""
    deadline = time.monotonic() + 120
    while not all(go.with_name(f"{go.name}.{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"not all of {pids} reached their hold"
        exited = [pid for pid in pids if pid in zygote.exits]
        assert not exited, f"{exited} ended before their hold: {tail(go.parent)}"
        time.sleep(0.05)


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_two_probes_of_overlapping_facts_share_one_workspace(
    zygote, planted_model_dir, facts_file, tmp_path
):
    common = _probe_args(planted_model_dir, facts_file, "--estimator", "sampling", "--k-shot", "2",
                         "--n-exemplar-sets", "3")  # fmt: skip
    shared = ["--workspace", str(tmp_path / "ws")]  # the last --workspace counts
    every = [*common, *shared, "--out", "every.jsonl"]  # dev and test facts: 40
    test = [*common, *shared, "--split", "test", "--out", "test.jsonl"]  # 32 of those
    # Both hold before storing their first block, then store side by side.
    go = tmp_path / "go"
    hold = ("knowshift.store.db:Store.put_probe_results", go)
    pids = [zygote.start(argv, _folder(tmp_path / name), patches=SMALL_BLOCKS, pause=hold)
            for name, argv in (("a", every), ("b", test))]  # fmt: skip
    _held(zygote, go, pids)
    go.touch()
    assert [zygote.wait(pid).status for pid in pids] == [0, 0], tail(tmp_path / "a")
    # The same facts probed by one process alone.
    alone = _folder(tmp_path / "alone")
    assert zygote.run([*common, "--out", "every.jsonl"], alone, patches=SMALL_BLOCKS).status == 0
    _integrity(tmp_path / "ws" / "knowshift.db")
    with Store.for_workspace(tmp_path / "ws") as store:
        together = store.probe_rows()
    with Store.for_workspace(alone / "ws") as store:
        expected = store.probe_rows()
    assert len(together) == len({r["fact_id"] for r in together}) == 40  # no fact twice
    assert together == expected
    # Each process returned (and exported) every fact it asked for, whoever stored it.
    for name, n in (("a/every.jsonl", 40), ("b/test.jsonl", 32)):
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(rows) == n and all(row in together for row in rows)


def _prepared_training(zygote, planted_model_dir, facts_file, tmp_path) -> tuple[Path, list[str]]:
    """Probe and build in tmp_path/setup; returns it and the train command (run folder not made)."""
    build, train = _training_commands(planted_model_dir, facts_file)
    setup = _folder(tmp_path / "setup")
    for argv in (_probe_args(planted_model_dir, facts_file), build):
        assert zygote.run(argv, setup).status == 0, tail(setup)
    return setup, [str(setup / a) if a in ("set", "ws", "run") else a for a in train]


def _second_refused_while_first_trains(zygote, argv: list[str], tmp_path: Path, what: str) -> None:
    """Start `argv`, hold it mid-training, run it again (refused: exit 2, the holder named),
    then let the first finish."""
    go = tmp_path / "go"
    first = zygote.start(
        argv, _folder(tmp_path / "first"), pause=("knowshift.train.loop:_keep", go)
    )
    _held(zygote, go, [first])  # mid-training (of a study's first run: probe results stored)
    second = zygote.run(argv, _folder(tmp_path / "second"))
    assert second.status == 2
    assert f"in use by another knowshift {what} (pid {first})" in tail(tmp_path / "second")
    go.touch()
    assert zygote.wait(first).status == 0, tail(tmp_path / "first")


def test_a_second_training_into_the_same_folder_is_refused(
    zygote, planted_model_dir, facts_file, tmp_path
):
    setup, train = _prepared_training(zygote, planted_model_dir, facts_file, tmp_path)
    _second_refused_while_first_trains(zygote, train, tmp_path, "training run")
    _integrity(setup / "ws" / "knowshift.db")
    metrics = (setup / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [0.5, 1, 1.5, 2, 2.5, 3]
    with Store.for_workspace(setup / "ws") as store:
        (run_id,) = store.run_ids()
        assert len(store.train_records(run_id)) == 6


def test_a_refused_training_leaves_the_folder_it_lost_alone(
    zygote, planted_model_dir, facts_file, tmp_path
):
    # Both start with no run folder; the second is held until the first holds the folder (its
    # run.json written, nothing else yet). The refused one must not remove that folder as its
    # own leftover from a failed start.
    setup, train = _prepared_training(zygote, planted_model_dir, facts_file, tmp_path)
    go_second, go_first = tmp_path / "go-second", tmp_path / "go-first"
    second = zygote.start(
        train, _folder(tmp_path / "second"), pause=("knowshift.train.run:_run_lock", go_second)
    )
    _held(zygote, go_second, [second])
    assert not (setup / "run").exists()
    first = zygote.start(train, _folder(tmp_path / "first"),
                         pause=("knowshift.store.db:Store.register_run", go_first))  # fmt: skip
    _held(zygote, go_first, [first])
    go_second.touch()
    assert zygote.wait(second).status == 2
    assert f"in use by another knowshift training run (pid {first})" in tail(tmp_path / "second")
    assert (setup / "run" / "run.json").is_file()
    go_first.touch()
    assert zygote.wait(first).status == 0, tail(tmp_path / "first")
    metrics = (setup / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [0.5, 1, 1.5, 2, 2.5, 3]


def test_a_second_run_of_the_same_study_folder_is_refused(
    zygote, planted_model_dir, facts_file, tmp_path
):
    path = _write(tmp_path / "study.yaml", _tiny_study(planted_model_dir, facts_file))
    argv = ["study", "run", str(path), "--out", str(tmp_path / "out")]
    _second_refused_while_first_trains(zygote, argv, tmp_path, "study run")
    _integrity(tmp_path / "out" / "knowshift.db")
    with Store.for_workspace(tmp_path / "out") as store:
        rows = store.study_runs("tiny")
        assert [r["status"] for r in rows] == ["done", "done"]
        assert [len(store.train_records(r["run_id"])) for r in rows] == [3, 3]
        assert len(store.probe_rows()) == 32


# Writers that start together (at a shared wall-clock instant) and write overlapping keys.
WRITER = """
import sys, time
from knowshift.store import Store
from knowshift.types import Category, ProbeResult

path, index, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
with Store(path) as store:
    for block in range(10):
        ids = [f"fact{n}" for n in range(block * 4, block * 4 + 8)]  # overlaps the next block
        results = [ProbeResult(i, "exact", "key", "model", 1.0, 0.5, Category.UNKNOWN,
                               (0.0, 0.0, 0.0, 1.0)) for i in ids]
        store.register_settings("key", "exact", {"k": 1}, {})
        store.put_probe_results(results, {i: ("capital", "test") for i in ids})
        store.register_run(f"run{index % 2}", {"n": index % 2})
        store.put_train_record(f"run{index % 2}", block, block, 0.5, {"dev": 0.5})
        store.put_study_run("study", f"run{index % 2}", {}, "running")
        store.put_analysis("eval", f"run{index % 2}:last", {}, {"exact": 0.5})
"""


def test_many_writers_at_once_neither_lose_nor_duplicate_rows(tmp_path):
    path, start = tmp_path / "knowshift.db", time.time() + 1.5
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i), str(start)],
                         stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]  # fmt: skip
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * 4, errors
    _integrity(path)
    with Store(path) as store:
        connection = store.connection
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
        counts = {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                  for table in ("probe_results", "probe_settings", "train_runs", "train_records",
                                "study_runs", "analyses")}  # fmt: skip
    assert counts == {"probe_results": 44, "probe_settings": 1, "train_runs": 2,
                      "train_records": 20, "study_runs": 2, "analyses": 2}  # fmt: skip
