"""What a report draws, read from the results database into frozen records.

Runs come with their per-epoch measurements and their study variant (the grid values a study
runner recorded); probe results are counted per relation and category; stored analyses are kept
by kind, each revived into the analysis module's own result class where that class can be
imported without torch, and into a small record of this module where it cannot.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowshift.analysis.benchmarks import BenchmarkResult
from knowshift.analysis.collapse import CollapseResult, CollapseStats, ExplodedAnswer
from knowshift.analysis.consistency import ConsistencyResult
from knowshift.analysis.regression import RegressionPoint, RegressionResult
from knowshift.analysis.shift import ShiftResult
from knowshift.analysis.stats import Coefficient, OlsFit
from knowshift.analysis.token_kl import TokenKLResult
from knowshift.errors import KnowshiftError
from knowshift.store import Store, database_path
from knowshift.types import CATEGORIES

CATEGORY_NAMES = tuple(c.value for c in CATEGORIES)
# Keys of a study run's variant that are not grid values (see knowshift.study.runner).
NOT_GRID = ("label", "error", "folder")


@dataclass(frozen=True)
class Epoch:
    """One measurement of a run: accuracies are fractions (0-1) keyed by group ("test/in")."""

    epoch: float
    train_loss: float | None
    accuracy: Mapping[str, float]


@dataclass(frozen=True)
class Run:
    """A training run: its label, what its set held, and its measurements in epoch order."""

    run_id: str
    label: str
    variant: Mapping[str, Any]  # "build.frac_unknown" -> 0.5; empty outside a study
    status: str  # of its study: pending, running, done, failed; "" outside a study
    model: str
    n_train: int
    frac_unknown: float | None  # share of Unknown examples in the set (None: uncategorised)
    mastery_level: int | None
    epochs: tuple[Epoch, ...]

    @property
    def varies_unknown_share(self) -> bool:
        """Is the run a point of the %Unknown curve: its study varies build.frac_unknown, or
        it is outside a study and its set has Known and Unknown groups?"""
        if self.variant:
            return self.variant.get("build.frac_unknown") is not None
        return self.frac_unknown is not None

    @property
    def known_only(self) -> bool:
        """A D_Known run (METHODS B: the set without its Unknown examples)."""
        return self.variant.get("build.recipe") == "known-only"

    @property
    def early_stop(self) -> Epoch | None:
        """EARLY_STOP: the first epoch with the best dev accuracy (None without dev measurements)."""
        measured = [e for e in self.epochs if "dev" in e.accuracy]
        return max(measured, key=lambda e: e.accuracy["dev"]) if measured else None

    @property
    def convergence(self) -> Epoch | None:
        """CONVERGENCE: the last epoch measured."""
        return self.epochs[-1] if self.epochs else None


@dataclass(frozen=True)
class CategoryCounts:
    """Facts per relation and SliCK category from one model's probe with one settings key."""

    model: str
    estimator: str
    params_key: str
    counts: Mapping[str, Mapping[str, int]]  # relation -> category -> facts
    is_base: bool  # the base model of a stored run (else e.g. a fine-tuned model re-probed)


@dataclass(frozen=True)
class Analysis:
    """One stored analysis; `result` is the analysis module's result class (or one of ours)."""

    kind: str
    subject: str
    label: str  # the run's label and checkpoint, or the subject itself
    params: Mapping[str, Any]
    result: Any


@dataclass(frozen=True)
class SweepPoint:
    """One restoration of a sweep: k, mode, share of the change undone, QA metrics (0-1)."""

    fraction: float
    mode: str
    share_of_change_restored: float
    by_module: Mapping[str, float]  # module type -> share of the restored scalars
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RestoreSweep:
    points: tuple[SweepPoint, ...]
    concentration: tuple[tuple[float, float], ...]  # (top fraction, share of the total change)
    concentration_nonzero_base: tuple[tuple[float, float], ...]
    n_zero_base: int  # weights exactly 0 in the base: their r = |d| / 1e-8 can swamp the sum


@dataclass(frozen=True)
class Made:
    """A result of the report and the versions it was made with (empty: its record has none).
    A run resumed under other versions is one Made per environment."""

    kind: str  # "run", "probe settings" or "analysis"
    name: str  # the run's label, the settings key and estimator, the analysis and its label
    versions: Mapping[str, str]


@dataclass(frozen=True)
class Study:
    """Everything a report shows."""

    database: Path
    title: str
    runs: tuple[Run, ...]
    categories: tuple[CategoryCounts, ...]
    analyses: Mapping[str, tuple[Analysis, ...]]  # kind -> analyses, oldest first
    unreadable: tuple[str, ...]  # analyses stored in a shape this report cannot read
    failed: tuple[tuple[str, str], ...]  # (label, error) of the study runs that failed
    made: tuple[Made, ...] = ()  # the runs, probe settings and analyses shown, with their versions

    def of_kind(self, kind: str) -> tuple[Analysis, ...]:
        return self.analyses.get(kind, ())


