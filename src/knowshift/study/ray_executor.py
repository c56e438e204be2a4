"""The Ray executor of a study: `knowshift study run FILE --executor ray [--address ...]`.

The driver (the `study run` process) does what a local study does up to the plan: it probes the
base model once, builds every run's set and records the plan. Probing stays on the driver since
every set is built from its results; on a cluster whose head has no GPU, run the driver itself
on a GPU node (`ray job submit --entrypoint-num-gpus 1 -- knowshift study run ...`) or reuse a
probe cache (--probe-cache). Then every unfinished run is one Ray task with the resources it
asks for (--cpus-per-run, --gpus-per-run) and Ray's retries (--retries), running the run's stages
with `runner.execute_run`, as the local executor does.

Only the driver writes the study's database: SQLite on a network filesystem with writers on many
nodes is unsafe. A task works on a database of its own on its node's disk, seeded with the
study's probe results, and saves it whole to its run folder (runs/<id>/task.db) before each
stage is logged done and when it ends; a retry starts from that copy. When the task has ended,
done or failed, the driver merges the copy into the study's database (`Store.merge_runs`),
removes it, and records the outcome; a copy a crashed driver left is merged on the next run.

The study folder must be on a filesystem every node sees at the same path (sets, checkpoints
and stage logs live there, as with Ray Train's storage_path): a task first reads a token the
driver wrote there and fails, naming its node, when it cannot.

Progress: a task's stage lines go through a Ray queue that the driver prints while it waits,
each led by the run's tag, with a line for every failed attempt; what a task prints itself
(tables, progress bars) stays in Ray's logs.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from knowshift import atomic
from knowshift.errors import KnowshiftError
from knowshift.study.runner import Finished, execute_run, one_line
from knowshift.study.stages import Echo, RunContext, StageLog

TASK_DB = "task.db"  # a task's database, saved whole in its run folder
TOKEN_FILE = ".ray-token"  # the driver's token: a task that reads it sees the study folder
POLL_SECONDS = 0.5


def import_ray():
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise KnowshiftError(
            "--executor ray needs Ray, which is not installed: pip install 'knowshift[ray]'"
        ) from None
    return ray


class RayExecutor:
    """Runs each run of a study as a Ray task (see the module's docstring); `close` it."""

    def __init__(self, address: str | None, device: str, *, cpus_per_run: float = 1,
                 gpus_per_run: float | None = None, retries: int = 1):  # fmt: skip
        self.ray = import_ray()
        self.owned = connect(self.ray, address)  # shut down on close when this connected
        try:
            gpus = default_gpus(self.ray, device) if gpus_per_run is None else gpus_per_run
        except KnowshiftError:
            self.close()
            raise
        self.options = {"num_cpus": cpus_per_run, "num_gpus": gpus, "max_retries": retries,
                        "retry_exceptions": True}  # fmt: skip
        self.remote = self.ray.remote(run_task)
        self.n_attempts = retries + 1
        self.token = uuid.uuid4().hex
        self.pending: dict[Any, tuple[RunContext, Finished, str]] = {}
        self.attempts: dict[str, int] = {}
        self.queue = self.seed = self.echo = None
        self.facts: dict[str, Any] = {}  # facts source -> its object in Ray's store

    def prepare(self, store, study_dir: Path, echo: Echo) -> None:
        """Write the token tasks look for; merge the task databases a crashed driver left."""
        self.echo = echo
        atomic.write_text(study_dir / TOKEN_FILE, self.token)
        for saved in sorted(study_dir.glob(f"runs/*/{TASK_DB}")):
            merge_task_database(store, saved.parent)
            echo(f"merged the results left in {saved}")
        resources = self.ray.cluster_resources()
        echo(f"ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; each "
             f"run takes {self.options['num_cpus']:g} CPUs, {self.options['num_gpus']:g} GPUs, "
             f"{self.n_attempts} attempts at most")  # fmt: skip

    def submit(self, tag: str, ctx: RunContext, finished: Finished) -> None:
        """Start the run's task; the first call also sets up the queue and the seed database."""
        from ray.util.queue import Queue

        if self.queue is None:
            self.queue = Queue(actor_options={"num_cpus": 0})
            self.seed = self.ray.put(seed_database(ctx.store))
        source = ctx.run.config.facts.source
        if source not in self.facts:
            self.facts[source] = self.ray.put(ctx.facts)
        remote = self.remote.options(**self.options, name=f"knowshift {tag}")
        portable = replace(ctx, facts=None, store=None, echo=None)  # sent without live objects
        ref = remote.remote(portable, self.facts[source], tag, self.token, self.seed, self.queue)
        self.pending[ref] = (ctx, finished, tag)

    def wait(self) -> None:
        """Print the tasks' progress until every task has ended; merge and record each."""
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=POLL_SECONDS)
            self._print_progress()
            for ref in ready:
                ctx, finished, _tag = self.pending.pop(ref)
                error, details = None, None
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayTaskError as failure:  # the run's own error
                    error, details = failure.cause or failure, str(failure)
                except self.ray.exceptions.RayError as failure:  # a worker or node lost
                    error, details = failure, str(failure)
                self._print_progress()
                merge_task_database(ctx.store, ctx.run_dir)
                finished(ctx, error, details)

    def close(self) -> None:
        """Stop the queue; disconnect from Ray (stopping the instance it started) if this
        executor connected."""
        if self.queue is not None:
            self.queue.shutdown()
            self.queue = None
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()

    def _print_progress(self) -> None:
        """Print the lines the tasks have sent: stage lines, attempts, failed attempts."""
        if self.queue is None:
            return
        for run_id, tag, kind, text in self.queue.get_nowait_batch(self.queue.qsize()):
            if kind == "start":
                self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
                k = self.attempts[run_id]
                self.echo(f"{tag}: started on {text}" + (f" (attempt {k} of {self.n_attempts})"
                                                        if k > 1 else ""))  # fmt: skip
            elif kind == "failed":
                k = self.attempts.get(run_id, 1)
                self.echo(f"{tag}: FAILED (attempt {k} of {self.n_attempts}): {text}")
            else:
                self.echo(text)


