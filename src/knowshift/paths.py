"""Where knowshift keeps its caches and workspaces."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache for converted models and built fact bases (`KNOWSHIFT_CACHE` overrides)."""
    root = os.environ.get("KNOWSHIFT_CACHE") or Path.home() / ".cache" / "knowshift"
    return Path(root)


def default_workspace() -> Path:
    """The workspace holding the results database (`KNOWSHIFT_WORKSPACE` overrides)."""
    return Path(os.environ.get("KNOWSHIFT_WORKSPACE") or "workspace")
