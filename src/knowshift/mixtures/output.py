"""A training set on disk: `train.jsonl` (one example a line) and `manifest.json`.

Each line holds "prompt" and "completion" (the prompt-completion format TRL and most trainers
read, loss on the completion) followed by the example's metadata. Both files are written under a
temporary name and renamed, so a reader never sees half a file; the manifest, written last,
holds the sha256 of train.jsonl, so a set edited by hand is noticed when read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from knowshift.atomic import write_text
from knowshift.digest import text_digest
from knowshift.errors import KnowshiftError
from knowshift.types import CATEGORIES, Example, Manifest, TrainingSet

TRAIN_FILE = "train.jsonl"
MANIFEST_FILE = "manifest.json"


def example_record(example: Example) -> dict:
    """One JSONL record: prompt and completion first, then the metadata."""
    record = {"prompt": example.prompt, "completion": example.completion}
    record.update((f.name, getattr(example, f.name)) for f in fields(Example))
    return record


def examples_jsonl(examples: Sequence[Example]) -> str:
    """The text of train.jsonl for these examples."""
    return "".join(json.dumps(example_record(e), ensure_ascii=False) + "\n" for e in examples)


def examples_digest(examples: Sequence[Example]) -> str:
    """The sha256 of train.jsonl for these examples (the manifest's `examples_digest`)."""
    return _digest(examples_jsonl(examples))


def write_training_set(
    examples: Sequence[Example], manifest: Manifest, out_dir: str | Path
) -> Path:
    """Write `out_dir/train.jsonl` and `out_dir/manifest.json` (atomically); returns out_dir."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KnowshiftError(
            f"cannot create the folder {out} ({error.strerror}); check --out"
        ) from None
    text = examples_jsonl(examples)
    if manifest.examples_digest and _digest(text) != manifest.examples_digest:
        raise ValueError("the manifest describes other examples than the ones being written")
    write_text(out / TRAIN_FILE, text)
    write_text(out / MANIFEST_FILE, json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
    return out


def read_training_set(out_dir: str | Path) -> TrainingSet:
    """Read a set written by `write_training_set`, checking train.jsonl against its manifest."""
    from knowshift.facts.readers import read_text

    out = Path(out_dir)
    for name in (TRAIN_FILE, MANIFEST_FILE):
        if not (out / name).is_file():
            raise KnowshiftError(f"no {name} in {out}; build the set with knowshift build")
    text = read_text(out / TRAIN_FILE)
    manifest_path = out / MANIFEST_FILE
    manifest = _record(Manifest, _json(read_text(manifest_path), manifest_path), manifest_path)
    if manifest.examples_digest and _digest(text) != manifest.examples_digest:
        raise KnowshiftError(
            f"{out / TRAIN_FILE} does not match its manifest (edited since it was built?); "
            "rebuild it with knowshift build"
        )
    lines = ((f"{out / TRAIN_FILE} line {n}", line) for n, line in enumerate(text.splitlines(), 1))
    examples = tuple(_record(Example, _json(line, where), where) for where, line in lines if line)
    return TrainingSet(examples, manifest)


def _json(text: str, where: object) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        raise KnowshiftError(
            f"{where}: malformed JSON ({reason}); the set is damaged, rebuild it with knowshift build"
        ) from None


def _record(cls: type, value: object, where: object):
    """`cls(**value)` for a record a set holds, or one line saying the set is damaged."""
    names = [f.name for f in fields(cls)]
    if isinstance(value, dict) and set(value) <= set(names):
        try:
            return cls(**value)
        except TypeError:  # a required field is missing
            pass
    found = ", ".join(sorted(map(str, value))) if isinstance(value, dict) else type(value).__name__
    raise KnowshiftError(
        f"{where}: not a {cls.__name__.lower()} (fields: {found or 'none'}); "
        "the set is damaged or from another knowshift version, rebuild it with knowshift build"
    )


def manifest_table(manifest: Manifest) -> str:
    """The manifest's counts as a printable table: relations x categories, then kinds."""
    found = {c for counts in manifest.counts_by_relation_category.values() for c in counts}
    order = [c.value for c in CATEGORIES]  # categories in SliCK order, then "none"
    columns = sorted(found, key=lambda c: (order.index(c) if c in order else len(order), c))
    width = max([len("relation")] + [len(r) for r in manifest.counts_by_relation])
    lines = [
        f"{manifest.recipe}: {manifest.n_examples} examples (seed {manifest.seed}) from "
        f"{manifest.estimator} probe results of {manifest.model or manifest.model_fingerprint} "
        f"on {manifest.facts_source}",
        f"{'relation':<{width}}  {'n':>6}  " + "  ".join(f"{c:>11}" for c in columns),
    ]
    rows = {**manifest.counts_by_relation_category, "ALL": manifest.counts_by_category}
    for relation, counts in rows.items():
        cells = "  ".join(f"{counts.get(c, 0):>11}" for c in columns)
        lines.append(f"{relation:<{width}}  {sum(counts.values()):>6}  {cells}")
    lines.append("kinds: " + ", ".join(f"{k} {n}" for k, n in manifest.counts_by_kind.items()))
    if set(manifest.counts_by_mastery_level) - {"none"}:
        levels = manifest.counts_by_mastery_level.items()
        lines.append("mastery levels: " + ", ".join(f"{k}: {n}" for k, n in levels))
    return "\n".join(lines)


def _digest(text: str) -> str:
    return text_digest(text, None)
