"""`knowshift study run --executor ray`: a study's runs as Ray tasks on a Ray instance the test
starts, with the same results as the local executor, progress on the driver, finished runs
skipped, a failing run retried and reported, and bad flags one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import TOY_STUDY, run_cli

import knowshift
from knowshift.store import Store

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'knowshift[ray]')")


def _study(model_dir: Path, facts_file: Path, name: str, **sections) -> dict:
    """Two runs on the planted model, evaluated and analysed (the analysis stores into the
    task's database, so its merge is tested too)."""
    return {
        **TOY_STUDY,
        "name": name,
        "model": {"name": str(model_dir), "dtype": "float32"},
        "facts": {"source": f"jsonl:{facts_file}"},
        "train": {"epochs": 2, "lr": 2e-3, "batch_size": 4, "precision": "fp32", "n_dev": 8, "n_test": 16},
        "eval": {"checkpoints": ["last"], "n_facts": 16},
        "analyses": [{"kind": "collapse", "limit": 16}],
        "grid": {"build.frac_unknown": [0.25, 0.75]},
        **sections,
    }  # fmt: skip


def _write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def _results(study_dir: Path, name: str) -> dict:
    """What a study stored, by run: status, per-epoch accuracies, config, analyses."""
    with Store.for_workspace(study_dir) as store:
        results = {}
        for row in store.study_runs(name):
            run_id = row["run_id"]
            config = store.run_config(run_id) or {}
            results[run_id] = {
                "status": row["status"], "variant": row["variant"],
                "accuracy": [r["accuracy"] for r in store.train_records(run_id)],
                "group_sizes": config.get("group_sizes"),
                "analyses": sorted((a["kind"], json.dumps(a["result"], sort_keys=True))
                                   for a in store.analyses(subject=f"{run_id}:last")),
            }  # fmt: skip
        return results


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for the module; the CLI finds this process connected and uses it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")

    @ray.remote
    def imported_from() -> str:
        return knowshift.__file__

    # The workers must run this checkout (PYTHONPATH is passed on to them), not another copy.
    assert ray.get(imported_from.remote()) == knowshift.__file__
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def studies(planted_model_dir, facts_file, tmp_path_factory, ray_instance):
    """The same study run by the local executor and by the Ray executor: (file, local folder,
    ray folder, the ray run's stderr)."""
    root = tmp_path_factory.mktemp("ray-study")
    path = _write(root / "tiny.yaml", _study(planted_model_dir, facts_file, "tiny"))
    status, _, err = run_cli(["study", "run", str(path), "--out", str(root / "local")])
    assert status == 0, err
    status, _, err = run_cli(["study", "run", str(path), "--out", str(root / "ray"),
                              "--executor", "ray", "--retries", "0"])  # fmt: skip
    assert status == 0, err
    return path, root / "local", root / "ray", err


def test_ray_runs_store_what_local_runs_store(studies):
    _, local, on_ray, _ = studies
    expected = _results(local, "tiny")
    assert [r["status"] for r in expected.values()] == ["done", "done"]
    assert all(len(r["accuracy"]) == 2 and len(r["analyses"]) == 2 for r in expected.values())
    assert _results(on_ray, "tiny") == expected  # same run ids, records and analyses
    # The tasks' databases were merged and removed; every run folder is complete.
    assert not list(on_ray.glob("runs/*/task.db"))
    for folder in on_ray.glob("runs/*"):
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
        assert len((folder / "predictions" / "last.jsonl").read_text().splitlines()) == 16


def test_the_driver_prints_each_runs_progress(studies):
    *_, err = studies
    for i in (1, 2):
        assert f"[{i}/2] frac_unknown=" in err
    lines = err.splitlines()
    for stage in (": started on ", ": train (full, 2 epochs)", ": eval last", ": analyze collapse",
                  ": last: ", ": done in "):  # fmt: skip
        assert sum(stage in line and line.startswith("[") for line in lines) == 2, stage
    assert "ray: 2 CPUs, 0 GPUs; each run takes 1 CPUs, 0 GPUs, 1 attempts at most" in err


def test_a_rerun_on_ray_skips_finished_runs(studies):
    path, _, on_ray, _ = studies
    before = _results(on_ray, "tiny")
    logs = {p: p.stat().st_mtime_ns for p in on_ray.glob("runs/*/stages.json")}
    status, _, err = run_cli(["study", "run", str(path), "--out", str(on_ray), "--executor", "ray"])
    assert status == 0, err
    assert "2 done earlier, 0 to run" in err and err.count("done earlier, skipped") == 2
    assert "started on" not in err
    assert _results(on_ray, "tiny") == before
    assert {p: p.stat().st_mtime_ns for p in on_ray.glob("runs/*/stages.json")} == logs


def test_a_failing_run_is_retried_then_reported_while_the_other_finishes(
    planted_model_dir, facts_file, tmp_path, ray_instance
):
    # LoRA on a module the model does not have: the run fails in training, on every attempt.
    document = _study(planted_model_dir, facts_file, "failing", grid={}, analyses=[],
                      eval={"checkpoints": []},
                      variants=[{"label": "good"},
                                {"label": "bad", "train.method": "lora",
                                 "train.lora_target_modules": ["no_such_proj"]}])  # fmt: skip
    document["train"]["epochs"] = 1
    path, out = _write(tmp_path / "failing.yaml", document), tmp_path / "out"
    argv = ["study", "run", str(path), "--out", str(out), "--executor", "ray", "--retries", "2"]
    status, _, err = run_cli(argv)
    assert status == 1, err
    message = "LoRA target module(s) no_such_proj not in this model"
    for k in (1, 2, 3):
        assert f"bad ({_run_ids(path)[1]}): FAILED (attempt {k} of 3): {message}" in err
    assert "1/2 runs done (0 earlier), 1 failed" in err and f"failed: bad: {message}" in err
    with Store.for_workspace(out) as store:
        good, bad = store.study_runs("failing")
        assert good["status"] == "done" and len(store.train_records(good["run_id"])) == 1
        assert bad["status"] == "failed" and message in bad["variant"]["error"]
    assert message in (out / "runs" / bad["variant"]["folder"] / "error.txt").read_text()
    # A rerun skips the finished run and tries the failed one again.
    status, _, err = run_cli([*argv[:-1], "0"])
    assert status == 1 and "1 done earlier, 1 to run" in err
    assert "good (" in err and "done earlier, skipped" in err
    assert f"FAILED (attempt 1 of 1): {message}" in err


def _run_ids(path: Path) -> list[str]:
    from knowshift.study import load_study

    return [run.run_id for run in load_study(path).runs]


def test_an_address_nobody_answers_is_one_line(planted_model_dir, facts_file, tmp_path):
    path = _write(tmp_path / "s.yaml", _study(planted_model_dir, facts_file, "nowhere"))
    with socket.socket() as probe:  # a port free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # In a process of its own: this one is connected to the test's Ray instance.
    code = "import sys; from knowshift.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "study", "run", str(path), "--out", str(tmp_path / "o"),
               "--executor", "ray", "--address", f"127.0.0.1:{port}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"knowshift: error: --address 127.0.0.1:{port}: no Ray cluster")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--executor", "nonsense"], "argument --executor: invalid choice: 'nonsense'"),
        (["--retries", "2"], "--retries applies to --executor ray only"),
        (["--executor", "ray", "--retries", "-1"], "--retries must be at least 0"),
        (["--executor", "ray", "--device", "cuda:1"], "give --device cuda"),
    ],
)  # fmt: skip
def test_bad_executor_flags_are_one_line(flags, message, planted_model_dir, facts_file, tmp_path):
    path = _write(tmp_path / "s.yaml", _study(planted_model_dir, facts_file, "bad"))
    status, _, err = run_cli(["study", "run", str(path), "--out", str(tmp_path / "o"), *flags])
    assert status == 2
    (line,) = err.splitlines()
    assert line.startswith("knowshift: error: ") and message in line
    assert not (tmp_path / "o").exists()


def test_without_ray_installed_the_error_says_how_to_install_it(
    planted_model_dir, facts_file, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    path = _write(tmp_path / "s.yaml", _study(planted_model_dir, facts_file, "no-ray"))
    status, _, err = run_cli(["study", "run", str(path), "--out", str(tmp_path / "o"),
                              "--executor", "ray"])  # fmt: skip
    assert status == 2 and "pip install 'knowshift[ray]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