def connect(ray, address: str | None) -> bool:
    """Connect to the Ray cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"; None:
    start a local instance); False when this process is already connected (a library caller's
    connection, used as it is). A cluster that cannot be reached is a one-line error."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None  # as ray.init reads it
    if address and address != "auto" and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        # The tasks' own output (tables, progress bars) stays in Ray's logs (`ray logs`, the
        # dashboard): the driver prints their stage lines, which say which run they are of.
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        where = f"--address {address}: cannot connect to Ray" if address else (
            "cannot start a local Ray instance")  # fmt: skip
        raise KnowshiftError(
            f"{where} ({one_line(error)}); start a cluster with `ray start --head` or give its "
            "address (HOST:6379, ray://HOST:10001, auto)"
        ) from None
    return True


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at HOST:PORT (Ray itself would retry for a minute)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise KnowshiftError(
            f"--address {address}: give HOST:PORT, ray://HOST:PORT or auto (e.g. 10.0.0.5:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise KnowshiftError(
            f"--address {address}: no Ray cluster answers there ({error.strerror or error}); "
            "start one with `ray start --head` or check the address"
        ) from None


def default_gpus(ray, device: str) -> float:
    """GPUs per run when --gpus-per-run is not given: 1 on a cluster with GPUs unless the
    device is the CPU."""
    n_gpus = ray.cluster_resources().get("GPU", 0)
    if device.startswith("cuda") and not n_gpus:
        raise KnowshiftError(f"--device {device}, but the Ray cluster has no GPU; use --device "
                             "auto or cpu, or add GPU nodes")  # fmt: skip
    return 1 if n_gpus and device != "cpu" else 0


def seed_database(study_store) -> bytes:
    """A database holding the study's probe results (what a run's stages read), as bytes."""
    from knowshift.store import Store

    with tempfile.TemporaryDirectory(prefix="knowshift-seed-") as folder:
        path = Path(folder) / "knowshift.db"
        with Store(path) as seed:
            seed.merge_runs(study_store, [])
        return path.read_bytes()


def merge_task_database(study_store, run_dir: Path) -> None:
    """Merge a task's saved database (if any) into the study's, then remove it."""
    from knowshift.store import Store

    saved = run_dir / TASK_DB
    if not saved.is_file():
        return
    train_run_id = StageLog(run_dir).train_run_id()
    with tempfile.TemporaryDirectory(prefix="knowshift-merge-") as folder:
        local = Path(folder) / "knowshift.db"  # read on local disk, not on the shared one
        shutil.copyfile(saved, local)
        with Store(local) as task_store:
            study_store.merge_runs(task_store, [train_run_id] if train_run_id else [])
    saved.unlink()


# --- in the task, on a node of the cluster --------------------------------------------------------


def run_task(ctx: RunContext, facts, tag: str, token: str, seed: bytes, queue) -> None:
    """A run's stages on a Ray worker, against a database of its own (module docstring)."""
    from knowshift.models.loader import quiet_transformers
    from knowshift.store import Store

    def send(kind: str, text: str) -> None:
        queue.put((ctx.run.run_id, tag, kind, text))

    def echo(line: str) -> None:
        send("line", line if line.startswith(tag) else f"{tag}: {line.strip()}")

    send("start", socket.gethostname())
    try:
        _check_shared_folder(ctx.study_dir, token)
        quiet_transformers()
        saved = ctx.run_dir / TASK_DB
        with tempfile.TemporaryDirectory(prefix="knowshift-run-") as folder:
            local = Path(folder) / "knowshift.db"  # analyses take its folder as workspace
            local.write_bytes(saved.read_bytes() if saved.is_file() else seed)
            with Store(local) as store:
                log = StageLog(ctx.run_dir)
                log.before_mark = lambda: _save(store, saved, log, ctx.run_dir)
                try:
                    execute_run(replace(ctx, facts=facts, store=store, echo=echo), log, tag)
                finally:
                    _save(store, saved, log, ctx.run_dir)
    except Exception as error:
        send("failed", one_line(error))
        raise


