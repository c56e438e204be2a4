"""The results database (SQLite, WAL mode), one file per workspace.

Probe results are keyed by (model fingerprint, probe settings key, fact id): a rerun with the same
model and settings finds what is done and skips it, and an interrupted probe resumes from the last
committed batch. Every batch is one transaction, so a kill never leaves half a batch behind.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from knowshift.digest import json_digest
from knowshift.errors import KnowshiftError
from knowshift.types import Category, ProbeResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS probe_settings (
    params_key TEXT PRIMARY KEY,
    estimator TEXT NOT NULL,
    params TEXT NOT NULL,
    versions TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS probe_versions (
    params_key TEXT NOT NULL,
    versions TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (params_key, versions)
);
CREATE TABLE IF NOT EXISTS train_records (
    run_id TEXT NOT NULL,
    epoch REAL NOT NULL,
    step INTEGER NOT NULL,
    train_loss REAL,
    accuracy TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS train_runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS analyses (
    analysis_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    versions TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS study_runs (
    study TEXT NOT NULL,
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (study, run_id)
);
CREATE TABLE IF NOT EXISTS probe_results (
    model_fingerprint TEXT NOT NULL,
    params_key TEXT NOT NULL,
    fact_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    split TEXT NOT NULL,
    estimator TEXT NOT NULL,
    p_greedy REAL,
    p_sampled REAL NOT NULL,
    category TEXT,
    category_probs TEXT NOT NULL,
    mastery_level INTEGER,
    samples TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (model_fingerprint, params_key, fact_id)
);
"""

SETTINGS_COLUMNS = ("params_key", "estimator", "params", "versions", "created_at")
RESULT_COLUMNS = (
    "fact_id", "relation", "split", "estimator", "params_key", "model_fingerprint",
    "p_greedy", "p_sampled", "category", "category_probs", "mastery_level", "samples",
)  # fmt: skip


def database_path(workspace: str | Path) -> Path:
    """Where a workspace keeps its results database."""
    return Path(workspace) / "knowshift.db"


BUSY_SECONDS = 60  # how long a writer waits for another process's transaction


