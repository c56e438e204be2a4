"""The versions that made a result, recorded with every stored result."""

from __future__ import annotations

import importlib.metadata
import platform

# Libraries whose version can change a result besides torch and transformers: LoRA wrapping and
# merging (peft), mixed precision and resume state (accelerate), tokenisation (tokenizers), the
# weight files (safetensors) and the random draws of the mixtures (numpy).
OTHER_LIBRARIES = ("peft", "accelerate", "tokenizers", "safetensors", "numpy")


def environment_versions() -> dict[str, str]:
    """knowshift, torch, transformers, Python and the other libraries' versions of this process.

    Read from the installed packages' metadata, so nothing is imported: storing an analysis
    (`knowshift analyze regression`) does not pay for importing torch. The device a result ran
    on is recorded by the stages that hold a model (they have torch imported already).
    """
    import knowshift

    versions = {"knowshift": knowshift.__version__}
    for name in ("torch", "transformers"):
        versions[name] = _installed_version(name)
    versions["python"] = platform.python_version()
    for name in OTHER_LIBRARIES:
        versions[name] = _installed_version(name)
    return versions


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
