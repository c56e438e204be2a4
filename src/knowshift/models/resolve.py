"""Where a model loads from and what identifies it, without loading it: an embedded name (its
GGUF converted once to a cached folder), a local directory, or a Hugging Face id; an adapter
folder; and the fingerprint of each. The loader, the probe's engines and parameter restoration
resolve models here; nothing here imports torch until a conversion needs it."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from knowshift import atomic
from knowshift.errors import KnowshiftError
from knowshift.models import checks
from knowshift.models import fingerprint as fp
from knowshift.models.embedded import EMBEDDED_MODELS, EmbeddedModel
from knowshift.paths import cache_root


def model_directory(name_or_path: str) -> Path:
    """The local folder holding a model's config.json and *.safetensors weights, for code that
    reads the weight files themselves (e.g. parameter restoration).

    `name_or_path` is an embedded name (converted on first use), a local model directory, or a
    Hugging Face id already in the local cache (nothing is downloaded).
    """
    if name_or_path in EMBEDDED_MODELS:
        return Path(converted_gguf(EMBEDDED_MODELS[name_or_path])[0])
    path = Path(name_or_path).expanduser()
    hub_like = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not path.exists() and hub_like:
        path = cached_hub_snapshot(name_or_path)
    if not path.exists():
        raise KnowshiftError(
            f"unknown model {name_or_path!r}: not an embedded name ({', '.join(EMBEDDED_MODELS)}), "
            "not an existing directory, not a Hugging Face id (org/name)"
        )
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise KnowshiftError(
            f"{path} is not a model directory with safetensors weights (needs config.json and "
            "*.safetensors); give a directory saved with save_pretrained(safe_serialization=True)"
        )
    return path


def cached_hub_snapshot(model_id: str) -> Path:
    """The folder of a hub model in the local Hugging Face cache; never downloads."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as error:  # hub errors come in many types; all mean "not cached here"
        raise KnowshiftError(
            f"model {model_id!r} is not in the local Hugging Face cache ({type(error).__name__}); "
            f"run `hf download {model_id}` where the hub is reachable, or pass a local directory"
        ) from None


def resolve_model(name_or_path: str) -> tuple[str, str]:
    """Where to load from, and the base model's fingerprint."""
    if name_or_path in EMBEDDED_MODELS:
        return converted_gguf(EMBEDDED_MODELS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise KnowshiftError(
                f"{path} is not a model directory (no config.json); give a directory saved "
                f"with save_pretrained, an embedded name ({', '.join(EMBEDDED_MODELS)}) or a hub id"
            )
        checks.read_config(path, name_or_path)
        checks.check_safe_weights(path)
        return str(path), fp.directory_fingerprint(path)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        return name_or_path, _hub_fingerprint(name_or_path)
    raise KnowshiftError(
        f"unknown model {name_or_path!r}: not an embedded name ({', '.join(EMBEDDED_MODELS)}), "
        "not an existing directory, not a Hugging Face id (org/name)"
    )


def _hub_fingerprint(model_id: str) -> str:
    """A hub model's fingerprint from its cached snapshot (downloading it if allowed)."""
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as error:  # hub errors come in many types; all mean "not reachable here"
        raise KnowshiftError(
            f"could not fetch model {model_id!r} from the Hugging Face hub "
            f"({type(error).__name__}); download it where the hub is reachable and pass the "
            "local directory, or check the id"
        ) from None
    return fp.directory_fingerprint(snapshot)


def converted_gguf(embedded: EmbeddedModel) -> tuple[str, str]:
    """De-quantise an embedded GGUF once and cache it as safetensors + tokenizer files."""
    gguf_path = embedded.gguf_path()
    gguf_fingerprint = fp.file_digest(gguf_path)[:16]
    target = cache_root() / "models" / f"{embedded.name}-{gguf_fingerprint}"
    if (target / "complete").is_file():
        return str(target), gguf_fingerprint
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("knowshift").info("converting %s (first load only)", gguf_path.name)
    source, file_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=file_name, dtype=torch.float32)
    # The de-quantised model is plain float32; drop the GGUF marker so it can be saved.
    model.hf_quantizer = None
    del model.config.quantization_config
    tmp = atomic.temporary_name(target)  # this process's own: another may convert at once
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "complete").write_text(gguf_fingerprint)
    _commit_conversion(tmp, target)
    return str(target), gguf_fingerprint


def _commit_conversion(tmp: Path, target: Path) -> None:
    """Rename the finished conversion `tmp` in as `target`, so a half-written one is never taken
    as complete. A complete `target` is never removed, since another process may be loading it:
    if one converted the same model first, its copy is kept and this one dropped. The check and
    the rename happen under the cache's lock, so two processes cannot both find no copy and
    replace each other's; readers need no lock (they only read complete copies)."""
    with atomic.folder_lock(target.parent, "model conversion", wait=True):
        if (target / "complete").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(target, ignore_errors=True)  # what a killed conversion left, if anything
        os.rename(tmp, target)


def model_source(name_or_path: str, adapter: str | None = None) -> tuple[str, str, Path | None]:
    """Where a model loads from (a local folder, or a hub id), its fingerprint (combined with the
    adapter's), and the adapter's folder: what an inference engine other than transformers
    (vLLM) needs to load the same model under the same identity."""
    adapter_path = resolve_adapter(adapter) if adapter is not None else None
    directory, fingerprint = resolve_model(name_or_path)
    if adapter_path is not None:
        fingerprint = fp.combine(fingerprint, fp.directory_fingerprint(adapter_path))
    return directory, fingerprint, adapter_path


def resolve_adapter(adapter: str) -> Path:
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise KnowshiftError(
            f"{adapter} is not a PEFT adapter directory (no adapter_config.json); "
            "pass the folder a LoRA run saved"
        )
    checks.check_safe_weights(path, what="adapter")
    return path


def model_fingerprint(name_or_path: str, adapter: str | None = None) -> str:
    """The fingerprint `load_model` gives a model (and adapter), without loading any weights.

    An embedded model's is the digest of its GGUF file, so it needs no conversion; a local
    directory or hub id goes through the loader's own resolution (which imports torch).
    """
    if name_or_path in EMBEDDED_MODELS:
        base = fp.file_digest(EMBEDDED_MODELS[name_or_path].gguf_path())[:16]
    else:
        base = resolve_model(name_or_path)[1]
    if adapter is None:
        return base

    return fp.combine(base, fp.directory_fingerprint(resolve_adapter(adapter)))
