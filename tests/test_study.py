"""Studies: a study file expands into runs with stable ids, validates instantly and without torch,
runs end to end on the planted-fact model, skips finished work on a rerun and resumes a killed run."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import TOY_STUDY, fitted_shares_have_full_rank

from knowshift.cli import main
from knowshift.errors import KnowshiftError
from knowshift.store import Store
from knowshift.study import load_study, parse_study

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))

BASE = {
    **TOY_STUDY,
    "grid": {"build.frac_unknown": [0, 0.5, 1.0], "train.lr": [1e-3, 3e-3]},
    "variants": [{"label": "D_Known", "build.recipe": "known-only"},
                 {"build.recipe": "idk:unknown-ratio"}],
}  # fmt: skip


def _with(**changes):
    document = copy.deepcopy(BASE)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            document[section][name] = value
        else:
            document[section] = value
    return document


# --- expansion and ids -------------------------------------------------------------------------


def test_grid_product_then_variants_in_order():
    study = parse_study(BASE)
    assert len(study.runs) == 3 * 2 + 2
    assert [r.variant for r in study.runs[:2]] == [
        {"build.frac_unknown": 0.0, "train.lr": 1e-3},
        {"build.frac_unknown": 0.0, "train.lr": 3e-3},
    ]
    assert study.runs[0].label == "frac_unknown=0, lr=0.001"  # as written
    d_known, idk = study.runs[-2:]
    assert d_known.label == "D_Known" and d_known.variant["label"] == "D_Known"
    assert d_known.config.build.recipe == "known-only"
    assert idk.label == "recipe=idk:unknown-ratio" and idk.config.build.spec.idk
    # A variant starts from the base, not from a grid point.
    assert d_known.config.build.spec.frac_unknown == 0.5 and d_known.config.train.config.lr == 1e-3


def test_a_grid_value_may_set_several_keys_and_variants_alone_skip_the_base():
    document = _with(grid={"build": [{"k_additions": 0}, {"k_additions": 2, "addition": "highly-known"}],
                           "build.n_unknown": [4, 8]},
                     build={"recipe": "pack", "n_unknown": 4, "split": "test"}, variants=[])  # fmt: skip
    runs = parse_study(document).runs
    assert [r.label for r in runs] == [
        "k_additions=0, n_unknown=4", "k_additions=0, n_unknown=8",
        "k_additions=2, addition=highly-known, n_unknown=4", "k_additions=2, addition=highly-known, n_unknown=8",
    ]  # fmt: skip
    assert runs[2].config.build.spec.addition == "highly-known"
    only_variants = parse_study(_with(grid={}, variants=[{"train.epochs": 3}, {"train.epochs": 4}]))
    assert [r.config.train.config.epochs for r in only_variants.runs] == [3, 4]


def test_seeds_repeat_every_grid_point_and_variant_with_training_and_set_seeds():
    plain = parse_study(BASE).runs
    seeded = parse_study(_with(seeds=3)).runs
    assert len(seeded) == 3 * len(plain)
    n = len(plain)
    for seed in range(3):  # seed by seed: every run of the plain study, then again per seed
        same = seeded[seed * n : (seed + 1) * n]
        assert [r.label for r in same] == [f"{run.label}, seed={seed}" for run in plain]
        assert {(r.config.train.config.seed, r.config.build.seed) for r in same} == {(seed, seed)}
        assert {r.variant["train.seed"] for r in same} == {seed}
    # Seed 0 is the default: the same runs as without seeds, so nothing is trained twice.
    assert [r.run_id for r in seeded[:n]] == [r.run_id for r in plain]
    assert len({r.run_id for r in seeded}) == 3 * n
    assert [
        r.config.train.config.seed for r in parse_study(_with(seeds=[4, 7])).runs[:: len(plain)]
    ] == [4, 7]


@pytest.mark.parametrize("seeds", [0, [], [1, 1], ["a"], 1.5, True])
def test_bad_seeds_name_the_key_and_the_way_to_write_it(seeds):
    with pytest.raises(KnowshiftError, match="seeds"):
        parse_study(_with(seeds=seeds))


def test_run_ids_are_the_hash_of_the_resolved_settings():
    ids = [r.run_id for r in parse_study(BASE).runs]
    assert ids == [r.run_id for r in parse_study(copy.deepcopy(BASE)).runs]
    assert len(set(ids)) == len(ids)
    # A default written out is the same run; a changed value is a new one.
    assert [r.run_id for r in parse_study(_with(train__batch_size=8)).runs] == ids
    changed = [r.run_id for r in parse_study(_with(train__epochs=3)).runs]
    assert not set(changed) & set(ids)
    # What is measured after training is not part of the identity: no retraining for it.
    measured = _with(eval={"n_facts": 7}, analyses=[{"kind": "collapse", "limit": 9}])
    assert [r.run_id for r in parse_study(measured).runs] == ids


def test_scale_multiplies_sizes_and_overrides_apply_to_every_run():
    study = parse_study(BASE, scale=2, overrides=["train.epochs=5", "build.seed=3"])
    assert {r.config.build.spec.size for r in study.runs} == {16}
    assert study.runs[0].config.probe.limit == 64
    assert {r.config.train.config.epochs for r in study.runs} == {5}
    assert study.document["overrides"] == {"train.epochs": 5, "build.seed": 3}
    # The resolved document, read back, is the same study.
    assert [r.run_id for r in parse_study(study.document).runs] == [r.run_id for r in study.runs]
    # null removes a base setting (back to its default).
    assert parse_study(BASE, overrides=["build.size=null"]).runs[0].config.build.spec.size is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gird": {}}, "unknown study key 'gird' (did you mean 'grid'?)"),
        ({"train__epocs": 3}, "unknown train key 'epocs' (did you mean 'epochs'?)"),
        ({"grid": {"build.frac_unknwn": [0.5]}}, "did you mean 'build.frac_unknown'?"),
        ({"grid": {"trian.lr": [1]}}, "(did you mean 'train'?)"),
        ({"build__recipe": "unknown-ratoi"}, "unknown recipe 'unknown-ratoi' (did you mean 'unknown-ratio'?)"),
        ({"probe__estimator": "exakt"}, "did you mean 'exact'?"),
        ({"train__method": "lroa"}, "unknown train.method 'lroa' (did you mean 'lora'?)"),
        ({"train__epochs": "ten"}, "train.epochs must be a whole number, got 'ten'"),
        ({"train__epochs": 0}, "train.epochs must be at least 1"),
        ({"build__frac_unknown": 2}, "build.frac_unknown must be between 0 and 1"),
        ({"build__category": "Unknown"}, "build.category does not apply to recipe unknown-ratio"),
        ({"build__recipe": "mastery", "build__mastery_level": 1, "grid": {}, "variants": []},
         "recipe mastery cannot use exact probe results"),
        ({"analyses": [{"kind": "shfit"}]}, "did you mean 'shift'?"),
        ({"analyses": [{"kind": "shift", "limt": 9}]}, "did you mean 'limit'?"),
        ({"analyses": [{"kind": "shift", "limit": "many"}]}, "invalid int value: 'many'"),
        ({"analyses": [{"kind": "shift", "run": "x"}]}, "the study sets --run itself"),
        ({"analyses": ["regression"]}, "list it under study_analyses"),
        ({"eval": {"checkpoints": ["best"]}}, "unknown checkpoint in eval.checkpoints 'best'"),
        ({"grid": {"train.lr": 0.1}}, "grid.train.lr must be a non-empty list"),
        ({"variants": [{"train.lr": 1}, {"train.lr": 1}], "grid": {}}, "have the same settings"),
    ],
)  # fmt: skip
def test_bad_study_files_name_the_key_and_the_fix(changes, message):
    with pytest.raises(KnowshiftError) as error:
        parse_study(_with(**changes))
    assert message in str(error.value)


def test_floats_written_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(_with(train__lr="5e-5", grid={}, variants=[])).replace("'5e-5'", "5e-5")
    )
    assert load_study(path).runs[0].config.train.config.lr == 5e-5


def test_validate_imports_no_torch(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    code = ("import sys; from knowshift.cli import main; "
            f"status = main(['study', 'validate', {str(path)!r}]); "
            "assert status == 0, status; assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "study toy: 8 runs" in done.stdout and "D_Known" in done.stdout


def test_a_bad_file_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_with(train__epocs=3)))
    assert main(["study", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'epochs'?" in err and "Traceback" not in err
    path.write_text("name: [unclosed\n")
    assert main(["study", "validate", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_ready_studies_validate_and_say_what_they_reproduce(path):
    header = path.read_text().split("\n\n", 1)[0]
    assert "METHODS" in header and "scale" in header
    study = load_study(path)
    assert study.name == path.stem and len(study.runs) >= 3
    assert len(load_study(path, scale=4).runs) == len(study.runs)


def test_the_ready_studies_are_the_published_experiments():
    assert {p.stem for p in CONFIGS} >= {
        "unknown-ratio", "categories", "size-mastery", "intervention", "lora-packing"
    }  # fmt: skip


# --- running on the planted-fact model ---------------------------------------------------------


def _tiny_study(model_dir: Path, facts_file: Path) -> dict:
    """Two runs on the planted model, 3 epochs each, evaluated and analysed, then the regression."""
    return {
        "name": "tiny",
        "model": {"name": str(model_dir), "dtype": "float32"},
        "facts": {"source": f"jsonl:{facts_file}"},
        "probe": {"limit": 32},
        "build": {"recipe": "unknown-ratio", "size": 8, "split": "test"},
        "train": {"epochs": 3, "lr": 2e-3, "batch_size": 4, "precision": "fp32", "n_dev": 8, "n_test": 16},
        "eval": {"checkpoints": ["last"], "n_facts": 16},
        "analyses": [{"kind": "collapse", "limit": 16}],
        "study_analyses": ["regression"],
        "grid": {"build.frac_unknown": [0.25, 0.75]},
    }  # fmt: skip


def _write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def _results(study_dir: Path) -> dict:
    """Per train run id: its per-epoch accuracies (what a study's results are)."""
    with Store.for_workspace(study_dir) as store:
        rows = store.study_runs("tiny")
        return {r["run_id"]: [rec["accuracy"] for rec in store.train_records(r["run_id"])]
                for r in rows if r["status"] != "dropped"}  # fmt: skip


@pytest.fixture(scope="module")
def finished(planted_model_dir, facts_file, tmp_path_factory):
    """The tiny study run once to the end: (study file, study folder)."""
    root = tmp_path_factory.mktemp("study")
    path = _write(root / "tiny.yaml", _tiny_study(planted_model_dir, facts_file))
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        assert main(["study", "run", str(path), "--out", str(root / "out")]) == 0
    (root / "study.log").write_text(log.getvalue())  # what the user saw, for the tests to read
    return path, root / "out"


def test_a_study_runs_end_to_end(finished):
    path, out = finished
    study = load_study(out / "study.yaml")
    assert [r.run_id for r in study.runs] == [r.run_id for r in load_study(path).runs]
    with Store.for_workspace(out) as store:
        rows = store.study_runs("tiny")
        assert [r["status"] for r in rows] == ["done", "done"]
        assert [r["variant"] for r in rows] == [
            {"build.frac_unknown": 0.25, "folder": study.runs[0].run_id},
            {"build.frac_unknown": 0.75, "folder": study.runs[1].run_id},
        ]
        assert all((out / "runs" / r["variant"]["folder"] / "config.json").is_file() for r in rows)
        # The store's run id is the training's: records, config and analyses join on it.
        for row in rows:
            assert len(store.train_records(row["run_id"])) == 3
            assert store.run_config(row["run_id"])["group_sizes"]["train/Unknown"] in (2, 6)
            assert store.analyses("collapse", f"{row['run_id']}:last")
            (summary,) = store.analyses("eval", f"{row['run_id']}:last")
            assert summary["result"]["all"]["all"]["n"] == 16
        # The study's regression fits accuracy on the fitted Known / Unknown shares over the 6
        # (run, epoch) points. Whether 3 epochs fit any Unknown example is up to the training;
        # when none is, the shares are collinear and the study says so instead of storing a fit.
        if fitted_shares_have_full_rank(store, [row["run_id"] for row in rows]):
            (regression,) = store.analyses("regression", "tiny")
            assert len(regression["result"]["points"]) == 6
        else:
            assert not store.analyses("regression", "tiny")
            log = (out.parent / "study.log").read_text()
            assert "study analysis regression: not fitted: the regressors are collinear" in log
    for run in study.runs:
        folder = out / "runs" / run.run_id
        config = json.loads((folder / "config.json").read_text())
        assert config["run_id"] == run.run_id and config["config"]["train"]["epochs"] == 3
        environment = json.loads((folder / "environment.json").read_text())
        assert environment["device"] == "cpu" and "torch" in environment["versions"]
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
        assert len((folder / "predictions" / "last.jsonl").read_text().splitlines()) == 16
        assert not (folder / "state").exists()  # the resume state goes once training is done


def test_a_rerun_skips_finished_runs(finished, monkeypatch, capsys):
    path, out = finished
    before = _results(out)
    logs = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/stages.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("knowshift.train.run.run_training", no_training)
    assert main(["study", "run", str(path), "--out", str(out)]) == 0
    assert "2 done earlier, 0 to run" in capsys.readouterr().err
    assert _results(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/stages.json")} == logs


def test_status_lists_the_runs(finished, capsys):
    _, out = finished
    assert main(["study", "status", str(out)]) == 0
    assert capsys.readouterr().out.count("done") == 2


# The study in a subprocess whose second run stops after its first epoch's resume state is saved,
# writes a marker and waits there to be killed.
def test_studies_of_one_model_share_their_probing(
    finished, planted_model_dir, facts_file, tmp_path, capsys
):
    _, cache = finished  # a workspace holding the tiny study's probe results
    document = {**_tiny_study(planted_model_dir, facts_file), "name": "tiny-b",
                "grid": {"build.frac_unknown": [0.5]}, "analyses": [], "study_analyses": []}  # fmt: skip
    path, out = _write(tmp_path / "b.yaml", document), tmp_path / "b"
    assert main(["study", "run", str(path), "--out", str(out), "--probe-cache", str(cache)]) == 0
    err = capsys.readouterr().err
    with Store.for_workspace(out) as mine, Store.for_workspace(cache) as shared:
        rows = mine.probe_rows()
        # Every fact this study needed was probed by the first one: taken, none computed anew.
        assert f"probe: {len(rows)} results taken from" in err and len(rows) > 0
        assert "probe: 0 new results added" in err
        ids = {row["fact_id"] for row in rows}
        assert rows == [row for row in shared.probe_rows() if row["fact_id"] in ids]


KILLED_STUDY = """
import pathlib, sys, time
import knowshift.train.loop as loop
from knowshift.cli import main

save_state, runs = loop._save_state, []
def save_then_wait(accelerator, out_dir, epoch):
    save_state(accelerator, out_dir, epoch)
    runs.append(out_dir) if out_dir not in runs else None
    if len(runs) == 2:
        pathlib.Path(sys.argv[1]).write_text(str(out_dir))
        time.sleep(300)
loop._save_state = save_then_wait
main(["study", "run", sys.argv[2], "--out", sys.argv[3]])
"""


def test_a_killed_study_resumes_without_redoing_finished_runs(finished, tmp_path):
    path, reference = finished
    out, marker = tmp_path / "out", tmp_path / "killed-here"
    command = [sys.executable, "-c", KILLED_STUDY, str(marker), str(path), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert marker.exists(), "the study never reached its second run's first epoch"
    first, second = (out / "runs" / run.run_id for run in load_study(path).runs)
    assert Path(marker.read_text()) == second and (second / "state").is_dir()
    stamp = (first / "stages.json").stat().st_mtime_ns
    assert main(["study", "run", str(path), "--out", str(out)]) == 0
    assert (first / "stages.json").stat().st_mtime_ns == stamp  # the finished run was not redone
    assert _results(out) == _results(reference)  # the second resumed from its first epoch


def test_a_failed_run_is_recorded_and_the_study_goes_on(
    planted_model_dir, facts_file, tmp_path, capsys
):
    document = _tiny_study(planted_model_dir, facts_file)
    # 40 examples: more than the 32 probed facts, so that run's build fails; the other runs.
    document.update(grid={"build.size": [40, 4]}, analyses=[], study_analyses=[], eval={"checkpoints": []},
                    train={**document["train"], "epochs": 1})  # fmt: skip
    path = _write(tmp_path / "tiny.yaml", document)
    assert main(["study", "run", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "1 failed" in capsys.readouterr().err
    with Store.for_workspace(tmp_path / "out") as store:
        failed, done = store.study_runs("tiny")
    assert failed["status"] == "failed" and "--size" not in failed["variant"]["error"]
    assert "size 40 is more than the 32 probed facts" in failed["variant"]["error"]
    assert done["status"] == "done"


# --- the demo on the real model (slow tier) ---------------------------------------------------


@pytest.mark.slow
def test_demo_runs_a_reduced_study_and_writes_its_report(tmp_path, capsys):
    # Relations with many Unknown facts, so a small pool fills the 100%-Unknown set.
    reduced = ["facts.relations=[country_capital, country_currency, subdivision_country]",
               "probe.limit=45", "build.size=6", "train.epochs=2", "train.n_dev=6",
               "train.n_test=16", "eval.n_facts=16", "eval.checkpoints=[last]"]  # fmt: skip
    status = main(["demo", "--out", str(tmp_path / "demo"), *(f"--set={s}" for s in reduced)])
    assert status == 0, capsys.readouterr().err
    with Store.for_workspace(tmp_path / "demo") as store:
        rows = store.study_runs("demo")
        assert [r["status"] for r in rows] == ["done"] * 5
        assert all(len(store.train_records(r["run_id"])) == 2 for r in rows)
    out = capsys.readouterr().out
    assert "report:" in out
