"""The results database: one SQLite file per workspace."""

from knowshift.store.db import Store, database_path

__all__ = ["Store", "database_path"]
