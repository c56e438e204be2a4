"""The versions that made a result, recorded with every stored result; and how stored records
differ from this process's (the note a rerun prints) and among themselves (the report's
Environment section). Versions are never part of a result's key: an upgrade reuses what is
stored, and says so, rather than discarding it."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable, Mapping
from typing import TypeVar

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
    from knowshift._version import __version__

    versions = {"knowshift": __version__}
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


# What is compared between environments: the packages above, and vLLM where a probe ran on it.
# The device, dtype and model name recorded beside them are not versions.
PACKAGES = ("knowshift", "torch", "transformers", "python", *OTHER_LIBRARIES, "vllm")
MARKED_NOW = "results made now will be marked with the new versions"

Made = TypeVar("Made")


def versions_in_use(
    records: Iterable[tuple[Made, Mapping[str, str]]],
) -> dict[str, dict[str, list[Made]]]:
    """Which versions of each package the records were made with: package -> version -> the
    records (their first item) made with it. Packages in PACKAGES order, versions in the order
    they first appear; a package a record does not name (an older record) is left out for it.
    A package with more than one version is one whose results may differ for that reason."""
    used: dict[str, dict[str, list[Made]]] = {}
    for made, versions in records:
        for package in PACKAGES:
            if package in versions:
                used.setdefault(package, {}).setdefault(versions[package], []).append(made)
    return {package: used[package] for package in PACKAGES if package in used}


def version_differences(
    stored: Iterable[Mapping[str, str]], current: Mapping[str, str]
) -> list[str]:
    """Each package whose version in any of the `stored` records differs from `current`, as
    "transformers 5.19.0 (now 5.25.0)" ("5.18.0 and 5.19.0" when the records differ among
    themselves); empty when every package recorded on both sides matches. Local build tags
    count ("2.13.0+cpu" is not "2.13.0+cu128"): they change the kernels that ran."""
    used = versions_in_use((None, versions) for versions in stored)
    differences = []
    for package, versions in used.items():
        earlier = [version for version in versions if version != current.get(package, version)]
        if earlier:
            differences.append(f"{package} {' and '.join(earlier)} (now {current[package]})")
    return differences


def versions_note(
    what: str,
    stored: Iterable[Mapping[str, str]],
    current: Mapping[str, str] | None = None,
    consequence: str = MARKED_NOW,
) -> str | None:
    """The line a command prints when it reuses or adds to stored results made with other
    versions than this process's (`current`, default `environment_versions()`), e.g. "note:
    stored results of study x were made with peft 0.21.2 (now 0.22.0); results made now will
    be marked with the new versions". None when the versions match."""
    differences = version_differences(stored, current or environment_versions())
    if not differences:
        return None
    return f"note: stored results of {what} were made with {', '.join(differences)}; {consequence}"
