"""Slower tier: the embedded models on the real geo facts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from knowshift.facts import load_facts
from knowshift.facts.select import select_facts
from knowshift.probe.estimators import ProbeConfig
from knowshift.probe.run import probe
from knowshift.types import Category

pytestmark = pytest.mark.slow

FAMOUS_CAPITALS = ["France", "Japan", "Italy", "Germany", "Spain", "Egypt"]


@pytest.fixture(scope="module")
def geo():
    return load_facts("geo")


@pytest.fixture(scope="module")
def smollm2():
    from knowshift.models import load_model

    return load_model("smollm2-135m")


def _capital_facts(geo):
    return [
        f for f in geo.facts if f.relation == "country_capital" and f.subject in FAMOUS_CAPITALS
    ]


def test_smollm2_knows_famous_capitals(geo, smollm2, store):
    facts = _capital_facts(geo)
    assert len(facts) == len(FAMOUS_CAPITALS)
    results = probe(smollm2, geo, facts, ProbeConfig.for_estimator("exact"), store)
    known = [r for r in results if r.category in (Category.HIGHLY_KNOWN, Category.MAYBE_KNOWN)]
    assert len(known) >= 5, [(r.fact_id, r.category) for r in results]
    greedy = probe(smollm2, geo, facts, ProbeConfig.for_estimator("greedy"), store)
    paris = next(r for r in greedy if r.fact_id.endswith("france"))
    assert paris.p_greedy == 1.0 and "Paris" in paris.samples[0]


def test_exact_agrees_with_sampling_on_real_facts(geo, smollm2, store):
    facts = select_facts(geo, split="test", limit=14)
    exact = probe(smollm2, geo, facts, ProbeConfig.for_estimator("exact"), store)
    sampled = probe(smollm2, geo, facts, ProbeConfig.for_estimator("sampling"), store)
    agree = sum(e.category == s.category for e, s in zip(exact, sampled, strict=True))
    assert agree >= 10, [
        (e.fact_id, e.category, s.category) for e, s in zip(exact, sampled, strict=True)
    ]
    # Where greedy decoding is always right, exact and sampled P(T=0) must both say so.
    for e, s in zip(exact, sampled, strict=True):
        if e.p_greedy == 1.0:
            assert s.p_greedy >= 0.8


def test_chat_prompt_format(geo, smollm2, store):
    facts = _capital_facts(geo)[:3]
    results = probe(
        smollm2, geo, facts, ProbeConfig.for_estimator("exact", prompt_format="chat"), store
    )
    assert len(results) == 3
    assert any(r.p_greedy > 0 for r in results)


def test_mastery_on_real_facts(geo, smollm2, store):
    facts = _capital_facts(geo)[:2]
    results = probe(smollm2, geo, facts, ProbeConfig.for_estimator("mastery", n_samples=4), store)
    assert all(r.mastery_level is not None for r in results)
    assert max(r.mastery_level for r in results) >= 2


def test_gemma3_loads_and_answers(geo, store):
    from knowshift.models import load_model

    gemma = load_model("gemma3-270m")
    facts = _capital_facts(geo)[:3]
    results = probe(gemma, geo, facts, ProbeConfig.for_estimator("exact"), store)
    assert sum(r.p_greedy > 0 for r in results) >= 2, [(r.fact_id, r.p_greedy) for r in results]


def test_cli_probe_on_smollm2(tmp_path):
    command = [
        sys.executable, "-m", "knowshift.cli", "probe", "--limit", "7",
        "--n-exemplar-sets", "3", "--workspace", str(tmp_path), "--out", str(tmp_path / "r.parquet"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ALL" in done.stdout and "HighlyKnown" in done.stdout
    assert (tmp_path / "r.parquet").stat().st_size > 0


def test_chain_probe_build_lora_train_eval_on_smollm2(tmp_path, capsys):
    """The short full chain on the embedded model: probe -> build -> train (LoRA, 2 epochs) -> eval."""
    from knowshift.cli import main

    workspace = ["--workspace", str(tmp_path / "ws")]
    relations = ["--relations", "country_capital", "country_currency"]
    assert main(["probe", *workspace, *relations, "--split", "train", "--limit", "60"]) == 0
    assert main(["probe", *workspace, *relations, "--split", "test", "--limit", "20"]) == 0
    build = ["build", *workspace, *relations, "--recipe", "unknown-ratio", "--frac-unknown", "0.5",
             "--size", "16", "--out", str(tmp_path / "set")]  # fmt: skip
    assert main(build) == 0
    train = ["train", *workspace, "--data", str(tmp_path / "set"), "--out", str(tmp_path / "run"),
             "--method", "lora", "--epochs", "2", "--n-dev", "10", "--n-test", "20"]  # fmt: skip
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "EARLY_STOP" in out and "train/Unknown" in out
    adapter = tmp_path / "run" / "checkpoints" / "last"
    assert (adapter / "adapter_model.safetensors").is_file()
    evaluate = ["eval", *workspace, *relations, "--adapter", str(adapter), "--limit", "20",
                "--train-relations", "country_capital", "country_currency", "--out", str(tmp_path / "p.parquet")]  # fmt: skip
    assert main(evaluate) == 0
    assert "category: HighlyKnown" in capsys.readouterr().out
