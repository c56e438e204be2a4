"""Crash safety: a probe, a training run (build + train) and a study, killed with SIGKILL at
random points and rerun until they complete, end exactly where an uninterrupted run with the
same seed ends, and no kill leaves a half-written artefact under its real name.

Kills fall after a random number of the command's durable-write events (see killable.py), at
once or after a random delay. The fast tier kills each target KNOWSHIFT_KILL_ITERATIONS times
(default 4); a long run: KNOWSHIFT_KILL_ITERATIONS=25 pytest tests/test_crash.py -s
(KNOWSHIFT_KILL_SEED picks other kill points).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from killable import KillPlan, Zygote, run_until_done, tail
from safetensors.torch import load_file
from test_study import _tiny_study, _write

from knowshift import atomic
from knowshift.errors import KnowshiftError
from knowshift.models import load_model
from knowshift.train.config import TrainConfig
from knowshift.train.loop import EpochRecord, read_metrics, train
from knowshift.train.measure import EvalItem

KILLS = int(os.environ.get("KNOWSHIFT_KILL_ITERATIONS", "4"))  # per target
SEED = int(os.environ.get("KNOWSHIFT_KILL_SEED", "0"))
SMALL_BLOCKS = (("knowshift.probe.run", "BLOCK_FACTS", {"exact": 8, "sampling": 4}),)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    with Zygote({"KNOWSHIFT_CACHE": str(tmp_path_factory.mktemp("cache"))}) as zygote:
        yield zygote


# --- what a folder holds -------------------------------------------------------------------------


def _integrity(database: Path) -> None:
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",), database


def _relative(value, root: Path):
    """A stored value with the folder's path written as <ROOT> (runs record their folders)."""
    if isinstance(value, str):
        return value.replace(str(root.resolve()), "<ROOT>").replace(str(root), "<ROOT>")
    return value


def _rows(root: Path, database: Path) -> dict[str, list]:
    """Every table's rows, sorted, without timestamps, after checking the file is sound."""
    _integrity(database)
    dump = {}
    with closing(sqlite3.connect(database)) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables.fetchall():
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            kept = [c for c in columns if c not in ("created_at", "updated_at")]
            rows = connection.execute(f"SELECT {', '.join(kept)} FROM {table}").fetchall()
            dump[table] = sorted((tuple(_relative(v, root) for v in row) for row in rows), key=repr)
    return dump


