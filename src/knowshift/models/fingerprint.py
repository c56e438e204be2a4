"""Model fingerprints: a short hash of the weights' identity that keys every cached result.

Weight files are hashed by content (blake2b), once: the digest is remembered in a small index
keyed by (path, size, mtime), so a second load costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from knowshift.digest import text_digest
from knowshift.errors import KnowshiftError
from knowshift.paths import cache_root

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
# Besides the weights, what changes a probe's result: the architecture, and how text becomes
# tokens (vocabulary, special tokens, chat template).
IDENTITY_FILES = (
    "config.json", "adapter_config.json", "tokenizer.json", "tokenizer.model",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json",
)  # fmt: skip


def file_digest(path: Path) -> str:
    """Content hash of one file, cached by (path, size, mtime)."""
    path = path.resolve()
    stat = path.stat()
    index_path = cache_root() / "digests.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    index = _read_index(index_path)
    if key in index:
        return index[key]
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
    index[key] = digest
    _write_index(index_path, index)
    return digest


def directory_fingerprint(directory: Path) -> str:
    """Fingerprint of a model (or adapter) directory: its weight, config and tokenizer files."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if not any(path.suffix in WEIGHT_SUFFIXES for path in files):
        raise KnowshiftError(
            f"no weight files in {directory} (looked for {', '.join(WEIGHT_SUFFIXES)}); "
            "give the folder save_pretrained wrote"
        )
    parts = [
        f"{path.name}:{file_digest(path)}"
        for path in files
        if path.suffix in WEIGHT_SUFFIXES or path.name in IDENTITY_FILES
    ]
    return text_digest("\n".join(parts))


def combine(*parts: str) -> str:
    """Combine a base fingerprint with adapter fingerprints."""
    if len(parts) == 1:
        return parts[0]
    return text_digest("+".join(parts))


def _read_index(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_index(path: Path, index: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)  # atomic: a reader never sees half an index
