"""The Python surface (`import knowshift as ks`) on the planted model: typed requests, checked
before anything loads; results that mean what the planted facts fix; stored results as
DataFrames; and docs/example.py run end to end."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import knowshift as ks
from knowshift.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probed(planted_model_dir, facts_file, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("api")
    request = ks.ProbeRequest(model=str(planted_model_dir), facts=f"jsonl:{facts_file}",
                              split="test", dtype="float32", workspace=workspace)  # fmt: skip
    return ks.probe(request)


def test_probe_puts_planted_facts_in_highly_known_and_unseen_ones_in_unknown(probed):
    frame = probed.frame()
    assert len(frame) == 32 and list(frame.columns[:6]) == [
        "fact_id", "relation", "split", "subject", "answer", "category"]  # fmt: skip
    planted = frame["fact_id"].str.startswith("planted:")
    assert set(frame.loc[planted, "category"]) == {"HighlyKnown"}
    assert set(frame.loc[~planted, "category"]) == {"Unknown"}
    shares = probed.category_shares()
    assert list(shares.columns) == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    assert shares.loc["ALL", "HighlyKnown"] == shares.loc["capital", "Unknown"] == 0.5


def test_a_build_and_a_training_run_give_their_frames(probed, tmp_path):
    request = probed.request
    built = ks.build(ks.BuildRequest(recipe="unknown-ratio", out=tmp_path / "set",
                                     model=request.model, facts=request.facts, dtype="float32",
                                     workspace=request.workspace,
                                     options={"size": 8, "frac_unknown": 0.5, "split": "test"}))  # fmt: skip
    examples = built.frame()
    assert len(examples) == 8 and (examples["category"] == "Unknown").sum() == 4
    run = ks.train(ks.TrainRequest(data=built.out, out=tmp_path / "run", model=request.model,
                                   settings={"epochs": 2, "lr": 2e-3, "batch_size": 4,
                                             "precision": "fp32"},
                                   n_dev=8, n_test=16, workspace=request.workspace))  # fmt: skip
    epochs = run.frame()
    assert list(epochs["epoch"]) == [1, 2]
    assert {"train/Known", "train/Unknown", "dev", "test"} <= set(epochs.columns)
    # The planted Known examples are memorised: fitted from the first epoch.
    assert epochs["train/Known"].iloc[0] == 1.0
    # What was stored is what the run returned.
    stored = ks.training_records(request.workspace, run.run_id)
    assert stored.equals(epochs)
    assert list(ks.analyses(request.workspace).columns) == ["kind", "subject", "params", "result"]


@pytest.mark.parametrize(
    ("request_", "field", "flag_args", "message"),
    [
        (ks.ProbeRequest(limit=0), "limit", ["--limit", "0"], "limit must be at least 1"),
        (ks.ProbeRequest(vllm_args=("a=1",)), "vllm_args", ["--vllm-arg", "a=1"],
         "vllm-arg applies to the vllm backend only"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named_as_a_field_here_and_as_a_flag_on_the_command_line(
    request_, field, flag_args, message, capsys
):
    with pytest.raises(ks.FieldError) as raised:
        request_.validate()
    assert raised.value.field == field and str(raised.value).startswith(field)
    assert main(["probe", *flag_args]) == 2
    assert f"knowshift: error: --{message}" in capsys.readouterr().err


def test_bad_requests_fail_before_anything_loads(tmp_path):
    with pytest.raises(ks.FieldError, match="^n_test must be 0 or more$"):
        ks.TrainRequest(data=tmp_path, out=tmp_path / "r", n_test=-1).validate()
    with pytest.raises(ks.FieldError.__mro__[1], match="unknown training setting 'epoch'"):
        ks.TrainRequest(data=tmp_path, out=tmp_path / "r", settings={"epoch": 3}).validate()
    with pytest.raises(ks.FieldError.__mro__[1], match="unknown recipe"):
        ks.BuildRequest(recipe="unknown-ratios", out=tmp_path).spec()
    with pytest.raises(ks.FieldError.__mro__[1], match="no run 'nope'"):
        ks.TrainRequest  # noqa: B018 - the types are importable from the package
        (tmp_path / "knowshift.db").touch()
        ks.training_records(tmp_path, "nope")


def test_import_knowshift_imports_no_torch():
    code = "import sys, knowshift as ks; ks.ProbeRequest(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_example_runs_on_the_planted_model(planted_model_dir, facts_file, tmp_path, monkeypatch):  # fmt: skip
    for name, value in {"MODEL": str(planted_model_dir), "FACTS": f"jsonl:{facts_file}",
                        "SPLIT": "test", "LIMIT": "32", "SIZE": "8", "DTYPE": "float32",
                        "WORK": str(tmp_path)}.items():  # fmt: skip
        monkeypatch.setenv(f"KNOWSHIFT_{name}", value)
    cells = runpy.run_path(str(ROOT / "docs" / "example.py"))
    assert cells["shares"].loc["ALL", "HighlyKnown"] == 0.5
    assert (cells["examples"]["category"] == "Unknown").sum() == 4
    assert list(cells["epochs"]["epoch"]) == [1, 2, 3]
    assert os.path.isdir(tmp_path / "run")


def test_the_api_reference_is_generated_from_the_docstrings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pdoc", "--output-directory", str(tmp_path),
                           "--docformat", "markdown", "knowshift", "knowshift.api"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "knowshift" / "api.html").read_text()
    assert "ProbeRequest" in page and "category_shares" in page and "FieldError" in page