def _run_folder(run: Path, root: Path) -> dict:
    """A training run's folder: its config, its measurements (without timings) and a digest of
    every checkpoint's files."""
    metrics = [{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
               for line in (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    checkpoints = {
        folder.name: {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
        for folder in sorted((run / "checkpoints").glob("[!.]*"))
    }
    texts = {name: _relative((run / name).read_text(), root)
             for name in ("run.json", "stages.json", "config.json") if (run / name).is_file()}  # fmt: skip
    predictions = {p.name: p.read_text() for p in sorted(run.glob("predictions/*.jsonl"))}
    return {"metrics": metrics, "checkpoints": checkpoints, "texts": texts,
            "predictions": predictions}  # fmt: skip


def _check_artefacts(root: Path) -> None:
    """What a kill left under real names (temporaries start with a dot) is complete: files
    parse, checkpoints and resume states carry the epoch.json written last, weights load, the
    database is sound. Only metrics.jsonl, appended to, may end in a torn line."""
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_dir():
            if path.parent.name == "checkpoints" or path.name == "state":
                assert (path / "epoch.json").is_file(), f"{path} is incomplete"
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            lines = path.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                if path.name != "metrics.jsonl" or number < len(lines):
                    json.loads(line)
        elif path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.name == "knowshift.db":
            _integrity(path)


def _kill_chains(name: str, tmp_path: Path, chain: Callable[[Path, int], int],
                 state: Callable[[Path], dict], expected: dict) -> None:  # fmt: skip
    """Run `chain` (kill and rerun in a fresh folder until done; returns its kills) until KILLS
    kills are spent; every chain must end in the uninterrupted run's `expected` state."""
    kills = chains = 0
    while kills < KILLS:
        folder = tmp_path / f"chain{chains}"
        folder.mkdir()
        kills += chain(folder, KILLS - kills)
        assert state(folder) == expected, f"{name}: resumed run {chains} differs; {tail(folder)}"
        chains += 1
    print(f"\n{name}: {kills} kills in {chains} resumed runs, each equal to the uninterrupted run")


# --- the probe -----------------------------------------------------------------------------------


def _probe_args(model_dir: Path, facts_file: Path, *extra: str) -> list[str]:
    return ["probe", "--model", str(model_dir), "--facts", f"jsonl:{facts_file}", "--dtype", "float32",
            "--device", "cpu", "--split", "all", "--workspace", "ws", *extra]  # fmt: skip


def test_a_killed_probe_resumes_to_the_uninterrupted_results(
    zygote, planted_model_dir, facts_file, tmp_path
):
    argv = _probe_args(planted_model_dir, facts_file, "--estimator", "sampling", "--k-shot", "2",
                       "--n-exemplar-sets", "3", "--out", "probe.jsonl")  # fmt: skip

    def state(folder: Path) -> dict:
        rows = _rows(folder, folder / "ws" / "knowshift.db")
        return {"rows": rows, "out": (folder / "probe.jsonl").read_text()}

    reference = tmp_path / "reference"
    reference.mkdir()
    uninterrupted = zygote.run(argv, reference, patches=SMALL_BLOCKS)
    assert uninterrupted.status == 0, tail(reference)
    expected = state(reference)
    assert len(expected["rows"]["probe_results"]) == 40  # one row per fact, 10 blocks of 4
    plan = KillPlan(uninterrupted.events, random.Random(SEED))

    def chain(folder: Path, kills_left: int) -> int:
        return run_until_done(zygote, argv, folder, plan, kills_left, patches=SMALL_BLOCKS,
                              after_kill=lambda: _check_artefacts(folder))  # fmt: skip

    _kill_chains("probe", tmp_path, chain, state, expected)


# --- a training run: build + train ---------------------------------------------------------------


def _training_commands(model_dir: Path, facts_file: Path) -> list[list[str]]:
    build = ["build", "--recipe", "unknown-ratio", "--facts", f"jsonl:{facts_file}", "--model", str(model_dir),
             "--workspace", "ws", "--out", "set", "--split", "test", "--size", "8", "--frac-unknown", "0.5"]  # fmt: skip
    train = ["train", "--data", "set", "--model", str(model_dir), "--out", "run", "--epochs", "3",
             "--lr", "2e-3", "--batch-size", "4", "--precision", "fp32", "--n-dev", "8", "--n-test", "16",
             "--eval-every-steps", "1", "--workspace", "ws", "--device", "cpu"]  # fmt: skip
    return [build, train]


def _copy_workspace(source: Path, folder: Path) -> None:
    (folder / "ws").mkdir()
    with (
        closing(sqlite3.connect(source / "knowshift.db")) as src,
        closing(sqlite3.connect(folder / "ws" / "knowshift.db")) as dst,
    ):
        src.backup(dst)


def test_a_killed_training_run_resumes_to_the_uninterrupted_results(
    zygote, planted_model_dir, facts_file, tmp_path
):
    probed = tmp_path / "probed"  # the base model's categories, which the build draws from
    probed.mkdir()
    assert zygote.run(_probe_args(planted_model_dir, facts_file), probed).status == 0, tail(probed)
    commands = _training_commands(planted_model_dir, facts_file)

    def state(folder: Path) -> dict:
        sets = {p.name: p.read_text() for p in sorted((folder / "set").glob("[!.]*"))}
        return {"rows": _rows(folder, folder / "ws" / "knowshift.db"), "set": sets,
                "run": _run_folder(folder / "run", folder)}  # fmt: skip

    reference = tmp_path / "reference"
    reference.mkdir()
    _copy_workspace(probed / "ws", reference)
    plans = []
    for index, argv in enumerate(commands):
        outcome = zygote.run(argv, reference)
        assert outcome.status == 0, tail(reference)
        plans.append(KillPlan(outcome.events, random.Random(SEED + 1 + index)))
    expected = state(reference)
    assert [m["epoch"] for m in expected["run"]["metrics"]] == [0.5, 1, 1.5, 2, 2.5, 3]

    def chain(folder: Path, kills_left: int) -> int:
        _copy_workspace(probed / "ws", folder)
        kills = 0
        for argv, plan in zip(commands, plans, strict=True):
            kills += run_until_done(zygote, argv, folder, plan, kills_left - kills,
                                    after_kill=lambda: _check_artefacts(folder))  # fmt: skip
        return kills

    _kill_chains("build + train", tmp_path, chain, state, expected)


# --- a study -------------------------------------------------------------------------------------


def test_a_killed_study_resumes_to_the_uninterrupted_results(
    zygote, planted_model_dir, facts_file, tmp_path
):
    document = _tiny_study(planted_model_dir, facts_file)
    argv = ["study", "run", "study.yaml", "--out", "out"]

    def state(folder: Path) -> dict:
        out = folder / "out"
        runs = {p.name: _run_folder(p, folder) for p in sorted((out / "runs").iterdir())}
        sets = {
            f"{p.parent.name}/{p.name}": p.read_text() for p in sorted(out.glob("sets/*/[!.]*"))
        }
        return {"rows": _rows(folder, out / "knowshift.db"), "runs": runs, "sets": sets,
                "study": (out / "study.yaml").read_text()}  # fmt: skip

    reference = tmp_path / "reference"
    reference.mkdir()
    _write(reference / "study.yaml", document)
    uninterrupted = zygote.run(argv, reference)
    assert uninterrupted.status == 0, tail(reference)
    expected = state(reference)
    assert [row[3] for row in expected["rows"]["study_runs"]] == ["done", "done"]
    plan = KillPlan(uninterrupted.events, random.Random(SEED + 3))

    def chain(folder: Path, kills_left: int) -> int:
        _write(folder / "study.yaml", document)
        return run_until_done(zygote, argv, folder, plan, kills_left,
                              after_kill=lambda: _check_artefacts(folder))  # fmt: skip

    _kill_chains("study", tmp_path, chain, state, expected)


# --- the pieces, each on its own -----------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_and_a_damaged_earlier_one_is_an_error(tmp_path):
    record = EpochRecord(1, 2, 0.5, {"dev": 0.25})
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(record.__dict__) + "\n" + json.dumps(record.__dict__)[:17])
    assert read_metrics(path) == [record]
    path.write_text("{not json\n" + json.dumps(record.__dict__) + "\n")
    with pytest.raises(KnowshiftError, match="line 1 is damaged"):
        read_metrics(path)
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_a_folder_swap_cut_between_its_renames_is_undone(tmp_path, monkeypatch):
    target, new = tmp_path / "last", tmp_path / ".last.tmp"
    for folder, text in ((target, "old"), (new, "new")):
        folder.mkdir()
        (folder / "weights").write_text(text)
    renames, real_replace = [], os.replace

    def killed_at_second_rename(src, dst):
        if renames:
            raise KeyboardInterrupt  # stands for the kill
        renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic.replace_dir(new, target)
    monkeypatch.undo()
    assert not target.exists()  # the window a kill can hit
    atomic.recover_dir(target)
    assert (target / "weights").read_text() == "old"
    atomic.replace_dir(new, target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic.write_text(tmp_path / "run.json", '{"run_id": "a"}')
    with pytest.raises(RuntimeError), atomic.writing(path) as tmp:
        tmp.write_text('{"run_id": "b", "half')
        raise RuntimeError("killed")
    assert path.read_text() == '{"run_id": "a"}'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_run_that_stopped_early_stays_stopped_when_rerun(planted, planted_model_dir, tmp_path):
    """A run that stopped once every example was fitted is finished: rerunning its command must
    not train the epochs it skipped."""
    known = [f for f in planted.by_split("test") if f.id.startswith("planted:")]
    pairs = [(f"Q: {f.question}\nA:", f" {f.answer}\n") for f in known]
    items = [EvalItem(f.id, p, (c.rstrip("\n"),), ("train",)) for f, (p, c) in zip(known, pairs, strict=True)]  # fmt: skip
    config = TrainConfig(epochs=4, lr=1e-4, precision="fp32", stop_at_full_train_accuracy=True)
    model = str(planted_model_dir)
    first = train(load_model(model, dtype="float32"), pairs, items, config, tmp_path)
    assert [r.epoch for r in first.records] == [1]  # the planted model knows these already
    again = train(load_model(model, dtype="float32"), pairs, items, config, tmp_path)
    assert again.records == first.records
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
