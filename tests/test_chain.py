"""probe -> build -> train -> eval through the CLI, on the planted-fact model."""

from __future__ import annotations

import json

from knowshift.cli import main


def test_probe_build_train_eval_chain(planted_model_dir, facts_file, tmp_path, capsys):
    workspace, facts = str(tmp_path / "ws"), f"jsonl:{facts_file}"
    common = ["--model", str(planted_model_dir), "--workspace", workspace]
    probe = ["probe", *common, "--facts", facts, "--split", "test", "--dtype", "float32"]
    assert main(probe) == 0
    build = ["build", *common, "--facts", facts, "--recipe", "unknown-ratio", "--frac-unknown", "0.5",
             "--size", "16", "--split", "test", "--out", str(tmp_path / "set"), "--dtype", "float32"]  # fmt: skip
    assert main(build) == 0
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["counts_by_category"].get("Unknown") == 8
    train = ["train", *common, "--data", str(tmp_path / "set"), "--out", str(tmp_path / "run"),
             "--epochs", "2", "--lr", "1e-3", "--precision", "fp32", "--n-dev", "8", "--n-test", "32"]  # fmt: skip
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "Known" in out and "EARLY_STOP" in out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert {"train/Known", "train/Unknown", "dev", "test/HighlyKnown", "test/Unknown"} <= set(
        json.loads(lines[0])["accuracy"]
    )
    # The same command again: the run is complete, nothing is retrained, records unchanged.
    assert main(train) == 0
    assert (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() == lines
    evaluate = ["eval", "--model", str(tmp_path / "run" / "checkpoints" / "last"), "--base-model", str(planted_model_dir),
                "--workspace", workspace, "--facts", facts, "--dtype", "float32", "--out", str(tmp_path / "pred.jsonl")]  # fmt: skip
    assert main(evaluate) == 0
    assert "category: HighlyKnown" in capsys.readouterr().out
    assert len((tmp_path / "pred.jsonl").read_text().splitlines()) == 32
