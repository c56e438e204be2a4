"""Read a user's fine-tuning file into examples, keeping what is needed to write it back.

Accepted files (the first record decides the schema; every record must follow it):

- JSONL (`.jsonl`), one object a line, with
  - `prompt` and `completion` (text, or TRL's conversational form: lists of role/content turns),
  - `messages`: a list of {role, content} turns (system, user, assistant),
  - `question` and `answer` (or `answers`: a list of aliases, or "a|b").
- CSV (`.csv`) with a header holding `prompt` and `completion`, or `question` and `answer(s)`.

An example's question is its prompt or user turn, its answers its completion or assistant turn.
Conversations that are not one question and one answer are kept, with the reason they cannot be
probed. A group field (`source`, `topic`, `category`, `domain` or `relation`, or the one named)
labels each example for the summary.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError
from knowshift.facts.readers import read_text, table_error

FILE_FORMATS = (".jsonl", ".csv")
SCHEMAS = ("prompt-completion", "messages", "question-answer")
GROUP_FIELDS = ("source", "topic", "category", "domain", "relation")
ACCEPTED = "prompt/completion, messages (user/assistant turns) or question/answer(s)"


@dataclass(frozen=True)
class SftExample:
    """One record of the file, as a question and its answers.

    index: position among the file's records, from 0. line: the line the record starts on.
    question: the prompt or user turn as written ("" when there is none).
    answers: the completion or assistant turn (several only for question/answers aliases).
    group: the value of the file's group field, if it has one.
    problem: why the record's shape cannot be probed (e.g. a multi-turn chat), else None.
    """

    index: int
    line: int
    question: str
    answers: tuple[str, ...]
    group: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class SftFile:
    """A fine-tuning file: its examples, and its records as read (to write it back alike).

    lines: for JSONL, each record's line exactly as read. columns: for CSV, the header.
    """

    path: Path
    file_format: str  # ".jsonl" or ".csv"
    schema: str  # one of SCHEMAS
    records: tuple[dict, ...]
    examples: tuple[SftExample, ...]
    group_field: str | None = None
    lines: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()


def read_sft(path: str | Path, group_by: str | None = None) -> SftFile:
    """Read a JSONL or CSV fine-tuning file; any problem is a one-line KnowshiftError."""
    path = Path(path)
    if path.suffix.lower() not in FILE_FORMATS:
        raise KnowshiftError(
            f"{path}: unknown file type {path.suffix or '(none)'!r}; give a .jsonl or .csv file "
            f"with {ACCEPTED} fields"
        )
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        raise KnowshiftError(f"{path}: {what}; give the path of your fine-tuning file")
    text = read_text(path)
    columns: tuple[str, ...] = ()
    if path.suffix.lower() == ".jsonl":
        rows = list(_json_records(path, text))
        lines = tuple(raw for _, _, raw in rows)
    else:
        columns, rows = _csv_records(path, text)
        lines = ()
    if not rows:
        raise KnowshiftError(f"{path}: no examples in the file; add at least one record")
    records = tuple(row[1] for row in rows)
    schema = _schema(records[0], f"{path} line {rows[0][0]}")
    group_field = _group_field(path, records, group_by)
    examples = tuple(
        _example(index, row[0], schema, row[1], f"{path} line {row[0]}", group_field)
        for index, row in enumerate(rows)
    )
    return SftFile(
        path, path.suffix.lower(), schema, records, examples, group_field, lines, columns
    )


def _json_records(path: Path, text: str) -> Iterator[tuple[int, dict, str]]:
    """(line number, record, line) for every non-blank line of a JSONL file."""
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise KnowshiftError(
                f"{path} line {number}: malformed JSON ({error.msg}); fix the JSON there"
            ) from None
        except RecursionError:
            raise KnowshiftError(
                f"{path} line {number}: JSON nested too deeply to be an example; fix the record"
            ) from None
        if not isinstance(record, dict):
            raise KnowshiftError(
                f"{path} line {number}: expected a JSON object with {ACCEPTED}; fix the record"
            )
        yield number, record, line.removesuffix("\r")


def _csv_records(path: Path, text: str) -> tuple[tuple[str, ...], list[tuple[int, dict]]]:
    """The header and (line number, row) for every data row of a CSV file."""
    # strict: an unclosed quote is an error, not a field that swallows the rest of the file.
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    try:
        columns = tuple(reader.fieldnames or ())
        start = reader.line_num + 1
        for record in reader:
            if None in record:
                raise KnowshiftError(
                    f"{path} line {start}: more fields than the header has columns; "
                    "quote fields that hold commas"
                )
            rows.append((start, record))
            start = reader.line_num + 1
    except csv.Error as error:
        raise KnowshiftError(f"{path} line {start}: {table_error(error)}") from None
    if not columns:
        raise KnowshiftError(f"{path}: no examples in the file; add a header and rows")
    return columns, rows


def _schema(record: Mapping, where: str) -> str:
    """The schema of the first record, or an error listing the accepted fields."""
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "question" in record and ("answer" in record or "answers" in record):
        return "question-answer"
    fields = ", ".join(str(name) for name in record) or "none"
    raise KnowshiftError(
        f"{where}: unknown format (fields: {fields}); use {ACCEPTED} fields "
        "(CSV: prompt,completion or question,answer columns)"
    )


def _group_field(path: Path, records: tuple[dict, ...], group_by: str | None) -> str | None:
    """The field that labels groups in the summary: the one asked for, else a usual one."""
    present = dict.fromkeys(name for record in records for name in record)
    if group_by is not None:
        if group_by not in present:
            raise KnowshiftError(
                f"{path}: no field {group_by!r} to group by (fields: {', '.join(present)}); "
                "check --group-by"
            )
        return group_by
    return next((name for name in GROUP_FIELDS if name in present), None)


def _example(
    index: int, line: int, schema: str, record: Mapping, where: str, group_field: str | None
) -> SftExample:
    group = record.get(group_field) if group_field else None
    question, answers, problem = _question_answers(schema, record, where)
    return SftExample(
        index, line, question, answers, None if group in (None, "") else str(group), problem
    )


def _question_answers(
    schema: str, record: Mapping, where: str
) -> tuple[str, tuple[str, ...], str | None]:
    """(question, answers, problem) of one record of the file's schema."""
    if schema == "messages":
        return _from_turns(_field(record, "messages", where), where)
    if schema == "question-answer":
        question = _text(_field(record, "question", where), "question", where)
        return question, _answers(record, where), None
    prompt, completion = _field(record, "prompt", where), _field(record, "completion", where)
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational form
        turns = _as_list(prompt, "prompt", where) + _as_list(completion, "completion", where)
        return _from_turns(turns, where)
    return _text(prompt, "prompt", where), (_text(completion, "completion", where),), None


