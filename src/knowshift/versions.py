"""The versions that made a result, recorded with every stored result."""

from __future__ import annotations

import platform


def environment_versions() -> dict[str, str]:
    """knowshift, torch, transformers and Python versions of this process."""
    import torch
    import transformers

    import knowshift

    return {
        "knowshift": knowshift.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
