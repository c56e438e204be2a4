"""A study's results as the verdicts read them (StudyData), and their compact export: one JSON
file per study that holds everything the verdicts, RESULTS.md and its figures need, and nothing
else (no weights, no generated text).

    data = StudyData.from_store(store, "unknown-ratio")   # done runs, records, predictions
    write_study_data(data, "results/reproduce/smollm2-135m/unknown-ratio.json")
    data = read_study_data("results/reproduce/smollm2-135m/unknown-ratio.json")

The verdict of a finding computed from a store and from the export of that store are the same:
floats go through JSON unchanged, and the runs keep the order they were recorded in. Per-fact
predictions are kept as one character per fact and flag ("1"/"0"), facts as indices into the
study's sorted fact list, so a study of a few thousand evaluations stays a few hundred kB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError
from knowshift.reproduce.stored import StudyRun, done_runs

FORMAT = "knowshift-reproduce-data/1"
CHECKPOINTS = ("early_stop", "last")  # the evaluations the findings read
ANALYSIS_KINDS = ("eval", "shift", "collapse", "restore-sweep")  # the analyses they read
FLAGS = ("exact", "contains", "refused", "in_distribution")  # per-fact fields they read
CONFIG_KEYS = ("model", "group_sizes", "versions", "earlier_versions")  # of a run's config


@dataclass(frozen=True)
class StudyData:
    """One study's done runs with what the findings read of them: training records, the latest
    analysis per (kind, "<run>:<checkpoint>"), per-fact predictions per (run, checkpoint)."""

    study: str
    runs: tuple[StudyRun, ...]
    records: Mapping[str, list[dict]]  # run id -> train records, epoch order
    analysis_results: Mapping[tuple[str, str], dict]  # (kind, subject) -> latest result
    predictions: Mapping[tuple[str, str], list[dict]]  # (run id, checkpoint) -> per fact

    # --- the store-like reads of the statistics (and of analysis.regression_points) ----------

    def run_config(self, run_id: str) -> dict | None:
        return next((dict(r.config) for r in self.runs if r.run_id == run_id), None)

    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def train_records(self, run_id: str) -> list[dict]:
        return list(self.records.get(run_id, []))

    def analysis(self, kind: str, subject: str) -> dict | None:
        """The latest result of `kind` on `subject` ("<run>:<checkpoint>"), or None."""
        return self.analysis_results.get((kind, subject))

    def evaluation(self, run_id: str, checkpoint: str) -> list[dict] | dict | None:
        """A checkpoint's per-fact predictions, else its "eval" summary, else None."""
        found = self.predictions.get((run_id, checkpoint))
        return found if found is not None else self.analysis("eval", f"{run_id}:{checkpoint}")

    @property
    def path(self) -> Path:  # named in analysis.regression_points' errors
        return Path(f"<data of study {self.study}>")

    # --- from a store ------------------------------------------------------------------------

    @classmethod
    def from_store(cls, store, study: str) -> StudyData:
        """The done runs of `study` in `store`, with their run folders' predictions."""
        runs = tuple(done_runs(store, study))
        records = {run.run_id: store.train_records(run.run_id) for run in runs}
        results, predictions = {}, {}
        for run in runs:
            for checkpoint in CHECKPOINTS:
                subject = f"{run.run_id}:{checkpoint}"
                for kind in ANALYSIS_KINDS:
                    if stored := store.analyses(kind, subject):
                        results[kind, subject] = _compact_result(kind, stored[-1]["result"])
                path = run.folder / "predictions" / f"{checkpoint}.jsonl" if run.folder else None
                if path is not None and path.is_file():
                    lines = path.read_text(encoding="utf-8").splitlines()
                    predictions[run.run_id, checkpoint] = [
                        _flags(json.loads(line)) for line in lines if line.strip()
                    ]
        return cls(study, runs, records, results, predictions)


def _flags(prediction: Mapping[str, Any]) -> dict:
    """The per-fact fields the findings read (a prediction without `in_distribution` is in)."""
    flags = {flag: bool(prediction.get(flag, False)) for flag in FLAGS}
    flags["in_distribution"] = bool(prediction.get("in_distribution", True))
    return {"fact_id": prediction["fact_id"], **flags}


