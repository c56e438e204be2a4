"""Export stored rows to JSONL or Parquet (chosen by the file's extension)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from knowshift import atomic
from knowshift.errors import KnowshiftError

EXPORT_FORMATS = (".jsonl", ".parquet")


def export_rows(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows atomically (temporary name, then rename) as JSONL or Parquet."""
    path = Path(path)
    if path.suffix not in EXPORT_FORMATS:
        raise KnowshiftError(
            f"cannot export to {path.name}: use a file ending in .jsonl or .parquet"
        )
    with atomic.writing(path) as tmp:
        if path.suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    return path
