"""The versions that made a result, recorded with every stored result."""

from __future__ import annotations

import importlib.metadata
import platform

# Libraries whose version can change a result besides torch and transformers: LoRA wrapping and
# merging (peft), mixed precision and resume state (accelerate), tokenisation (tokenizers), the
# weight files (safetensors) and the random draws of the mixtures (numpy).
OTHER_LIBRARIES = ("peft", "accelerate", "tokenizers", "safetensors", "numpy")


def environment_versions() -> dict[str, str]:
    """knowshift, torch, transformers, Python and the other libraries' versions of this process
    (read from the installed metadata, so the libraries are not imported)."""
    import torch
    import transformers

    import knowshift

    versions = {
        "knowshift": knowshift.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    for name in OTHER_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
