"""Readers for fact files: EntityQuestions, PopQA, JSONL and CSV.

Each reader turns a file (or directory) into `RawFact` rows and nothing more; subjects left
empty ("") are recovered afterwards from the relation's question pattern. Every problem with
the input is a one-line `KnowshiftError` naming the file, the line (or item) and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError
from knowshift.facts.assemble import RawFact
from knowshift.types import Split

SPLIT_NAMES = {"train": Split.TRAIN, "dev": Split.DEV, "validation": Split.DEV,
               "valid": Split.DEV, "val": Split.DEV, "test": Split.TEST}  # fmt: skip
POPQA_COLUMNS = ("subj", "prop", "question", "possible_answers")
# A fact's question, subject and answers are short texts; a longer field is a document pasted in
# (or a damaged file), which the probe would feed to the model whole.
MAX_FIELD_CHARS = 2000


def read_entity_questions(root: Path) -> list[RawFact]:
    """Rows of an EntityQuestions download: root/{train,dev,test}/P<id>.<split>.json.

    Each file is a JSON list of {"question", "answers"}; the relation is the file name's P<id>
    and the split its folder. `root` may also be the folder the published dataset.zip was
    unpacked into (holding dataset/). Other folders of the download (one-off/, ...) are not read.
    """
    root = _entity_questions_root(root)
    rows = []
    for split in Split:
        for path in sorted((root / split.value).glob(f"P*.{split.value}.json")):
            relation = path.name.split(".")[0]
            items = _parse_json(read_text(path), path)
            if not isinstance(items, list):
                raise KnowshiftError(
                    f"{path}: expected a JSON list of questions; fix the file to hold "
                    '[{"question": ..., "answers": [...]}, ...]'
                )
            for index, item in enumerate(items):
                where = f"{path} item {index}"
                record = _as_mapping(item, where)
                question = _required_text(record, "question", where)
                if "answers" not in record:
                    raise KnowshiftError(
                        f"{where}: missing answers; give every record an answers list"
                    )
                answers = _answers(record["answers"], where)
                rows.append(RawFact(relation, "", answers, question, split=split))
    if not rows:
        raise KnowshiftError(
            f"{root}: no EntityQuestions files found; expected {root}/test/P<id>.test.json "
            "(and train/, dev/ alike), as the published dataset.zip unpacks"
        )
    return rows


def _entity_questions_root(root: Path) -> Path:
    """The folder holding train/, dev/ and test/: `root` itself, or the one folder inside it
    that does (dataset/ of the unpacked download). A split folder given instead is an error."""
    if not root.is_dir():
        raise KnowshiftError(
            f"{root}: no such directory; point entity-questions: at the dataset folder"
        )
    if _has_splits(root):
        return root
    if root.name in SPLIT_NAMES and any(root.glob("P*.json")):
        raise KnowshiftError(
            f"{root}: this is the {root.name}/ folder of an EntityQuestions download; "
            f"point entity-questions: at the folder that holds it, {root.parent}"
        )
    inside = sorted(child for child in root.iterdir() if child.is_dir() and _has_splits(child))
    if root / "dataset" in inside:
        return root / "dataset"
    if len(inside) > 1:
        names = ", ".join(child.name for child in inside)
        raise KnowshiftError(
            f"{root}: holds several EntityQuestions folders ({names}); point entity-questions: "
            "at one of them"
        )
    return inside[0] if inside else root


def _has_splits(folder: Path) -> bool:
    return any((folder / split.value).is_dir() for split in Split)


def read_popqa(path: Path) -> list[RawFact]:
    """Rows of a PopQA TSV (columns subj, prop, question, possible_answers, s_pop, ...)."""
    rows = []
    for where, record in _table_records(path, "\t", POPQA_COLUMNS):
        listed = _parse_json(record["possible_answers"] or "[]", where)
        row = RawFact(
            relation=_required_text(record, "prop", where),
            subject=_required_text(record, "subj", where),
            answers=_answers(listed, where, fallback=record.get("obj")),
            question=_required_text(record, "question", where),
            popularity=_number(record.get("s_pop"), "s_pop", where),
        )
        rows.append(row)
    return rows


def read_jsonl(path: Path) -> list[RawFact]:
    """Rows of a JSON-lines file (or a .json file holding one list) of generic records."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        items = _parse_json(text, path)
        records = (
            (f"{path} item {i}", _as_mapping(item, f"{path} item {i}"))
            for i, item in enumerate(items)
        )
    else:
        records = _json_lines(path, text)
    return _generic_rows(records, path)


def read_csv(path: Path) -> list[RawFact]:
    """Rows of a CSV file of generic records (answers: a JSON list or "a|b|c")."""
    required = ("question",)
    records = _table_records(path, ",", required, one_of=("answer", "answers"))
    return _generic_rows(records, path)