def load_study(study_dir: str | Path) -> Study:
    """Read a workspace's database; a missing or empty one is an error that says what to run."""
    path = database_path(study_dir)
    if not Path(study_dir).is_dir() or not path.is_file():
        raise KnowshiftError(
            f"no results database {path}; give the folder that holds knowshift.db (a workspace or study folder)"
        )
    with Store(path) as store:
        studies = store.study_runs()
        runs = _runs(store, studies)
        categories = _category_counts(store)
        records = store.analyses()
        made = _versions_of(store, runs, categories)
    if not runs and not categories and not records:
        raise KnowshiftError(
            f"{path} holds no probe results, runs or analyses yet; run knowshift probe, train or study run first"
        )
    labels = {run.run_id: run.label for run in runs}
    analyses: dict[str, list[Analysis]] = defaultdict(list)
    unreadable = []
    for record in records:
        try:
            result = _revive(record["kind"], record["result"])
        except (AttributeError, KeyError, TypeError, ValueError):
            unreadable.append(f"{record['kind']} {record['subject']}")
            continue
        if result is not None:
            label = _subject_label(record["subject"], labels)
            analyses[record["kind"]].append(
                Analysis(record["kind"], record["subject"], label, record["params"], result)
            )
            made.append(Made("analysis", f"{record['kind']} {label}", record["versions"]))
    names = list(dict.fromkeys(s["study"] for s in studies))
    title = ", ".join(names) if names else Path(study_dir).resolve().name
    failed = tuple((_row_label(row, studies), str(row["variant"].get("error", "")))
                   for row in studies if row["status"] == "failed")  # fmt: skip
    by_kind = {k: tuple(v) for k, v in analyses.items()}
    return Study(path, title, runs, categories, by_kind, tuple(unreadable), failed, tuple(made))


def _versions_of(
    store: Store, runs: tuple[Run, ...], categories: tuple[CategoryCounts, ...]
) -> list[Made]:
    """The versions the runs (each start of a resumed one) and the probe settings (each set
    of versions that added results under them) were made with."""
    made = []
    for run in runs:
        config = store.run_config(run.run_id) or {}
        for versions in (config.get("versions", {}), *config.get("earlier_versions", [])):
            made.append(Made("run", run.label, versions))
    for key, estimator in dict.fromkeys((c.params_key, c.estimator) for c in categories):
        for versions in store.settings_versions(key) or [{}]:
            made.append(Made("probe settings", f"{key} ({estimator})", versions))
    return made


# --- runs ----------------------------------------------------------------------------------------


def _runs(store: Store, studies: list[dict]) -> tuple[Run, ...]:
    """Every run with a stored configuration, except those its study has dropped, labelled by
    what its study varied."""
    rows: dict[str, dict] = {}
    for row in studies:  # a run in several studies: the first row that still holds it
        if row["run_id"] not in rows or rows[row["run_id"]]["status"] == "dropped":
            rows[row["run_id"]] = row
    runs = []
    for run_id in store.run_ids():
        row, config = rows.get(run_id), store.run_config(run_id) or {}
        if row is not None and row["status"] == "dropped":
            continue
        variant, sizes = (row or {}).get("variant", {}), config.get("group_sizes") or {}
        label = _row_label(row, studies) if row else _folder_label(run_id, config)
        epochs = tuple(
            Epoch(r["epoch"], r["train_loss"], r["accuracy"]) for r in store.train_records(run_id)
        )
        level = variant.get("build.mastery_level")
        runs.append(
            Run(run_id, label, variant, (row or {}).get("status", ""), str(config.get("model", "?")),
                int(sizes.get("train", 0)), _frac_unknown(variant, sizes),
                None if level is None else int(level), epochs)
        )  # fmt: skip
    counts = Counter(run.label for run in runs)  # a label two runs share gets the run id added
    return tuple(
        dataclasses.replace(r, label=f"{r.label} ({r.run_id[:8]})") if counts[r.label] > 1 else r
        for r in runs
    )


def _row_label(row: Mapping[str, Any], studies: list[dict]) -> str:
    """A study run's label: the study's own ("D_Known"), else the grid values that differ
    between the runs of its study ("frac_unknown=0.5"), as the study runner names them."""
    variant = row["variant"]
    if variant.get("label"):
        return str(variant["label"])
    grid = [r["variant"] for r in studies if r["study"] == row["study"]]
    keys = [k for k in variant if k not in NOT_GRID]
    varied = [k for k in keys if len({repr(v.get(k)) for v in grid}) > 1] or keys
    return ", ".join(f"{k.split('.', 1)[-1]}={variant[k]}" for k in sorted(varied)) or row["run_id"]


def _folder_label(run_id: str, config: Mapping[str, Any]) -> str:
    """A run outside any study: its run folder's name, else its id."""
    return Path(config["out_dir"]).name if config.get("out_dir") else run_id


