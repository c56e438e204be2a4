"""Reproducibility: the same seed gives the same probe categories, byte-identical fine-tuning
sets and (on CPU) identical training losses and weights; and every stored result records the
versions and settings that made it.

Each stage runs twice from scratch (fresh workspaces, fresh run folders) on the planted model.
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import fields
from pathlib import Path

import pytest
from helpers import run_cli, run_ok

from knowshift.cli import main
from knowshift.probe.estimators import ProbeConfig
from knowshift.store import Store
from knowshift.train.config import TrainConfig

LIBRARIES = {"knowshift", "torch", "transformers", "python", "peft", "accelerate", "tokenizers",
             "safetensors", "numpy"}  # fmt: skip


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of our own


def _probe(model: Path, facts: Path, workspace: Path, *extra: str) -> None:
    run_ok(["probe", "--model", str(model), "--facts", f"jsonl:{facts}", "--workspace", str(workspace),
         "--split", "all", "--dtype", "float32", "--device", "cpu", "--n-exemplar-sets", "3",
         "--k-shot", "2", *extra])  # fmt: skip


def _rows(workspace: Path) -> list[dict]:
    """Every stored probe row, without the time it was written."""
    with Store.for_workspace(workspace) as store:
        return [{k: v for k, v in r.items() if k != "created_at"} for r in store.probe_rows()]


def _build(model: Path, facts: Path, workspace: Path, out: Path, seed: int = 0) -> Path:
    run_ok(["build", "--recipe", "unknown-ratio", "--model", str(model), "--facts", f"jsonl:{facts}",
         "--workspace", str(workspace), "--dtype", "float32", "--split", "test", "--size", "8",
         "--out", str(out), "--seed", str(seed), "--params-key", _key(workspace, "exact")])  # fmt: skip
    return out


def _key(workspace: Path, estimator: str) -> str:
    with Store.for_workspace(workspace) as store:
        (key,) = store.connection.execute(
            "SELECT params_key FROM probe_settings WHERE estimator = ?", (estimator,)
        ).fetchone()
    return key


def _train(model: Path, data: Path, out: Path, workspace: Path) -> None:
    run_ok(_train_argv(model, data, out, workspace))


def _train_argv(model: Path, data: Path, out: Path, workspace: Path) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--out", str(out), "--workspace",
            str(workspace), "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--precision",
            "fp32", "--device", "cpu", "--n-dev", "4", "--n-test", "8"]  # fmt: skip


@pytest.fixture(scope="module")
def twice(planted_model_dir, facts_file, tmp_path_factory) -> dict[str, Path]:
    """probe (exact and sampling) -> build -> train, twice, each time into fresh folders."""
    root = tmp_path_factory.mktemp("twice")
    made = {}
    for name in ("a", "b"):
        workspace = root / f"ws-{name}"
        _probe(planted_model_dir, facts_file, workspace)
        _probe(
            planted_model_dir, facts_file, workspace, "--estimator", "sampling", "--n-samples", "4"
        )
        data = _build(planted_model_dir, facts_file, workspace, root / f"set-{name}")
        _train(planted_model_dir, data, root / f"run-{name}", workspace)
        made.update(
            {f"ws-{name}": workspace, f"set-{name}": data, f"run-{name}": root / f"run-{name}"}
        )
    made["root"] = root
    return made


# --- the same seed, the same results ----------------------------------------------------------


def test_the_same_seed_gives_the_same_probe_results(twice):
    rows_a, rows_b = _rows(twice["ws-a"]), _rows(twice["ws-b"])
    assert len(rows_a) == 2 * 40  # every planted fact, by both estimators
    assert rows_a == rows_b  # categories, probabilities and every sampled answer


def test_another_seed_draws_other_exemplars_under_another_key(twice, planted_model_dir, facts_file):
    workspace = twice["root"] / "ws-seed1"
    _probe(planted_model_dir, facts_file, workspace, "--estimator", "sampling", "--n-samples", "4",
           "--seed", "1")  # fmt: skip
    assert _key(workspace, "sampling") != _key(twice["ws-a"], "sampling")
    seed0 = {
        r["fact_id"]: r["samples"] for r in _rows(twice["ws-a"]) if r["estimator"] == "sampling"
    }
    seed1 = {r["fact_id"]: r["samples"] for r in _rows(workspace)}
    assert seed0 != seed1


def test_building_twice_gives_byte_identical_files(twice, planted_model_dir, facts_file):
    for name in ("train.jsonl", "manifest.json"):
        assert (twice["set-a"] / name).read_bytes() == (twice["set-b"] / name).read_bytes(), name
    other = _build(
        planted_model_dir, facts_file, twice["ws-a"], twice["root"] / "set-seed1", seed=1
    )
    assert (other / "train.jsonl").read_bytes() != (twice["set-a"] / "train.jsonl").read_bytes()


def test_training_twice_on_cpu_gives_identical_losses_and_weights(twice):
    def records(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
                for line in lines]  # fmt: skip

    assert [r["epoch"] for r in records(twice["run-a"])] == [1, 2]
    assert records(twice["run-a"]) == records(twice["run-b"])  # losses and accuracies, exactly
    for checkpoint in ("last", "early_stop"):
        weights = [
            twice[f"run-{n}"] / "checkpoints" / checkpoint / "model.safetensors" for n in "ab"
        ]
        assert weights[0].read_bytes() == weights[1].read_bytes(), checkpoint
    ids = [json.loads((twice[f"run-{n}"] / "run.json").read_text())["run_id"] for n in "ab"]
    assert ids[0] == ids[1]


# --- every stored result says what made it ----------------------------------------------------


def test_probe_settings_record_the_settings_and_the_versions(twice):
    with Store.for_workspace(twice["ws-a"]) as store:
        rows = store.connection.execute("SELECT estimator, params, versions FROM probe_settings")
        settings = {estimator: (json.loads(p), json.loads(v)) for estimator, p, v in rows}
    assert set(settings) == {"exact", "sampling"}
    for params, versions in settings.values():
        assert {f.name for f in fields(ProbeConfig)} <= set(params)
        assert {"facts_digest", "dtype", "engine_version"} <= set(params)
        assert LIBRARIES | {"device", "dtype", "model"} <= set(versions)
        assert versions["device"] == "cpu" and versions["dtype"] == "torch.float32"


def test_a_set_records_its_recipe_seed_probe_and_version(twice):
    manifest = json.loads((twice["set-a"] / "manifest.json").read_text())
    with Store.for_workspace(twice["ws-a"]) as store:
        probe_params = store.settings_params(manifest["params_key"])
    assert manifest["seed"] == 0 and manifest["recipe"] == "unknown-ratio"
    assert manifest["spec"]["size"] == 8 and manifest["spec"]["frac_unknown"] == 0.5
    assert manifest["probe_params"] == probe_params  # the probe settings behind the categories
    assert manifest["knowshift_version"] and manifest["model_fingerprint"]
    assert manifest["examples_digest"]


def test_a_run_records_its_settings_data_and_versions(twice):
    info = json.loads((twice["run-a"] / "run.json").read_text())
    config = info["config"]
    assert set(config["train"]) == {f.name for f in fields(TrainConfig)}  # seed included
    manifest = json.loads((twice["set-a"] / "manifest.json").read_text())
    assert config["data"] == manifest["examples_digest"]
    assert config["base_fingerprint"] == manifest["model_fingerprint"]
    assert set(info["versions"]) >= LIBRARIES
    with Store.for_workspace(twice["ws-a"]) as store:
        stored = store.run_config(info["run_id"])
    assert {k: stored[k] for k in config} == config


def test_a_run_records_its_device_precision_and_facts_content(twice):
    info = json.loads((twice["run-a"] / "run.json").read_text())
    with Store.for_workspace(twice["ws-a"]) as store:
        stored = store.run_config(info["run_id"])
    assert "versions" in stored
    assert set(stored["versions"]) >= LIBRARIES
    assert info["environment"] == {"device": "cpu", "precision": "fp32", "processes": 1,
                                   "parallelism": "none"}  # fmt: skip
    assert {"device": "cpu", "precision": "fp32"}.items() <= stored.items()
    assert "facts_digest" in info["config"]


def test_an_edited_facts_file_is_another_run(twice, planted_model_dir, facts_file, tmp_path):
    # The held-out items come from the facts: rerunning a run folder after editing its fact
    # file would measure other items under the same id. It is another run: the folder refuses it.
    facts = tmp_path / "facts.jsonl"
    facts.write_bytes(facts_file.read_bytes())
    run = tmp_path / "run"
    argv = ["train", "--model", str(planted_model_dir), "--data", str(twice["set-a"]), "--out",
            str(run), "--workspace", str(twice["ws-a"]), "--epochs", "1", "--precision", "fp32",
            "--device", "cpu", "--n-dev", "4", "--n-test", "8", "--facts", f"jsonl:{facts}"]  # fmt: skip
    run_ok(argv)
    before = (run / "run.json").read_bytes()
    rows = [json.loads(line) for line in facts.read_text().splitlines()]
    rows[-1]["answers"] = ["Somewhere else"]
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stderr = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(stderr):
        assert main(argv) == 2
    assert "holds another run" in stderr.getvalue()
    assert (run / "run.json").read_bytes() == before


def test_resuming_a_run_under_other_versions_says_which_and_keeps_both(
    twice, planted_model_dir, monkeypatch, tmp_path
):
    # A finished run and its workspace, copied: resuming it trains no further epoch.
    run, workspace = tmp_path / "run", tmp_path / "ws"
    shutil.copytree(twice["run-a"], run)
    shutil.copytree(twice["ws-a"], workspace)
    argv = _train_argv(planted_model_dir, twice["set-a"], run, workspace)
    status, _, stderr = run_cli(argv)
    assert status == 0 and "note:" not in stderr  # the same versions: nothing to say
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    with Store.for_workspace(workspace) as store:
        first = store.run_config(run_id)["versions"]
    upgraded = {**first, "transformers": "99.0.0"}
    monkeypatch.setattr("knowshift.versions.environment_versions", lambda: dict(upgraded))
    status, _, stderr = run_cli(argv)
    assert status == 0, stderr
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: stored results of run {run_id} were made with transformers "
        f"{first['transformers']} (now 99.0.0); results made now will be marked with the new versions"
    ]
    with Store.for_workspace(workspace) as store:
        stored = store.run_config(run_id)
    assert stored["versions"] == upgraded and stored["earlier_versions"] == [first]
    assert json.loads((run / "run.json").read_text())["versions"] == first  # its first start
