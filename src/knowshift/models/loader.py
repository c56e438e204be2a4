"""Load a causal LM and its tokenizer by embedded name, Hugging Face id or local path."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from knowshift.errors import KnowshiftError
from knowshift.models import checks
from knowshift.models import fingerprint as fp
from knowshift.models.embedded import EMBEDDED_MODELS
from knowshift.models.resolve import (  # noqa: F401 - model_directory, model_source: public here too
    cached_hub_snapshot,
    converted_gguf,
    model_directory,
    model_source,
    resolve_adapter,
    resolve_model,
)

# Files one of which every tokenizer folder has (fast, sentencepiece, BPE and WordPiece ones).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, with what identifies it."""

    name: str
    model: Any  # transformers PreTrainedModel (or a PeftModel around one)
    tokenizer: Any
    fingerprint: str
    device: torch.device
    dtype: torch.dtype


def quiet_transformers() -> None:
    """Silence transformers' progress bars and warnings; knowshift shows its own progress."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise KnowshiftError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KnowshiftError(
            f"device {device!r} asked for but CUDA is not available; use --device cpu"
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise KnowshiftError(
            f"device {device!r} asked for but there are {torch.cuda.device_count()} CUDA "
            "devices; use cuda:0 or auto"
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16
    or AMX, measured ~2x faster than float32 on the dev machines), else float32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    if dtype not in DTYPES:
        raise KnowshiftError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name_or_path: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    adapter: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model for inference.

    `name_or_path` is an embedded name (see EMBEDDED_MODELS), a local directory with a config.json,
    or a Hugging Face id. `adapter` is a PEFT adapter directory applied on top.
    """
    # Check every argument before the (slow) load, so a typo fails at once.
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    adapter_path = resolve_adapter(adapter) if adapter is not None else None
    directory, base_fingerprint = resolve_model(name_or_path)
    model, tokenizer = _from_pretrained(directory, torch_dtype, trust_remote_code, name_or_path)
    fingerprint = base_fingerprint
    if adapter_path is not None:
        model, adapter_fingerprint = _apply_adapter(model, adapter_path)
        fingerprint = fp.combine(base_fingerprint, adapter_fingerprint)
    model.to(torch_device).eval()
    return LoadedModel(name_or_path, model, tokenizer, fingerprint, torch_device, torch_dtype)


def load_tokenizer(directory: str, trust_remote_code: bool, name: str) -> Any:
    """The tokenizer of a model folder (or hub id), with a pad token."""
    from transformers import AutoTokenizer

    if Path(directory).is_dir():
        _check_remote_code(Path(directory), name, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        local = Path(directory).is_dir()
        missing = local and not any((Path(directory) / f).is_file() for f in TOKENIZER_FILES)
        reason = "it has no tokenizer files" if missing else first_line(error).rstrip(": ")
        raise KnowshiftError(
            f"could not load the tokenizer of model {name!r} ({reason}); the folder needs the "
            "files tokenizer.save_pretrained writes (tokenizer.json, tokenizer_config.json)"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(directory: str, dtype: torch.dtype, trust_remote_code: bool, name: str):
    """Tokenizer and model of a folder (or hub id), from safetensors only, with errors that say
    which part of the folder is wrong."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(directory, trust_remote_code, name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except SafetensorError as error:
        raise KnowshiftError(
            f"could not load model {name!r}: a weights file is damaged ({first_line(error)}); "
            "re-save or re-download the model"
        ) from None
    except (OSError, ValueError, KeyError) as error:
        raise KnowshiftError(f"could not load model {name!r}: {first_line(error)}") from None
    return model, tokenizer


def _check_remote_code(directory: Path, name: str, trust_remote_code: bool) -> None:
    """Refuse a folder whose model needs its own code, unless --trust-remote-code was given."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = checks.read_config(directory, name)
    checks.check_remote_code(config, name, trust_remote_code, set(CONFIG_MAPPING.keys()))


def linear_module_names(name_or_path: str, trust_remote_code: bool = False) -> set[str]:
    """The names (last part) of a model's linear layers, the modules LoRA can target, from its
    config alone: the model is built on the meta device, so no weight is read or allocated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory, _ = resolve_model(name_or_path)
    if Path(directory).is_dir():
        _check_remote_code(Path(directory), name_or_path, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise KnowshiftError(
            f"could not load model {name_or_path!r}: {first_line(error)}"
        ) from None
    return linear_names(model)


def linear_names(model: torch.nn.Module) -> set[str]:
    """The names (last part) of a built model's linear layers: what LoRA can target."""
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def model_config(name_or_path: str) -> dict | None:
    """The config.json of a model (embedded, local or a cached hub snapshot), or None for a hub
    model that is not in the local cache (nothing is downloaded)."""
    if name_or_path in EMBEDDED_MODELS:
        directory = Path(converted_gguf(EMBEDDED_MODELS[name_or_path])[0])
    else:
        directory = Path(name_or_path).expanduser()
        if not directory.exists():
            try:
                directory = cached_hub_snapshot(name_or_path)
            except KnowshiftError:
                return None
    if not (directory / "config.json").is_file():
        return None
    return checks.read_config(directory, name_or_path)


def _apply_adapter(model: Any, path: Path) -> tuple[Any, str]:
    from peft import PeftModel

    try:
        with warnings.catch_warnings():  # PEFT's deprecation notices are not the user's business
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = PeftModel.from_pretrained(model, str(path))
    except (ValueError, RuntimeError, KeyError) as error:
        raise KnowshiftError(
            f"adapter {path} does not fit this model ({_mismatch(error)}); "
            "use the base model the adapter was trained on"
        ) from None
    return wrapped, fp.directory_fingerprint(path)


def _mismatch(error: Exception) -> str:
    """The line of a state-dict error that names a mismatching weight, else its first line."""
    lines = [line.strip() for line in str(error).splitlines()]
    named = next((line for line in lines if line.startswith("size mismatch")), None)
    if named is None:
        return first_line(error)
    # "size mismatch for W: copying a param with shape A from checkpoint, the shape in current
    # model is B." -> "W is A in the adapter, B in the model"
    weight, _, shapes = named.removeprefix("size mismatch for ").partition(": ")
    found = [part.split("[", 1)[-1].split("]")[0] for part in shapes.split("torch.Size(")[1:]]
    if len(found) == 2:
        return f"{weight} is [{found[0]}] in the adapter, [{found[1]}] in the model"
    return named


def first_line(error: Exception) -> str:
    """The first line of an error's message (or its type), for a one-line KnowshiftError."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
