"""Checks on a model folder before anything in it is loaded, so a wrong folder is one clear line.

- Weights are read only from safetensors files: a pickle file (pytorch_model.bin, *.pt) can run
  code when it is unpickled, so a folder that holds only pickles is refused with the command
  that converts it.
- A model that needs its own code (config.json `auto_map` to a class transformers does not have)
  loads only with --trust-remote-code.
- Two models compared by an analysis must share an architecture: a checkpoint is a fine-tune of
  the base only when the shapes that make up its weights agree.

Nothing here imports torch or transformers, so `knowshift build` and `study validate` stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The config fields that fix the shapes of a model's weights: if one differs, the two folders
# cannot hold a base model and its fine-tune.
SHAPE_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim",
)  # fmt: skip


def read_config(directory: Path, name: str) -> dict[str, Any]:
    """The folder's config.json as a mapping; damaged JSON is a one-line error."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else type(error).__name__
        raise KnowshiftError(
            f"could not load model {name!r}: {path} is not valid JSON ({reason}); "
            "re-save the model with save_pretrained or restore the file"
        ) from None
    if not isinstance(config, dict):
        raise KnowshiftError(
            f"could not load model {name!r}: {path} holds no JSON object; "
            "re-save the model with save_pretrained or restore the file"
        )
    return config


def check_safe_weights(directory: Path, what: str = "model") -> None:
    """Refuse a folder whose only weights are pickles (they could run code when loaded)."""
    files = [p for p in directory.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        save = "save_pretrained(DIR, safe_serialization=True)"
        raise KnowshiftError(
            f"{directory} holds {what} weights only as pickle files ({', '.join(pickles)}), "
            "which can run code when loaded; knowshift reads safetensors only. Convert them "
            f"once where you trust the file: load the {what} with transformers/peft and {save}"
        )


def check_remote_code(
    config: dict[str, Any], name: str, trust_remote_code: bool, known_types: set[str]
) -> None:
    """Refuse a model that needs its own code unless the user allowed it (--trust-remote-code).

    `known_types` are the model types transformers implements itself; a config whose
    `auto_map` points elsewhere for one of those is loaded with transformers' own class (no
    custom code runs), as transformers does without trust_remote_code.
    """
    auto_map = config.get("auto_map")
    if trust_remote_code or not auto_map:
        return
    if config.get("model_type") in known_types:
        return
    classes = (
        ", ".join(sorted(str(v) for v in auto_map.values()))
        if isinstance(auto_map, dict)
        else str(auto_map)
    )
    raise KnowshiftError(
        f"model {name!r} needs its own Python code to load (config.json auto_map: {classes}); "
        "pass --trust-remote-code if you trust that code, which then runs on this machine"
    )


def architecture_difference(base: dict[str, Any], tuned: dict[str, Any]) -> str | None:
    """The first shape field whose value differs between two configs ("hidden_size 64 vs
    128"), or None when one model can be a fine-tune of the other."""
    for field in SHAPE_FIELDS:
        if field in base and field in tuned and base[field] != tuned[field]:
            return f"{field} {base[field]} vs {tuned[field]}"
    return None
