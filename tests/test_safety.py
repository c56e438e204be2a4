"""Safety: weights are read from safetensors only (pickles are refused before anything is
unpickled; resume state is read with torch.load(weights_only=True)), a model's own code runs
only with --trust-remote-code, and every user text in a report is HTML-escaped.

The pickles and custom code here are booby-trapped: each writes a marker file when it runs, so
"refused" means the marker never appears.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from knowshift.cli import main
from knowshift.errors import KnowshiftError
from knowshift.models import loader
from knowshift.models.loader import load_model

SRC = Path(__file__).parents[1] / "src" / "knowshift"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"  # no "/": fits in a folder name


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWSHIFT_CACHE", str(tmp_path / "cache"))


class _Trap:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')",)


def _one_error_line(argv: list[str]) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        status = main(argv)
    lines = stderr.getvalue().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("knowshift: error: "), lines
    return lines[0]


# --- weights: safetensors, or torch.load(weights_only=True) ------------------------------------


def test_the_source_never_unpickles_unsafely_or_trusts_remote_code():
    unsafe = re.compile(
        r"torch\.load\((?![^)]*weights_only=True)|pickle\.loads?\(|weights_only=False"
        r"|trust_remote_code=True|use_safetensors=(False|None)"
    )
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if unsafe.search(line)
    ]
    assert found == []


def test_a_model_folder_of_pickle_weights_is_refused_before_unpickling(planted_model_dir, tmp_path):
    model = tmp_path / "pickled-model"
    shutil.copytree(planted_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(
        KnowshiftError, match=r"only as pickle files \(pytorch_model.bin\).*safetensors"
    ):
        load_model(str(model), device="cpu", dtype="float32")
    line = _one_error_line(["probe", "--model", str(model), "--facts", "geo",
                            "--workspace", str(tmp_path / "ws")])  # fmt: skip
    assert "knowshift reads safetensors only" in line and "safe_serialization=True" in line
    assert not marker.exists() and not (tmp_path / "ws").exists()


def test_an_adapter_of_pickle_weights_is_refused_before_unpickling(planted_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1}))
    marker = tmp_path / "unpickled"
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(KnowshiftError, match="adapter weights only as pickle files"):
        load_model(str(planted_model_dir), device="cpu", dtype="float32", adapter=str(adapter))
    assert not marker.exists()


def test_transformers_is_asked_for_safetensors_and_no_remote_code(planted_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    asked = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        real = cls.from_pretrained

        def recording(*args, _real=real, _name=cls.__name__, **kwargs):
            asked.append((_name, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    load_model(str(planted_model_dir), device="cpu", dtype="float32")
    by_class = dict(asked)
    assert by_class["AutoModelForCausalLM"]["use_safetensors"] is True
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in asked)


def test_resume_state_is_read_with_weights_only(planted, planted_model_dir, tmp_path, monkeypatch):
    """accelerate's resume state holds optimizer and RNG pickles: torch.load must read them with
    weights_only=True (which refuses anything but tensors and plain containers)."""
    from knowshift.train.config import TrainConfig
    from knowshift.train.loop import train

    pairs = [(f"Q: {f.question}\nA:", f" {f.answer}\n") for f in planted.by_split("test")[:8]]
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, precision="fp32")
    run = tmp_path / "run"
    train(load_model(str(planted_model_dir), dtype="float32"), pairs, [], config, run)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    resumed = TrainConfig(**{**asdict(config), "epochs": 2})
    train(load_model(str(planted_model_dir), dtype="float32"), pairs, [], resumed, run)
    assert calls, "the second run did not resume from the saved state"
    assert all(kwargs.get("weights_only") is True for kwargs in calls), calls


# --- a model's own code: only with --trust-remote-code ----------------------------------------

CUSTOM_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import LlamaConfig, LlamaForCausalLM
class CustomConfig(LlamaConfig):
    model_type = "knowshift-custom-llm"
class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture
def custom_code_model(planted_model_dir, tmp_path) -> tuple[Path, Path]:
    """The planted model re-labelled as a type only its own code (custom.py) defines; importing
    that code writes a marker. Returns (folder, marker)."""
    model, marker = shutil.copytree(planted_model_dir, tmp_path / "custom"), tmp_path / "code-ran"
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="knowshift-custom-llm",
                  auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"})  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    return model, marker


def test_a_model_with_its_own_code_is_refused_without_the_flag(custom_code_model, tmp_path):
    model, marker = custom_code_model
    with pytest.raises(KnowshiftError, match="custom.CustomModel.*pass --trust-remote-code"):
        load_model(str(model), device="cpu", dtype="float32")
    for command in (["probe", "--facts", "geo"], ["audit", str(tmp_path / "data.jsonl")]):
        if command[0] == "audit":
            row = {"question": "What is the capital of Kalo?", "answer": "Mor"}
            (tmp_path / "data.jsonl").write_text(json.dumps(row) + "\n" * 1)
            command += ["--k-shot", "0"]
        line = _one_error_line(
            [*command, "--model", str(model), "--workspace", str(tmp_path / "ws")]
        )
        assert "needs its own Python code to load" in line and "--trust-remote-code" in line
    assert not marker.exists() and not (tmp_path / "ws").exists()


def test_the_flag_is_what_lets_custom_code_through(custom_code_model):
    from knowshift.models import checks

    model, _ = custom_code_model
    config = checks.read_config(model, "custom")
    checks.check_remote_code(config, "custom", True, set())  # allowed: no error
    with pytest.raises(KnowshiftError, match="--trust-remote-code"):
        checks.check_remote_code(config, "custom", False, set())
    # A known architecture with an auto_map loads with transformers' own class: no code runs.
    checks.check_remote_code({**config, "model_type": "llama"}, "custom", False, {"llama"})


@pytest.mark.parametrize("flag", [[], ["--trust-remote-code"]])
def test_the_cli_passes_trust_remote_code_only_when_asked(flag, planted_model_dir, facts_file,
                                                          tmp_path, monkeypatch):  # fmt: skip
    seen = []

    def stop(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise KnowshiftError("stopped before loading")

    monkeypatch.setattr(loader, "load_model", stop)
    common = ["--model", str(planted_model_dir), "--workspace", str(tmp_path / "ws"), *flag]
    _one_error_line(["probe", "--facts", f"jsonl:{facts_file}", *common])
    _one_error_line(["audit", str(facts_file), "--k-shot", "2", *common])
    assert seen == [bool(flag)] * 2


# --- reports: every user text is escaped ------------------------------------------------------


def _hostile_study(folder: Path) -> None:
    """A workspace whose every user-given text (study, relation, model, run folder, label,
    failed run's error, answers, benchmark task, analysis subject) is markup."""
    from knowshift.analysis.benchmarks import BenchmarkResult
    from knowshift.analysis.collapse import answer_collapse
    from knowshift.evaluate.qa import Prediction
    from knowshift.store import Store
    from knowshift.types import CATEGORIES, ProbeResult

    with Store.for_workspace(folder) as store:
        store.register_settings("key", "exact", {"estimator": "exact"}, {})
        results = [
            ProbeResult(f"f{i}", "exact", "key", "fp", 0.5, 0.5, CATEGORIES[i % 4])
            for i in range(8)
        ]
        store.put_probe_results(results, {f"f{i}": (HOSTILE, "test") for i in range(8)})
        for run_id, label in (("r1", HOSTILE), ("r2", "plain")):
            sizes = {"train": 10, "train/Known": 5, "train/Unknown": 5}
            store.register_run(run_id, {"model": HOSTILE, "group_sizes": sizes,
                                        "out_dir": f"/runs/{HOSTILE_NAME}"})  # fmt: skip
            for epoch in (1, 2):
                accuracy = {
                    "dev": 0.5,
                    "test": 0.4,
                    "train/Known": 0.9,
                    "train/Unknown": 0.1 * epoch,
                }
                store.put_train_record(run_id, epoch, epoch, 1.0, accuracy)
            store.put_study_run(
                HOSTILE_NAME, run_id, {"build.frac_unknown": 0.5, "label": label}, "done"
            )
        store.put_study_run(
            HOSTILE_NAME, "r3", {"build.frac_unknown": 1.0, "error": HOSTILE}, "failed"
        )
        answers = [Prediction(f"q{i}", HOSTILE, HOSTILE, False, False, False, None, None, True)
                   for i in range(10)]  # fmt: skip
        store.put_analysis(
            "collapse", f"r1:{HOSTILE}", {}, asdict(answer_collapse(answers, answers))
        )
        bench = BenchmarkResult(HOSTILE, "fp", (HOSTILE,), {HOSTILE: {"acc": 0.4}}, {HOSTILE: 10},
                                {}, {HOSTILE: 0}, None, None, 0, "0.4")  # fmt: skip
        store.put_analysis("benchmarks", "r1:last", {"role": "base"}, asdict(bench))
        store.put_analysis("shift", f"r1:{HOSTILE_NAME}", {}, {"not": "a shift"})  # unreadable


def test_every_user_text_in_a_report_is_escaped(tmp_path):
    from knowshift.report import write_report

    _hostile_study(tmp_path)
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