def _compact_result(kind: str, result: dict) -> dict:
    """What the findings and figures read of an analysis result (a restoration sweep's points)."""
    if kind != "restore-sweep":
        return result
    keep = ("mode", "fraction", "metrics")
    return {"points": [{k: p[k] for k in keep if k in p} for p in result.get("points", [])]}


# --- the export ---------------------------------------------------------------------------------


def study_data_document(data: StudyData) -> dict:
    """`data` as a JSON-able document (the export's content)."""
    facts = sorted({p["fact_id"] for rows in data.predictions.values() for p in rows})
    index = {fact: i for i, fact in enumerate(facts)}
    runs = []
    for run in data.runs:
        evaluations = {}
        for checkpoint in CHECKPOINTS:
            rows = data.predictions.get((run.run_id, checkpoint))
            if rows is not None:
                evaluations[checkpoint] = {
                    "facts": [index[p["fact_id"]] for p in rows],
                    **{flag: "".join("1" if p[flag] else "0" for p in rows) for flag in FLAGS},
                }
        analyses = {
            f"{kind}:{subject.rsplit(':', 1)[1]}": result
            for (kind, subject), result in data.analysis_results.items()
            if subject.rsplit(":", 1)[0] == run.run_id
        }
        train = run.config.get("train") if isinstance(run.config.get("train"), dict) else {}
        runs.append({
            "run_id": run.run_id,
            "variant": dict(run.variant),
            "seed": run.seed,
            "config": {**{k: run.config[k] for k in CONFIG_KEYS if k in run.config},
                       "train": {"seed": train.get("seed")}},
            "train_records": data.records.get(run.run_id, []),
            "analyses": dict(sorted(analyses.items())),
            "predictions": evaluations,
        })  # fmt: skip
    return {"format": FORMAT, "study": data.study, "facts": facts, "runs": runs}


def study_data_from_document(document: Mapping[str, Any], where: str = "data") -> StudyData:
    """The inverse of `study_data_document`."""
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, Mapping) else type(document).__name__
        raise KnowshiftError(
            f"{where} is not knowshift reproduction data (format {found!r}, expected {FORMAT!r}); "
            "write it with knowshift reproduce export"
        )
    facts = document["facts"]
    runs, records, results, predictions = [], {}, {}, {}
    for row in document["runs"]:
        run_id = row["run_id"]
        runs.append(StudyRun(run_id, row["variant"], int(row["seed"]), row["config"], None))
        records[run_id] = row["train_records"]
        for key, result in row["analyses"].items():
            kind, checkpoint = key.rsplit(":", 1)
            results[kind, f"{run_id}:{checkpoint}"] = result
        for checkpoint, columns in row["predictions"].items():
            predictions[run_id, checkpoint] = [
                {"fact_id": facts[j], **{f: columns[f][i] == "1" for f in FLAGS}}
                for i, j in enumerate(columns["facts"])
            ]
    return StudyData(document["study"], tuple(runs), records, results, predictions)


def write_study_data(data: StudyData, path: str | Path) -> Path:
    """Write the export of `data` (sorted keys, one run per line block: stable diffs)."""
    from knowshift.atomic import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(study_data_document(data), sort_keys=True, indent=1) + "\n")
    return path


def read_study_data(path: str | Path) -> StudyData:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowshiftError(f"no reproduction data {path}; knowshift reproduce export writes it") from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KnowshiftError(f"{path} is not valid JSON ({error}); export it again") from None
    return study_data_from_document(document, str(path))


def read_data_folder(folder: str | Path) -> dict[str, list[StudyData]]:
    """Every study export under `folder` (laid out <model>/<study>.json), by model folder name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KnowshiftError(f"no reproduction data folder {folder}; knowshift reproduce export writes it")  # fmt: skip
    found: dict[str, list[StudyData]] = {}
    for path in sorted(folder.glob("*/*.json")):
        found.setdefault(path.parent.name, []).append(read_study_data(path))
    return found