def _initialise(connection: sqlite3.Connection) -> None:
    """WAL mode and the schema. Several processes opening a new database at once can get
    "database is locked" here without SQLite's busy handler waiting (switching the journal mode
    needs the database to itself), so this retries until BUSY_SECONDS have passed."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(SCHEMA)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02 + 0.08 * random.random())  # jitter: the openers do not retry in step


class Store:
    """Access to one workspace's results database; use it as a context manager to close it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # e.g. the workspace names a file
            raise KnowshiftError(
                f"cannot create the folder {self.path.parent} ({error.strerror}); "
                "point --workspace at a folder"
            ) from None
        connection = None
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            _initialise(connection)
            _check_schema(connection)
        except sqlite3.DatabaseError as error:
            if connection is not None:
                connection.close()
            raise KnowshiftError(
                f"{self.path} is not a usable knowshift database ({error}); "
                "point --workspace at another folder"
            ) from None
        self.connection = connection

    @classmethod
    def for_workspace(cls, workspace: str | Path) -> Store:
        return cls(database_path(workspace))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def register_settings(
        self, params_key: str, estimator: str, params: dict, versions: dict
    ) -> None:
        """Record what a settings key stands for (idempotent)."""
        self.connection.execute(
            "INSERT INTO probe_settings VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                params_key,
                estimator,
                json.dumps(params, sort_keys=True),
                json.dumps(versions),
                time.time(),
            ),
        )

    def settings_params(self, params_key: str) -> dict | None:
        """The parameters a settings key stands for, or None when it is not stored."""
        row = self.connection.execute(
            "SELECT params FROM probe_settings WHERE params_key = ?", (params_key,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def add_settings_versions(self, params_key: str, versions: dict) -> None:
        """Record that results under a settings key were (also) made with `versions`: a key
        leaves versions out, so results added after an upgrade join the earlier ones."""
        self.connection.execute(
            "INSERT INTO probe_versions VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (params_key, json.dumps(versions, sort_keys=True), time.time()),
        )

    def settings_versions(self, params_key: str) -> list[dict]:
        """Every set of versions results under a settings key were made with, the first probe's
        first; [] when the key is not stored."""
        first = self.connection.execute(
            "SELECT versions FROM probe_settings WHERE params_key = ?", (params_key,)
        ).fetchone()
        if first is None:
            return []
        later = self.connection.execute(
            "SELECT versions FROM probe_versions WHERE params_key = ? ORDER BY created_at",
            (params_key,),
        ).fetchall()
        found = [json.loads(first[0])]
        for (text,) in later:
            if json.loads(text) not in found:
                found.append(json.loads(text))
        return found

    def settings_with_results(
        self, model_fingerprint: str, estimator: str
    ) -> list[tuple[str, dict]]:
        """(key, parameters) of every settings key with stored results for a model and estimator."""
        rows = self.connection.execute(
            "SELECT DISTINCT r.params_key, s.params FROM probe_results r"
            " JOIN probe_settings s ON s.params_key = r.params_key"
            " WHERE r.model_fingerprint = ? AND r.estimator = ? ORDER BY r.params_key",
            (model_fingerprint, estimator),
        ).fetchall()
        return [(key, json.loads(text)) for key, text in rows]

    def register_run(self, run_id: str, config: dict) -> None:
        """Record a training run's resolved configuration (a rerun refreshes it)."""
        self.connection.execute(
            "INSERT INTO train_runs VALUES (?, ?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET config = excluded.config",
            (run_id, json.dumps(config, sort_keys=True), time.time()),
        )

    def run_config(self, run_id: str) -> dict | None:
        """A run's stored configuration, or None when the run is not in this database."""
        row = self.connection.execute(
            "SELECT config FROM train_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def run_ids(self) -> list[str]:
        """Every run in the database, oldest first."""
        rows = self.connection.execute("SELECT run_id FROM train_runs ORDER BY created_at")
        return [row[0] for row in rows]

    def put_study_run(self, study: str, run_id: str, variant: dict, status: str) -> None:
        """Record a study's run: its grid values (dotted key -> value) and its status
        ("pending", "running", "done" or "failed")."""
        self.connection.execute(
            "INSERT INTO study_runs VALUES (?, ?, ?, ?, ?) ON CONFLICT (study, run_id)"
            " DO UPDATE SET variant = excluded.variant, status = excluded.status,"
            " updated_at = excluded.updated_at",
            (study, run_id, json.dumps(variant, sort_keys=True), status, time.time()),
        )

    def study_runs(self, study: str | None = None) -> list[dict]:
        """A study's runs (or every study's), in the order they were first recorded."""
        query = "SELECT study, run_id, variant, status FROM study_runs"
        rows = self.connection.execute(
            query + (" WHERE study = ? ORDER BY rowid" if study else " ORDER BY rowid"),
            (study,) if study else (),
        )
        return [
            {"study": s, "run_id": r, "variant": json.loads(v), "status": st}
            for s, r, v, st in rows
        ]

    def put_analysis(self, kind: str, subject: str, params: dict, result: dict) -> str:
        """Store one analysis result; the same kind, subject and parameters replace the earlier
        one. Returns the analysis id (a hash of kind, subject and parameters)."""
        from knowshift.versions import environment_versions

        analysis_id = json_digest([kind, subject, params])
        self.connection.execute(
            "INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                analysis_id,
                kind,
                subject,
                json.dumps(params, sort_keys=True),
                json.dumps(result, sort_keys=True),
                json.dumps(environment_versions()),
                time.time(),
            ),
        )
        return analysis_id

    def analyses(self, kind: str | None = None, subject: str | None = None) -> list[dict]:
        """Stored analyses (newest last), optionally of one kind and/or subject, each with the
        versions it was made with."""
        query = (
            "SELECT analysis_id, kind, subject, params, result, versions, created_at"
            " FROM analyses WHERE 1=1"
        )
        args: list[str] = []
        if kind:
            query, args = query + " AND kind = ?", [*args, kind]
        if subject:
            query, args = query + " AND subject = ?", [*args, subject]
        rows = self.connection.execute(query + " ORDER BY created_at", args)
        return [
            {"analysis_id": a, "kind": k, "subject": s, "params": json.loads(p),
             "result": json.loads(r), "versions": json.loads(v), "created_at": t}
            for a, k, s, p, r, v, t in rows
        ]  # fmt: skip

    def put_train_record(
        self, run_id: str, epoch: float, step: int, loss: float, accuracy: dict
    ) -> None:
        """One measurement of a run; a resumed run re-measuring an epoch replaces it."""
        self.connection.execute(
            "INSERT OR REPLACE INTO train_records VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, epoch, step, loss, json.dumps(accuracy, sort_keys=True), time.time()),
        )

    def train_records(self, run_id: str) -> list[dict]:
        """A run's measurements in epoch order."""
        rows = self.connection.execute(
            "SELECT epoch, step, train_loss, accuracy FROM train_records WHERE run_id = ? ORDER BY epoch",
            (run_id,),
        )
        return [
            {"epoch": e, "step": s, "train_loss": loss, "accuracy": json.loads(a)}
            for e, s, loss, a in rows
        ]

    def probed_fact_ids(
        self, model_fingerprint: str, params_key: str, fact_ids: Sequence[str] | None = None
    ) -> set[str]:
        """The ids of the facts with stored results for a model and settings (of `fact_ids`
        only, when given: a block's worth, looked up by key)."""
        query = "SELECT fact_id FROM probe_results WHERE model_fingerprint = ? AND params_key = ?"
        if fact_ids is None:
            rows = self.connection.execute(query, (model_fingerprint, params_key))
            return {row[0] for row in rows}
        found: set[str] = set()
        for start in range(0, len(fact_ids), 500):  # SQLite limits the parameters per query
            part = list(fact_ids[start : start + 500])
            marks = ", ".join("?" * len(part))
            rows = self.connection.execute(
                f"{query} AND fact_id IN ({marks})", (model_fingerprint, params_key, *part)
            )
            found.update(row[0] for row in rows)
        return found

    def put_probe_results(
        self, results: Sequence[ProbeResult], facts_info: dict[str, tuple[str, str]]
    ) -> None:
        """Store a batch atomically; `facts_info` maps fact id to (relation, split)."""
        now = time.time()
        rows = [
            (
                r.model_fingerprint,
                r.params_key,
                r.fact_id,
                *facts_info[r.fact_id],
                r.estimator,
                r.p_greedy,
                r.p_sampled,
                r.category.value if r.category else None,
                json.dumps(r.category_probs),
                r.mastery_level,
                json.dumps(r.samples),
                now,
            )  # fmt: skip
            for r in results
        ]
        # ON CONFLICT skips only a key already stored (the first result stays); unlike
        # INSERT OR IGNORE it does not silently drop a row that breaks NOT NULL.
        with self._transaction():
            self.connection.executemany(
                "INSERT INTO probe_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                rows,
            )

    def copy_probe_results(
        self, source: Store, model_fingerprint: str, params_key: str, fact_ids: Sequence[str]
    ) -> int:
        """Copy `source`'s stored results of a model and settings for `fact_ids` (and what the
        settings key stands for) into this database, keeping rows already here. Returns the
        number of rows added. Rows are copied as stored, so results are identical on both sides."""
        settings = source.connection.execute(
            f"SELECT {', '.join(SETTINGS_COLUMNS)} FROM probe_settings WHERE params_key = ?",
            (params_key,),
        ).fetchone()
        if settings is None:
            return 0
        names = (*RESULT_COLUMNS, "created_at")
        columns = ", ".join(names)
        query = (f"SELECT {columns} FROM probe_results WHERE model_fingerprint = ? "
                 "AND params_key = ? AND fact_id IN ")  # fmt: skip
        rows = []
        for start in range(0, len(fact_ids), 500):  # SQLite limits the parameters per query
            part = list(fact_ids[start : start + 500])
            marks = "(" + ", ".join("?" * len(part)) + ")"
            rows += source.connection.execute(
                query + marks, (model_fingerprint, params_key, *part)
            ).fetchall()
        with self._transaction():
            self.connection.execute(
                "INSERT INTO probe_settings VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", settings
            )
            added = self.connection.total_changes
            self.connection.executemany(
                f"INSERT INTO probe_results ({columns}) VALUES "
                f"({', '.join('?' * len(names))}) ON CONFLICT DO NOTHING",
                rows,
            )
        return self.connection.total_changes - added

    def merge_runs(self, source: Store, run_ids: Iterable[str]) -> int:
        """Copy into this database what `source` holds of the training runs `run_ids` (their
        config, per-epoch records and analyses, subject "<run id>:..."), replacing this
        database's rows of those runs, and every probe result and settings row it lacks (an
        analysis may probe the fine-tuned model). Study bookkeeping (study_runs) is not copied.
        One transaction; returns the number of rows written. A Ray task's database is merged
        into the study's with it, and the study's probe results into a task's (no runs)."""
        ids = sorted(set(run_ids))
        marks = ", ".join("?" * len(ids))
        # Per table: the rows to take, and whether a row already here is kept or replaced.
        tables = [("probe_settings", "true", "ON CONFLICT DO NOTHING", []),
                  ("probe_results", "true", "ON CONFLICT DO NOTHING", [])]  # fmt: skip
        if ids:
            prefixes = " OR ".join(["substr(subject, 1, ?) = ?"] * len(ids))
            tables += [("train_runs", f"run_id IN ({marks})", "", ids),
                       ("train_records", f"run_id IN ({marks})", "", ids),
                       ("analyses", prefixes, "", [a for i in ids for a in (len(i) + 1, f"{i}:")])]  # fmt: skip
        self.connection.execute("ATTACH DATABASE ? AS source", (str(source.path),))
        try:
            with self._transaction():
                before = self.connection.total_changes
                for table, where, conflict, arguments in tables:
                    columns = ", ".join(
                        row[1]
                        for row in self.connection.execute(f"PRAGMA main.table_info({table})")
                    )
                    verb = "INSERT" if conflict else "INSERT OR REPLACE"
                    self.connection.execute(
                        f"{verb} INTO main.{table} ({columns}) "
                        f"SELECT {columns} FROM source.{table} WHERE {where} {conflict}",
                        arguments,
                    )
                return self.connection.total_changes - before
        finally:
            self.connection.execute("DETACH DATABASE source")

    def probe_results(
        self, model_fingerprint: str, params_key: str, fact_ids: Iterable[str] | None = None
    ) -> list[ProbeResult]:
        """Stored results for a model and settings (optionally only some facts)."""
        rows = self.connection.execute(
            "SELECT fact_id, estimator, params_key, model_fingerprint, p_greedy, p_sampled, category,"
            " category_probs, mastery_level, samples FROM probe_results"
            " WHERE model_fingerprint = ? AND params_key = ? ORDER BY fact_id",
            (model_fingerprint, params_key),
        )
        wanted = set(fact_ids) if fact_ids is not None else None
        return [_to_result(row) for row in rows if wanted is None or row[0] in wanted]

    def probe_rows(
        self, model_fingerprint: str | None = None, params_key: str | None = None
    ) -> list[dict]:
        """Flat rows (for export), optionally filtered."""
        query = f"SELECT {', '.join(RESULT_COLUMNS)} FROM probe_results WHERE 1=1"
        args: list[str] = []
        if model_fingerprint:
            query, args = query + " AND model_fingerprint = ?", [*args, model_fingerprint]
        if params_key:
            query, args = query + " AND params_key = ?", [*args, params_key]
        rows = self.connection.execute(
            query + " ORDER BY model_fingerprint, params_key, fact_id", args
        )
        records = []
        for row in rows:
            record = dict(zip(RESULT_COLUMNS, row, strict=True))
            record["category_probs"] = json.loads(record["category_probs"])
            record["samples"] = json.loads(record["samples"])
            records.append(record)
        return records

    def _transaction(self):
        return _Transaction(self.connection)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.connection.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def _check_schema(connection: sqlite3.Connection) -> None:
    """Refuse a SQLite file whose tables of the same names hold other columns (another tool's)."""
    for table, columns in (("probe_results", {*RESULT_COLUMNS, "created_at"}),
                           ("probe_settings", set(SETTINGS_COLUMNS))):  # fmt: skip
        found = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if found != columns:
            raise sqlite3.DatabaseError(f"table {table} has columns {', '.join(sorted(found))}")


def _to_result(row) -> ProbeResult:
    (
        fact_id,
        estimator,
        params_key,
        fingerprint,
        p_greedy,
        p_sampled,
        category,
        probs,
        level,
        samples,
    ) = row
    return ProbeResult(
        fact_id=fact_id,
        estimator=estimator,
        params_key=params_key,
        model_fingerprint=fingerprint,
        p_greedy=p_greedy,
        p_sampled=p_sampled,
        category=Category(category) if category else None,
        category_probs=tuple(json.loads(probs)),
        mastery_level=level,
        samples=tuple(json.loads(samples)),
    )
