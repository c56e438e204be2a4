"""`knowshift analyze ...` and `knowshift restore` on a run of the planted-fact model."""

from __future__ import annotations

import json

import pytest
from helpers import fitted_shares_have_full_rank

from knowshift.analysis.pair import resolve_pair
from knowshift.cli import main
from knowshift.errors import KnowshiftError
from knowshift.store import Store


@pytest.fixture(scope="module")
def run(planted_model_dir, facts_file, tmp_path_factory):
    """probe -> build (50% Unknown) -> train, once for the module; returns (run folder, workspace, facts)."""
    root = tmp_path_factory.mktemp("analyze")
    workspace, facts = str(root / "ws"), f"jsonl:{facts_file}"
    common = ["--model", str(planted_model_dir), "--workspace", workspace]
    assert main(["probe", *common, "--facts", facts, "--split", "test", "--dtype", "float32"]) == 0
    assert main(["build", *common, "--facts", facts, "--recipe", "unknown-ratio", "--frac-unknown", "0.5",
                 "--size", "16", "--split", "test", "--out", str(root / "set"), "--dtype", "float32"]) == 0  # fmt: skip
    assert main(["train", *common, "--data", str(root / "set"), "--out", str(root / "run"), "--epochs", "15",
                 "--batch-size", "4", "--stop-at-full-train-accuracy", "--lr", "1e-3", "--precision", "fp32", "--n-dev", "8", "--n-test", "32"]) == 0  # fmt: skip
    return root / "run", workspace, facts


def _stored(workspace, kind):
    with Store.for_workspace(workspace) as store:
        return store.analyses(kind)


def test_shift_reprobes_and_counts_transitions(run, capsys):
    run_dir, workspace, _ = run
    assert (
        main(["analyze", "shift", "--run", str(run_dir), "--workspace", workspace, "--limit", "32"])
        == 0
    )
    out = capsys.readouterr().out
    assert "positive shifts" in out and "reliability" in out
    (record,) = _stored(workspace, "shift")
    result = record["result"]
    assert result["n_facts"] == 32
    assert sum(sum(row.values()) for row in result["counts"].values()) == 32
    # The base model knows the 16 planted facts and none of the 16 unseen ones.
    assert sum(result["counts"]["HighlyKnown"].values()) >= 14
    assert sum(result["counts"]["Unknown"].values()) >= 14
    # Reliability re-measures the saved last model on the 8 trained Unknown facts with the
    # training prompt: exactly what training measured after its last epoch (how many of them
    # are fitted by then is the run's business, not the analysis's).
    assert record["subject"].endswith(":last") and result["n_trained_unknown"] == 8
    with Store.for_workspace(workspace) as store:
        last = store.train_records(record["subject"].removesuffix(":last"))[-1]["accuracy"]
    assert result["reliability"] == pytest.approx(last["train/Unknown"])


def test_consistency_collapse_and_token_kl_store_their_results(run, capsys):
    run_dir, workspace, _ = run
    base = ["--run", str(run_dir), "--workspace", workspace, "--limit", "32"]
    assert main(["analyze", "consistency", *base]) == 0
    assert main(["analyze", "collapse", *base]) == 0
    assert main(["analyze", "token-kl", *base]) == 0
    out = capsys.readouterr().out
    assert "identical greedy answers" in out and "distinct answers" in out and "mean KL" in out
    consistency = _stored(workspace, "consistency")[0]["result"]
    assert 0 <= consistency["identical_answer_share"] <= 1 and consistency["mean_kl"] > 0
    token = _stored(workspace, "token-kl")[0]["result"]
    assert token["selection"] == "HighlyKnown" and token["n_facts"] >= 14 and token["mean_kl"] > 0
    collapse = _stored(workspace, "collapse")[0]["result"]
    assert collapse["before"]["n_questions"] == 32


def test_regression_over_the_runs_epochs(run, capsys):
    _, workspace, _ = run
    with Store.for_workspace(workspace) as store:
        (run_id,) = store.run_ids()
        n_epochs, defined = len(store.train_records(run_id)), fitted_shares_have_full_rank(store, [run_id])  # fmt: skip
    code = main(["analyze", "regression", "--workspace", workspace])
    out, err = capsys.readouterr()
    if defined:  # one point per epoch, and the fit
        assert code == 0 and "known_fitted" in out
        (record,) = _stored(workspace, "regression")
        assert len(record["result"]["points"]) == n_epochs
    else:  # a one-line error that says why, and nothing stored
        assert code == 2 and "the regressors are collinear" in err
        assert not _stored(workspace, "regression")