def _check_shared_folder(study_dir: Path, token: str) -> None:
    path = study_dir / TOKEN_FILE
    if not path.is_file() or path.read_text().strip() != token:
        raise KnowshiftError(
            f"node {socket.gethostname()} does not see the study folder {study_dir} (no "
            f"{TOKEN_FILE} of this study run there): put the study folder on a filesystem every "
            "node mounts at the same path (e.g. NFS), and give that path to --out"
        )


def _save(store, saved: Path, log: StageLog, run_dir: Path) -> None:
    """Copy the task's database whole to the run folder (replacing the previous copy)."""
    _backfill_records(store, log, run_dir)
    copy = store.path.with_name("copy.db")
    copy.unlink(missing_ok=True)
    store.connection.execute("VACUUM INTO ?", (str(copy),))
    with atomic.writing(saved) as tmp:
        shutil.copyfile(copy, tmp)
    copy.unlink()


def _backfill_records(store, log: StageLog, run_dir: Path) -> None:
    """Store the epochs of metrics.jsonl the task's database lacks: an attempt that died in
    training took its records along, and its retry resumes after them without measuring again."""
    from knowshift.train.loop import read_metrics

    run_id = log.train_run_id()
    if run_id is None:
        return
    stored = {record["epoch"] for record in store.train_records(run_id)}
    for record in read_metrics(run_dir / "metrics.jsonl"):  # a torn last line is dropped
        if record.epoch not in stored:
            store.put_train_record(run_id, record.epoch, record.step, record.train_loss,
                                   record.accuracy)  # fmt: skip
