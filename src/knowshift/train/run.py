"""A fine-tuning run from a built set: the entry point of the train stage.

    result = run_training(data_dir, model, out_dir, config, store)

reads the set `knowshift build` wrote, finds the base model's categories of the held-out facts
in the store, builds what to measure after each epoch, trains, and records every measurement in
the run folder and the results database under the run's id (a hash of its resolved config).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from knowshift import atomic
from knowshift.digest import json_digest
from knowshift.errors import KnowshiftError
from knowshift.store import Store
from knowshift.train.config import TrainConfig
from knowshift.train.items import example_items, heldout_items
from knowshift.train.launch import (
    is_main_process,
    launch_device,
    launch_record,
    training_device,
)
from knowshift.train.loop import EpochRecord, TrainResult, resolved_precision, train


def heldout_sizes(n_examples: int) -> tuple[int, int]:
    """Default dev and test facts measured per epoch for a set of `n_examples`: enough for a
    usable estimate, few enough that measuring costs about a quarter of an epoch's training."""
    return max(20, min(200, n_examples // 2)), max(50, min(500, 3 * n_examples // 2))


def run_id_of(config: dict) -> str:
    """The run's id: a hash of its resolved configuration."""
    return json_digest(config)


def run_identity(training_set, model: str, adapter: str | None, config: TrainConfig,
                 n_dev: int | None, n_test: int | None, facts) -> dict:  # fmt: skip
    """What makes a run what it is (its id is the hash of this): the set's content, the model,
    the settings, the held-out sizes (None: the set's default) and the facts' content, so an
    edited fact file measures other held-out items and is another run."""
    from knowshift.probe.run import facts_digest

    manifest = training_set.manifest
    default_dev, default_test = heldout_sizes(len(training_set.examples))
    return {
        "data": manifest.examples_digest, "model": model, "adapter": adapter,
        "base_fingerprint": manifest.model_fingerprint, "train": asdict(config),
        "n_dev": n_dev if n_dev is not None else default_dev,
        "n_test": n_test if n_test is not None else default_test,
        "facts": facts.source, "facts_digest": facts_digest(facts),
    }  # fmt: skip


def run_training(
    data_dir: str | Path,
    model: str,
    out_dir: str | Path,
    config: TrainConfig,
    store: Store,
    *,
    adapter: str | None = None,
    facts_spec: str | None = None,
    n_dev: int | None = None,
    n_test: int | None = None,
    device: str = "auto",
) -> tuple[str, TrainResult]:
    """Fine-tune `model` on the set in `data_dir`, measuring after every epoch.

    `n_dev` / `n_test` held-out facts are measured per epoch; by default they scale with the
    set (dev min(200, n/2), test min(500, 1.5 n)) so measuring costs about a quarter of an
    epoch's training; pass larger numbers for tighter estimates.
    """
    from knowshift.facts import load_facts
    from knowshift.mixtures import read_training_set
    from knowshift.models import load_model

    # 1. The set, its facts, and the base model's categories of the held-out facts.
    config.validate()
    training_set = read_training_set(data_dir)
    manifest = training_set.manifest
    facts = load_facts(facts_spec or manifest.facts_source)
    categories = {
        r.fact_id: r.category
        for r in store.probe_results(manifest.model_fingerprint, manifest.params_key)
    }
    # 2. The run's identity; what to measure after each epoch.
    resolved = run_identity(training_set, model, adapter, config, n_dev, n_test, facts)
    train_relations = {e.relation for e in training_set.examples}
    items = example_items(training_set.examples)
    items += heldout_items(facts, categories, train_relations, manifest.spec.get("template", "plain"),
                           resolved["n_dev"], resolved["n_test"])  # fmt: skip
    out_dir = Path(out_dir)
    with _run_lock(out_dir):  # one process at a time trains into a folder
        run_id = _folder_run_id(out_dir, run_id_of(resolved), resolved)
        # 3. The model (in float32 weights; `precision` sets the autocast), loaded before the
        # run is recorded anywhere, so a model that fails to load leaves no trace of the run.
        # Under `accelerate launch` each process loads its own copy, on its own device.
        loaded = load_model(model, device=launch_device(device), dtype="float32", adapter=adapter)
        # What it ran on is recorded beside the run, not in its id: a launch of N processes
        # computes what one process does (the batch is global), so it is the same run.
        trains_on = training_device(loaded.device)
        environment = {"device": str(trains_on), "precision": resolved_precision(config, trains_on),
                       **launch_record()}  # fmt: skip
        if is_main_process():  # the other processes of a launch write nothing
            earlier = _earlier_versions(store, run_id, out_dir)  # a resumed run's, if others
            _claim_folder(out_dir, run_id, resolved, Path(data_dir).resolve(), environment)
            _register(store, run_id, {**resolved, **environment}, training_set, items, out_dir,
                      Path(data_dir), earlier)  # fmt: skip
        # 4. Train, recording as it goes.
        pairs = [(e.prompt, e.completion) for e in training_set.examples]

        def record(r: EpochRecord) -> None:
            store.put_train_record(run_id, r.epoch, r.step, r.train_loss, r.accuracy)

        return run_id, train(loaded, pairs, items, config, out_dir, on_record=record)


def _register(store: Store, run_id: str, resolved: dict, training_set, items, out_dir: Path,
              data_dir: Path, earlier_versions: list[dict]) -> None:  # fmt: skip
    """The run's config in the store, and beside its identity what it ran with (versions,
    device, precision; `earlier_versions`: those of its earlier starts, where they differ) and
    what analyses need later (group sizes turn fitted shares into counts)."""
    from knowshift.versions import environment_versions

    manifest = training_set.manifest
    group_sizes = Counter(group for item in items for group in item.groups)
    store.register_run(
        run_id,
        {**resolved, "group_sizes": dict(sorted(group_sizes.items())), "out_dir": str(out_dir.resolve()),
         "data_dir": str(data_dir.resolve()), "probe_params_key": manifest.params_key,
         "template": manifest.spec.get("template", "plain"),
         "train_relations": sorted({e.relation for e in training_set.examples}),
         "versions": environment_versions(),
         **({"earlier_versions": earlier_versions} if earlier_versions else {})},
    )  # fmt: skip


def _earlier_versions(store: Store, run_id: str, out_dir: Path) -> list[dict]:
    """The versions a resumed run was trained with before, those that differ from this
    process's (said on stderr, so a run made under two environments does not pass unnoticed);
    [] for a new run or one resumed with the same versions. From its run folder's record (its
    first start) and the store's (later starts)."""
    from knowshift.versions import environment_versions, version_differences, versions_note

    current, config = environment_versions(), store.run_config(run_id) or {}
    info = out_dir / "run.json"
    first = json.loads(info.read_text(encoding="utf-8")).get("versions") if info.is_file() else None
    recorded = [first, *config.get("earlier_versions", []), config.get("versions")]
    earlier = [versions for i, versions in enumerate(recorded)
               if versions and versions not in recorded[:i] and version_differences([versions], current)]  # fmt: skip
    if note := versions_note(f"run {run_id}", earlier, current):
        print(note, file=sys.stderr, flush=True)
    return earlier


def _run_lock(out_dir: Path):
    """The run folder's lock, so a second process cannot train into the same folder at once.
    Only the main process of a launch takes it; the others work under its hold."""
    if not is_main_process():
        return contextlib.nullcontext()
    return atomic.folder_lock(out_dir, "training run")


def _folder_run_id(out_dir: Path, run_id: str, resolved: dict) -> str:
    """The id of the run in `out_dir`: `run_id`, for a new folder or one that holds this run
    (it resumes); any other run there is refused."""
    info = out_dir / "run.json"
    if not info.is_file():
        return run_id
    existing = json.loads(info.read_text(encoding="utf-8"))
    if existing.get("run_id") == run_id:
        return run_id
    # A run started before its id held the facts' content resumes under the id it has.
    legacy = {k: v for k, v in resolved.items() if k != "facts_digest"}
    if "facts_digest" not in existing.get("config", {}) and existing.get("run_id") == run_id_of(
        legacy
    ):
        return existing["run_id"]
    raise KnowshiftError(
        f"{out_dir} holds another run ({existing.get('run_id')}) with other settings; "
        "pick a new --out folder or delete that one"
    )


def _claim_folder(out_dir: Path, run_id: str, resolved: dict, data_dir: Path,
                  environment: dict) -> None:  # fmt: skip
    """Write the run's config to a new run folder, with the versions, device and precision it
    runs with (a resumed run keeps the record its first start wrote)."""
    info = out_dir / "run.json"
    if info.is_file():
        return
    from knowshift.versions import environment_versions

    record = {"run_id": run_id, "config": resolved, "data_dir": str(data_dir),
              "versions": environment_versions(), "environment": environment}  # fmt: skip
    atomic.write_json(info, record, indent=2)
