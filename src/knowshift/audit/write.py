"""Write an audit out: the per-example table, and the fine-tuning file filtered or relabelled.

The filtered file drops the Unknown examples (the paper's D_Known, METHODS B); the relabelled
one answers them with a refusal ("I don't know"). Both keep every other record as it was,
not-probed ones included, in the input's format: a JSONL line that does not change is copied
byte for byte; a changed record keeps its fields, with only the answer replaced (the completion,
the assistant turn, or answer/answers), and with the whitespace around it.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from knowshift.atomic import write_text
from knowshift.audit.data import SftFile
from knowshift.audit.run import Audit, AuditRow
from knowshift.errors import KnowshiftError
from knowshift.types import Category

TABLE_FORMATS = (".jsonl", ".csv", ".parquet")
PROB_FIELDS = ("p_highly_known", "p_maybe_known", "p_weakly_known", "p_unknown")  # CATEGORIES order


def table_rows(audit: Audit) -> list[dict]:
    """One flat record per example: where it is, what was asked, and its result or reason."""
    records = []
    for row in audit.rows:
        example, result = row.example, row.result
        records.append(
            {
                "index": example.index,
                "line": example.line,
                "group": example.group,
                "question": example.question,
                "answer": example.answers[0],
                "probed": row.probed,
                "reason": example.problem,
                "category": result.category.value if result and result.category else None,
                "category_prob": result.category_prob if result else None,
                "p_greedy": result.p_greedy if result else None,
                "p_sampled": result.p_sampled if result else None,
                **{
                    name: (result.category_probs[i] if result else None)
                    for i, name in enumerate(PROB_FIELDS)
                },
                "fact_id": row.fact_id,
            }
        )
    return records


def write_table(audit: Audit, path: str | Path) -> Path:
    """The per-example table as .jsonl, .csv or .parquet (by the file's extension)."""
    path, rows = Path(path), table_rows(audit)
    if path.suffix == ".parquet":
        from knowshift.store.export import export_rows

        return export_rows(rows, path)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = _csv_text(list(rows[0]), rows)
    return _write_atomic(path, text)


def is_unknown(row: AuditRow) -> bool:
    """Whether the example was probed and found Unknown (what --filtered and --relabelled act on)."""
    return row.result is not None and row.result.category == Category.UNKNOWN


def write_filtered(sft: SftFile, audit: Audit, path: str | Path) -> tuple[Path, int]:
    """The file without its Unknown examples; returns (path, records written)."""
    keep = [not is_unknown(row) for row in audit.rows]
    if sft.file_format == ".jsonl":
        text = "".join(line + "\n" for line, kept in zip(sft.lines, keep, strict=True) if kept)
    else:
        records = [r for r, kept in zip(sft.records, keep, strict=True) if kept]
        text = _csv_text(sft.columns, records)
    return _write_atomic(Path(path), text), sum(keep)


def write_relabelled(
    sft: SftFile, audit: Audit, path: str | Path, refusal: str
) -> tuple[Path, int]:
    """The file with every Unknown example answered `refusal`; returns (path, records changed)."""
    relabel = [is_unknown(row) for row in audit.rows]
    records = [
        _relabelled(sft.schema, record, refusal) if change else record
        for record, change in zip(sft.records, relabel, strict=True)
    ]
    if sft.file_format == ".jsonl":
        lines = [
            json.dumps(record, ensure_ascii=False) if change else line
            for record, line, change in zip(records, sft.lines, relabel, strict=True)
        ]
        text = "".join(line + "\n" for line in lines)
    else:
        text = _csv_text(sft.columns, records)
    return _write_atomic(Path(path), text), sum(relabel)


def _relabelled(schema: str, record: dict, refusal: str) -> dict:
    """A copy of a record whose answer is `refusal` (only probed, hence well-formed, records)."""
    record = copy.deepcopy(record)
    if schema == "question-answer":
        if isinstance(record.get("answers"), list):
            record["answers"] = [refusal]
        elif record.get("answers") not in (None, ""):
            record["answers"] = refusal
        if "answer" in record:
            record["answer"] = _same_spacing(str(record["answer"] or ""), refusal)
        return record
    if schema == "prompt-completion" and not isinstance(record["completion"], list):
        record["completion"] = _same_spacing(record["completion"], refusal)
        return record
    turns = record["messages"] if schema == "messages" else record["completion"]
    answer = next(t for t in reversed(turns) if t["role"] == "assistant")
    answer["content"] = _same_spacing(answer["content"], refusal)
    return record


def _same_spacing(original: str, text: str) -> str:
    """`text` with the whitespace that surrounds `original` (" Paris\\n" -> " I don't know\\n")."""
    stripped = original.strip()
    if not stripped:
        return text
    start = original.index(stripped)
    return original[:start] + text + original[start + len(stripped) :]


def _csv_text(columns: Sequence[str], records: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: ("" if v is None else v) for k, v in record.items() if k is not None}
        for record in records
    )
    return buffer.getvalue()


def _write_atomic(path: Path, text: str) -> Path:
    """Write `text` atomically (atomic.write_text); an OS error as one line naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    except OSError as error:
        raise KnowshiftError(f"cannot write {path} ({error.strerror}); check the path") from None
    return path
