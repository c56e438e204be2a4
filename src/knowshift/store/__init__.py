"""The results database: one SQLite file per workspace."""

from knowshift.store.db import Store

__all__ = ["Store"]