def test_restore_writes_a_loadable_model_and_the_sweep_runs(
    run, planted_model_dir, tmp_path, capsys
):
    run_dir, workspace, facts = run
    out = tmp_path / "restored"
    assert main(["restore", "--base", str(planted_model_dir), "--tuned", str(run_dir), "--fraction", "1.0",
                 "--region", "all", "--out", str(out), "--workspace", workspace]) == 0  # fmt: skip
    # All of the update restored, embeddings and norms too: the model answers like the base.
    assert main(["eval", "--model", str(out), "--facts", facts, "--dtype", "float32", "--workspace", workspace,
                 "--out", str(tmp_path / "restored.jsonl")]) == 0  # fmt: skip
    assert main(["eval", "--model", str(planted_model_dir), "--facts", facts, "--dtype", "float32",
                 "--workspace", workspace, "--out", str(tmp_path / "base.jsonl")]) == 0  # fmt: skip
    answers = [[json.loads(line)["prediction"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
               for name in ("restored", "base")]  # fmt: skip
    assert answers[0] == answers[1]
    capsys.readouterr()
    assert main(["analyze", "restore-sweep", "--run", str(run_dir), "--workspace", workspace, "--limit", "32",
                 "--percents", "10", "100"]) == 0  # fmt: skip
    (record,) = _stored(workspace, "restore-sweep")
    assert len(record["result"]["points"]) >= 2


def test_benchmarks_score_base_tuned_and_a_restored_model_side_by_side(
    run, planted, tmp_path, capsys
):
    from test_benchmarks import planted_rows, write_task

    run_dir, workspace, _ = run
    tasks = write_task(tmp_path / "tasks", "planted_mc", planted_rows(planted))
    argv = ["analyze", "benchmarks", "--run", str(run_dir), "--workspace", workspace, "--tasks", "planted_mc",
            "--include-path", str(tasks), "--also", str(run_dir / "checkpoints" / "early_stop")]  # fmt: skip
    assert main(argv) == 0
    assert "planted_mc" in capsys.readouterr().out
    records = _stored(workspace, "benchmarks")
    assert [r["params"]["role"] for r in records] == [
        "base",
        "tuned",
        f"also:{run_dir / 'checkpoints' / 'early_stop'}",
    ]
    base_acc = records[0]["result"]["scores"]["planted_mc"]["acc"]
    assert base_acc >= 0.9  # the planted model knows its planted facts


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "shift"], "--run RUN_FOLDER"),
        (["analyze", "shift", "--run", "/nonexistent/run"], "not a run folder"),
        (["analyze", "collapse", "--tuned", "x", "--explode-share", "2"], "--explode-share"),
        (["analyze", "consistency", "--tuned", "x", "--n-options", "1"], "--n-options"),
        (["analyze", "shift", "--tuned", "x", "--limit", "0"], "--limit"),
        (["analyze", "regression", "--runs", "nope"], "no run 'nope'"),
        (["restore", "--tuned", "x", "--fraction", "0", "--out", "y"], "--fraction"),
        (
            ["restore", "--tuned", "x", "--fraction", "0.2", "--mode", "topp", "--out", "y"],
            "did you mean 'top'",
        ),
    ],
)
def test_bad_analysis_input_is_one_clear_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


DAMAGED_RUN_JSON = {
    "not-json": b"{not json",
    "not-utf8": b'{"run_id": "\xe9"}',
    "a-list": b"[1, 2]",
    "no-config": b'{"run_id": "0123456789abcdef"}',
    "config-a-string": b'{"run_id": "0123456789abcdef", "config": "x"}',
    "model-not-a-string": b'{"run_id": "0123456789abcdef", "config": {"model": 3}}',
    "data-dir-not-a-string": b'{"run_id": "0123456789abcdef", "config": {"model": "m"}, "data_dir": 1}',
}  # fmt: skip


@pytest.mark.parametrize("content", DAMAGED_RUN_JSON.values(), ids=DAMAGED_RUN_JSON.keys())
@pytest.mark.parametrize("given_as", ["run", "tuned"])
def test_a_damaged_run_json_is_a_clear_error_for_every_caller(content, given_as, tmp_path):
    # resolve_pair itself checks the file (the study's eval stage calls it without the CLI).
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "run.json").write_bytes(content)
    with pytest.raises(KnowshiftError, match="run.json is damaged") as error:
        resolve_pair(**{given_as: str(tmp_path)})
    assert str(tmp_path / "run.json") in str(error.value) and "--out folder" in str(error.value)
