"""General-ability benchmarks through lm-eval, on local multiple-choice tasks and a tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
pytest.importorskip("lm_eval")

from knowshift.analysis.benchmarks import (  # noqa: E402
    BenchmarkResult,
    format_benchmarks,
    run_benchmarks,
)
from knowshift.errors import KnowshiftError  # noqa: E402

TASK_DATA = Path(__file__).parent / "data" / "lm_eval"
CAPITALS = "knowshift_capitals_mc"


def write_task(folder: Path, name: str, rows: list[dict] | None = None) -> Path:
    """A copy of the capitals task under `folder`, named `name`, reading `rows` (default: the
    capitals) from an absolute path, so it loads whatever the working directory."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    if rows is None:
        data.write_text((TASK_DATA / f"{CAPITALS}.jsonl").read_text(encoding="utf-8"), "utf-8")
    else:
        data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = yaml.safe_load((TASK_DATA / f"{CAPITALS}.yaml").read_text(encoding="utf-8"))
    config["task"] = name
    config["dataset_kwargs"]["data_files"]["test"] = str(data)
    config["dataset_kwargs"]["cache_dir"] = str(folder / "datasets-cache")  # not ~/.cache
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def planted_rows(planted, n_choices: int = 4) -> list[dict]:
    """Multiple-choice questions on the facts the planted model was trained on; the distractors are
    other trained answers, so only knowing which capital goes with which country scores."""
    trained = [f for f in planted.facts if not f.id.startswith("unseen:")]
    answers = [f.answer for f in trained]
    rng = random.Random(0)
    rows = []
    for fact in trained:
        choices = [
            *rng.sample([a for a in answers if a != fact.answer], n_choices - 1),
            fact.answer,
        ]
        rng.shuffle(choices)
        rows.append(
            {"question": fact.question, "choices": choices, "answer": choices.index(fact.answer)}
        )
    return rows


@pytest.fixture(scope="module")
def capitals_folder(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("lm_eval_tasks"), CAPITALS)


@pytest.fixture(scope="module")
def random_model(planted_model):
    """A model of the planted model's shape and tokenizer that was never trained."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(planted_model.model.config).eval()
    return dataclasses.replace(planted_model, name="random-init", model=model, fingerprint="0" * 16)


def test_local_task_runs_and_counts_documents(planted_model, capitals_folder):
    n_docs = len((TASK_DATA / f"{CAPITALS}.jsonl").read_text().splitlines())
    full = run_benchmarks(planted_model, [CAPITALS], include_path=capitals_folder)
    limited = run_benchmarks(planted_model, [CAPITALS], include_path=capitals_folder, limit=5)
    assert full.n_samples[CAPITALS] == n_docs == 20
    assert limited.n_samples[CAPITALS] == 5 and limited.limit == 5
    for result in (full, limited):
        scores = result.scores[CAPITALS]
        assert 0.0 <= scores["acc"] <= 1.0 and 0.0 <= scores["acc_norm"] <= 1.0
        assert "acc_stderr" in scores
        assert result.headline == (CAPITALS,) and result.n_shot == {CAPITALS: 0}
        assert result.model_fingerprint == planted_model.fingerprint
    # What the results database stores: plain JSON.
    record = json.loads(json.dumps(dataclasses.asdict(full)))
    assert record["scores"][CAPITALS]["acc"] == full.scores[CAPITALS]["acc"]


def test_planted_model_knows_its_facts_and_an_untrained_one_does_not(
    planted, planted_model, random_model, tmp_path
):
    folder = write_task(tmp_path / "tasks", "planted_capitals_mc", planted_rows(planted))
    chance = 1 / 4
    trained = run_benchmarks(planted_model, ["planted_capitals_mc"], include_path=folder)
    untrained = run_benchmarks(random_model, ["planted_capitals_mc"], include_path=folder)
    assert trained.n_samples["planted_capitals_mc"] == 24
    assert trained.scores["planted_capitals_mc"]["acc"] >= 0.9
    assert untrained.scores["planted_capitals_mc"]["acc"] <= chance + 0.25
    assert not random_model.model.training  # left in the mode it came in


def test_lora_wrapped_model_is_scored_and_a_fresh_adapter_changes_nothing(
    planted_model, planted_model_dir, capitals_folder
):
    from peft import LoraConfig, get_peft_model

    from knowshift.models import load_model

    copy = load_model(str(planted_model_dir), dtype="float32")  # get_peft_model edits in place
    # A fresh LoRA adapter starts with B = 0, so the wrapped model computes the same function.
    wrapped = dataclasses.replace(
        copy, model=get_peft_model(copy.model, LoraConfig(r=2, target_modules=["down_proj"]))
    )
    base = run_benchmarks(planted_model, [CAPITALS], include_path=capitals_folder)
    lora = run_benchmarks(wrapped, [CAPITALS], include_path=capitals_folder)
    assert lora.scores == base.scores


def test_unknown_task_suggests_close_names(planted_model):
    with pytest.raises(KnowshiftError, match=r"unknown lm-eval task 'hellaswagg'.*'hellaswag'"):
        run_benchmarks(planted_model, ["hellaswagg"])


def test_hub_task_offline_fails_fast_with_a_one_line_fix(planted_model):
    with pytest.raises(KnowshiftError, match="not available offline") as error:
        run_benchmarks(planted_model, ["truthfulqa_mc1"])
    message = str(error.value)
    assert "\n" not in message and "truthfulqa_mc1" in message
    assert "HF_DATASETS_CACHE" in message and "--include-path" in message


def test_missing_local_data_file_names_the_file(planted_model, tmp_path):
    folder = write_task(tmp_path / "tasks", "moved_mc")
    (folder / "moved_mc.jsonl").unlink()
    with pytest.raises(KnowshiftError, match="moved_mc.jsonl"):
        run_benchmarks(planted_model, ["moved_mc"], include_path=folder)


def test_missing_lm_eval_says_what_to_install(planted_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    with pytest.raises(KnowshiftError, match=r"pip install 'knowshift\[eval\]'"):
        run_benchmarks(planted_model, [CAPITALS])


def test_format_puts_models_side_by_side():
    def result(name: str, fingerprint: str, acc: float) -> BenchmarkResult:
        return BenchmarkResult(
            model_name=name, model_fingerprint=fingerprint, tasks=("mmlu",),
            scores={"mmlu": {"acc": acc, "acc_stderr": 0.004},
                    "mmlu_stem": {"acc": acc}, "mmlu_anatomy": {"acc": acc}},
            n_samples={"mmlu": 14042, "mmlu_stem": 3018, "mmlu_anatomy": 135},
            subtasks={"mmlu": ("mmlu_stem",), "mmlu_stem": ("mmlu_anatomy",)},
            n_shot={"mmlu_anatomy": 0}, num_fewshot=None, limit=None, seed=0,
            lm_eval_version="0.4.13",
        )  # fmt: skip

    table = format_benchmarks(
        [result("smollm2-135m", "aaaaaaaa11", 0.677), result("smollm2-135m", "bbbbbbbb22", 0.554)]
    )
    header, *rows = table.splitlines()
    assert "smollm2-135m [aaaaaaaa]" in header and "smollm2-135m [bbbbbbbb]" in header
    assert rows[0].split() == ["mmlu", "acc", "0.677", "±", "0.004", "0.554", "±", "0.004"]
    assert rows[1].split() == ["n", "14042", "14042"]
    assert "mmlu_stem" not in table  # subgroups and subjects stay in the stored result