def _field(record: Mapping, name: str, where: str) -> Any:
    if name not in record:
        raise KnowshiftError(
            f"{where}: no {name!r} field, unlike the first record; give every record the same fields"
        )
    return record[name]


def _text(value: Any, name: str, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise KnowshiftError(
            f"{where}: {name} must be text, got {type(value).__name__}; fix the record"
        )
    return str(value)


def _answers(record: Mapping, where: str) -> tuple[str, ...]:
    """question/answer(s) records: `answers` (a list, a JSON list or "a|b") wins over `answer`."""
    listed = record.get("answers")
    if listed in (None, "", []):
        values = [record.get("answer") if "answers" in record else _field(record, "answer", where)]
    elif isinstance(listed, list):
        values = listed
    elif isinstance(listed, str) and listed.lstrip().startswith("["):
        try:
            values = json.loads(listed)
        except json.JSONDecodeError as error:
            raise KnowshiftError(
                f"{where}: answers is malformed JSON ({error.msg}); fix the list or use a|b"
            ) from None
    else:
        values = _text(listed, "answers", where).split("|")
    if not isinstance(values, list):
        values = [values]
    answers = tuple(a for a in (_text(v, "answer", where).strip() for v in values) if a)
    return answers or ("",)


def _as_list(value: Any, name: str, where: str) -> list:
    if isinstance(value, list):
        return value
    raise KnowshiftError(
        f"{where}: {name} must be a list of turns like the other field of the record; fix it"
    )


def _from_turns(turns: Any, where: str) -> tuple[str, tuple[str, ...], str | None]:
    """(question, answers, problem) of a conversation: one user turn, then one assistant turn."""
    if not isinstance(turns, list) or not all(
        isinstance(t, Mapping) and "role" in t and "content" in t for t in turns
    ):
        raise KnowshiftError(
            f"{where}: messages must be a list of {{role, content}} objects; fix the record"
        )
    # A role that is not text (a list, a number) is shown by its type, never compared as a key.
    roles = [t["role"] if isinstance(t["role"], str) else type(t["role"]).__name__ for t in turns]
    user = [t for t, role in zip(turns, roles, strict=True) if role == "user"]
    assistant = [t for t, role in zip(turns, roles, strict=True) if role == "assistant"]
    question = user[0]["content"] if user else ""
    answer = assistant[-1]["content"] if assistant else ""
    problem = None
    if set(roles) - {"system", "user", "assistant"}:
        problem = f"not a plain chat (roles {', '.join(sorted(set(roles)))})"
    elif len(user) != 1 or len(assistant) != 1:
        problem = f"multi-turn conversation ({len(user)} user, {len(assistant)} assistant turns)"
    elif roles[-1] != "assistant" or roles.index("user") > roles.index("assistant"):
        problem = "not one question followed by its answer"
    elif not isinstance(question, str) or not isinstance(answer, str):
        problem = "message content is not plain text"
    if problem:
        return (question if isinstance(question, str) else ""), ("",), problem
    return question, (answer,), None