def _frac_unknown(variant: Mapping[str, Any], sizes: Mapping[str, int]) -> float | None:
    """The set's share of Unknown examples: the study's value, else counted from the set's
    Known and Unknown groups (None when its examples have no categories)."""
    if variant.get("build.frac_unknown") is not None:
        return float(variant["build.frac_unknown"])
    known, unknown = sizes.get("train/Known", 0), sizes.get("train/Unknown", 0)
    return unknown / (known + unknown) if known or unknown else None


def _subject_label(subject: str, labels: Mapping[str, str]) -> str:
    """A run analysis's subject ("run_id:checkpoint") as "label (checkpoint)"; a regression's
    (run ids joined by commas) as the number of runs."""
    run_id, _, checkpoint = subject.partition(":")
    if run_id in labels:
        return f"{labels[run_id]} ({checkpoint})" if checkpoint else labels[run_id]
    if "," in subject:
        return f"{subject.count(',') + 1} runs"
    return subject


# --- probe results -------------------------------------------------------------------------------


def _category_counts(store: Store) -> tuple[CategoryCounts, ...]:
    """Category counts per (model, settings, estimator): the runs' base models first (named as
    the runs name them), then other models (e.g. fine-tuned ones re-probed), most facts first."""
    names = {}
    for run_id in store.run_ids():
        config = store.run_config(run_id) or {}
        if config.get("base_fingerprint"):
            names[config["base_fingerprint"]] = str(config.get("model"))
    rows = store.connection.execute(
        "SELECT model_fingerprint, params_key, estimator, relation, category, COUNT(*)"
        " FROM probe_results WHERE category IS NOT NULL GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4"
    ).fetchall()
    grouped: dict[tuple[str, str, str], dict[str, Counter]] = defaultdict(
        lambda: defaultdict(Counter)
    )
    for fingerprint, key, estimator, relation, category, n in rows:
        grouped[fingerprint, key, estimator][relation][category] += n
    tables = [
        CategoryCounts(names.get(fingerprint, f"model {fingerprint}"), estimator, key,
                       {relation: dict(c) for relation, c in by_relation.items()}, fingerprint in names)
        for (fingerprint, key, estimator), by_relation in grouped.items()
    ]  # fmt: skip
    return tuple(sorted(tables, key=lambda t: (not t.is_base, -_n_facts(t))))


def _n_facts(counts: CategoryCounts) -> int:
    return sum(sum(by_category.values()) for by_category in counts.counts.values())


# --- analyses --------------------------------------------------------------------------------------


def _revive(kind: str, result: Mapping[str, Any]) -> Any:
    """The stored result as a frozen record; None for kinds the report does not draw."""
    readers = {
        "shift": lambda r: _build(ShiftResult, r),
        "consistency": lambda r: _build(ConsistencyResult, r),
        "token-kl": lambda r: _build(TokenKLResult, r),
        "benchmarks": lambda r: _build(BenchmarkResult, r),
        "regression": _regression,
        "collapse": _collapse,
        "restore-sweep": _sweep,
    }
    return readers[kind](result) if kind in readers else None


def _build(cls: type, record: Mapping[str, Any]) -> Any:
    """`cls` from a stored record: fields it does not know are dropped; a missing field
    without a default is a TypeError (the record is from another version)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in record.items() if k in names})


def _regression(result: Mapping[str, Any]) -> RegressionResult:
    fits = {
        target: OlsFit(tuple(_build(Coefficient, c) for c in fit["coefficients"]), fit["r_squared"], fit["n_points"], fit["confidence"])
        for target, fit in result["fits"].items()
    }  # fmt: skip
    points = tuple(_build(RegressionPoint, p) for p in result["points"])
    return RegressionResult(fits, points, tuple(result["runs"]))


def _collapse(result: Mapping[str, Any]) -> CollapseResult:
    before, after = _answer_stats(result["before"]), _answer_stats(result["after"])
    return CollapseResult(before, after, float(result["explode_share"]))


def _answer_stats(stats: Mapping[str, Any]) -> CollapseStats:
    exploded = tuple(_build(ExplodedAnswer, e) for e in stats.get("exploded", ()))
    fields = {"distinct_by_relation": {}, **{k: v for k, v in stats.items() if k != "exploded"}}
    return _build(CollapseStats, {**fields, "exploded": exploded})


def _sweep(result: Mapping[str, Any]) -> RestoreSweep:
    points = []
    for p in result["points"]:
        report = p.get("report") or {}
        by_module = {m: g["share_of_restored"] for m, g in (report.get("by_module") or {}).items()}
        points.append(
            SweepPoint(
                float(p["fraction"]),
                p["mode"],
                float(report.get("share_of_change_restored", 0.0)),
                by_module,
                p["metrics"],
            )
        )
    stats = result.get("stats") or {}
    curve = lambda name: tuple((float(f), float(s)) for f, s in stats.get(name) or ())  # noqa: E731
    return RestoreSweep(
        tuple(points), curve("concentration"), curve("concentration_nonzero_base"),
        int(stats.get("n_zero_base", 0)),
    )  # fmt: skip