def read_text(path: Path) -> str:
    """The file's text; a missing file or non-UTF-8 bytes raise a one-line KnowshiftError."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        raise KnowshiftError(f"{path}: {what}; check the path in the fact source")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise KnowshiftError(
            f"{path} line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); re-save the file as UTF-8"
        ) from None


def _parse_json(text: str, where: object) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        at = f" line {error.lineno}" if isinstance(where, Path) else ""
        raise KnowshiftError(
            f"{where}{at}: malformed JSON ({error.msg}); fix the JSON there"
        ) from None
    except RecursionError:
        raise KnowshiftError(
            f"{where}: JSON nested too deeply to be a fact record; fix the JSON there"
        ) from None


def _json_lines(path: Path, text: str) -> Iterator[tuple[str, Mapping]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            where = f"{path} line {number}"
            yield where, _as_mapping(_parse_json(line, where), where)


def _table_records(
    path: Path, delimiter: str, required: tuple[str, ...], one_of: tuple[str, ...] = ()
) -> Iterator[tuple[str, Mapping]]:
    """(where, row) for every data row of a CSV/TSV file, after checking its header."""
    # strict: an unclosed quote is an error, not a field that swallows the rest of the file.
    text = io.StringIO(read_text(path), newline="")
    reader = csv.DictReader(text, delimiter=delimiter, strict=True)
    start = 1  # the line the current record starts on (a quoted field may span lines)
    try:
        columns = reader.fieldnames or []
        missing = [name for name in required if name not in columns]
        if one_of and not any(name in columns for name in one_of):
            missing.append(" or ".join(one_of))
        if missing:
            raise KnowshiftError(
                f"{path}: missing column {', '.join(missing)} (has: {', '.join(columns) or 'none'}); "
                "add it to the header line"
            )
        start = reader.line_num + 1
        for record in reader:
            where = f"{path} line {start}"
            if None in record:  # DictReader files surplus fields under None
                raise KnowshiftError(
                    f"{where}: more fields than the header has columns; quote fields that "
                    f"hold {'a tab' if delimiter == chr(9) else 'commas'}"
                )
            yield where, record
            start = reader.line_num + 1
    except csv.Error as error:
        raise KnowshiftError(f"{path} line {start}: {table_error(error)}") from None


def table_error(error: csv.Error) -> str:
    """What a CSV parse error means, and the fix."""
    if "unexpected end of data" in str(error):
        return 'a quoted field is never closed; close its " (write "" for a quote inside it)'
    if "expected after" in str(error):
        return 'text after a closing quote; quote the whole field (write "" for a quote inside it)'
    return f"{error}; fix the file there"


def _generic_rows(records: Iterator[tuple[str, Mapping]], path: Path) -> list[RawFact]:
    """RawFacts from generic records; all of them or none must carry a split."""
    rows, with_split = [], None
    for where, record in records:
        row = _generic_row(record, where)
        if with_split is None:
            with_split = row.split is not None
        elif with_split != (row.split is not None):
            raise KnowshiftError(
                f"{where}: split given for some rows only; give every row a split or none"
            )
        rows.append(row)
    if not rows:
        raise KnowshiftError(f"{path}: no facts in the file; add at least one row")
    return rows


def _generic_row(record: Mapping, where: str) -> RawFact:
    question = _required_text(record, "question", where)
    answers = record.get("answers")
    if answers in (None, "", []):
        answers = record.get("answer") or []
    if isinstance(answers, str):
        answers = (
            _parse_json(answers, where) if answers.lstrip().startswith("[") else answers.split("|")
        )
    split_name = _optional_text(record, "split", where)
    if split_name is not None and split_name.lower() not in SPLIT_NAMES:
        raise KnowshiftError(f"{where}: unknown split {split_name!r}; use train, dev or test")
    return RawFact(
        relation=_optional_text(record, "relation", where) or "default",
        subject=_optional_text(record, "subject", where) or "",
        answers=_answers(answers, where),
        question=question,
        popularity=_number(record.get("popularity"), "popularity", where),
        split=SPLIT_NAMES[split_name.lower()] if split_name else None,
        id=_optional_text(record, "id", where),
    )


def _as_mapping(item: object, where: str) -> Mapping:
    if not isinstance(item, Mapping):
        raise KnowshiftError(
            f"{where}: expected a JSON object with question and answers; fix the record"
        )
    return item


def _optional_text(record: Mapping, field: str, where: str) -> str | None:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise KnowshiftError(
            f"{where}: {field} must be text, got {type(value).__name__}; fix the record"
        )
    return _short(str(value).strip(), field, where)


def _short(text: str, field: str, where: str) -> str:
    """`text`, unless it is too long to be a fact's field."""
    if len(text) > MAX_FIELD_CHARS:
        raise KnowshiftError(
            f"{where}: {field} is {len(text):,} characters long, more than the {MAX_FIELD_CHARS} "
            "a fact's field may have (a document pasted in?); shorten it or drop the record"
        )
    return text


def _required_text(record: Mapping, field: str, where: str) -> str:
    value = _optional_text(record, field, where)
    if value is None:
        raise KnowshiftError(f"{where}: missing {field}; give every record a non-empty {field}")
    return value


def _answers(value: object, where: str, fallback: str | None = None) -> tuple[str, ...]:
    """Non-empty, stripped answer strings from a list (numbers allowed) or a single string."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise KnowshiftError(f"{where}: answers must be a list of strings; fix the record")
    answers = []
    for answer in value:
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise KnowshiftError(f"{where}: answer {answer!r} is not text; give answers as strings")
        if str(answer).strip():
            answers.append(_short(str(answer).strip(), "answer", where))
    if not answers and fallback and fallback.strip():
        answers = [_short(fallback.strip(), "obj", where)]
    if not answers:
        raise KnowshiftError(
            f"{where}: no answers; give at least one non-empty answer (answer or answers)"
        )
    return tuple(dict.fromkeys(answers))


def _number(value: object, field: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise KnowshiftError(
            f"{where}: {field} {value!r} is not a number; give a number or leave it empty"
        )
    return number
