"""The stages of a study: probe the base model once, then per run build its set, train, evaluate
each checkpoint and run each analysis.

Every finished stage of a run is written to the run folder's `stages.json`, so a rerun skips it
(training also resumes an interrupted run by itself). Sets live in `STUDY_DIR/sets/<set id>`,
shared by runs that differ only in training; a run's folder `STUDY_DIR/runs/<run id>` holds its
resolved config, environment, metrics.jsonl, checkpoints and predictions/<checkpoint>.jsonl.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from knowshift import atomic
from knowshift.digest import json_digest
from knowshift.errors import KnowshiftError
from knowshift.study.analyses import run_analysis
from knowshift.study.plan import PlannedRun
from knowshift.study.sections import RunConfig, flags_as_keys
from knowshift.types import FactSet

Echo = Callable[[str], None]
STAGES_FILE = "stages.json"
TEST_PROBE_DEFAULT = 500  # the most held-out test facts training measures by default


@dataclass(frozen=True)
class ProbeSource:
    """Where a run's probe results sit in the store: the base model's fingerprint, the probe
    settings' key, and those settings."""

    fingerprint: str
    params_key: str
    params: dict[str, Any]


class StageLog:
    """The finished stages of a run (its folder's stages.json), written atomically.
    `before_mark`, when set, is called before a stage is logged done: a Ray task saves the
    stage's results there, so the log never claims a stage whose results could be lost."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / STAGES_FILE
        self.before_mark: Callable[[], None] | None = None
        self.done: dict[str, dict] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def complete(self, config: RunConfig) -> bool:
        return all(key in self.done for key in stage_keys(config))

    def train_run_id(self) -> str | None:
        """The id the run's training is stored under (known once its set is built)."""
        for stage in ("train", "build"):
            if "train_run_id" in self.done.get(stage, {}):
                return self.done[stage]["train_run_id"]
        return None

    def mark(self, key: str, info: dict | None = None) -> None:
        if self.before_mark is not None:
            self.before_mark()
        self.done[key] = info or {}
        atomic.write_json(self.path, self.done, indent=2, sort_keys=True)


def stage_keys(config: RunConfig) -> list[str]:
    """Every stage a run has; it is complete when all are in its stage log."""
    keys = ["build", "train"]
    keys += [f"eval:{c}:{eval_facts(config)}" for c in config.eval.checkpoints]
    keys += [f"analysis:{a.key()}:{c}" for a in config.analyses for c in a.checkpoints]
    return keys


def eval_facts(config: RunConfig) -> int:
    """Test facts answered by the final evaluation."""
    return config.eval.n_facts or config.train.n_test or 200


def test_facts_to_probe(config: RunConfig) -> int:
    """Test facts whose base categories the run's measurements and evaluation group by."""
    return max(config.train.n_test or TEST_PROBE_DEFAULT, eval_facts(config))


def digest(settings: Any) -> str:
    """A short hash of JSON-able settings (names a set folder, groups runs)."""
    return json_digest(settings)


# --- probe: once per base model, facts and probe settings ----------------------------------------


def probe_stage(
    runs: Sequence[PlannedRun], facts: dict[str, FactSet], store, device: str, echo: Echo,
    probe_cache: Path | None = None,
) -> tuple[dict[str, ProbeSource], dict[str, Exception]]:  # fmt: skip
    """Probe what `runs` need (their pools and test facts), each model and setting once.
    `probe_cache`, another results database, lends its stored results of the same model and
    settings before probing and receives the new ones after, so studies share their probing.
    Returns the probe source of every run, and the error of every run whose probe failed."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        c = run.config
        key = digest([asdict(c.model), asdict(c.facts), c.probe.settings()])
        groups.setdefault(key, []).append(run)
    sources, errors = {}, {}
    for members in groups.values():
        try:
            source = _probe_group(
                members, facts[members[0].config.facts.source], store, device, echo, probe_cache
            )
            sources.update({run.run_id: source for run in members})
        except Exception as error:  # every run of the group fails with it; the others go on
            errors.update({run.run_id: error for run in members})
    return sources, errors


def _probe_group(
    runs: Sequence[PlannedRun], facts: FactSet, store, device: str, echo: Echo,
    probe_cache: Path | None,
) -> ProbeSource:  # fmt: skip
    from tqdm import tqdm

    from knowshift.facts.select import select_facts
    from knowshift.models import load_model
    from knowshift.probe.prompts import prompt_format
    from knowshift.probe.run import probe, settings_key, validate_config
    from knowshift.store import Store

    first = runs[0].config
    config = first.probe.probe_config()
    validate_config(config)
    targets: dict[str, Any] = {}
    for run in runs:
        c = run.config
        pool = select_facts(facts, c.facts.relations, c.build.spec.split, c.probe.limit)
        test = select_facts(facts, None, "test", test_facts_to_probe(c))
        targets.update((f.id, f) for f in [*pool, *test])
    loaded = load_model(first.model.name, device=device, dtype=first.model.dtype)
    prompt_format(config.prompt_format, loaded.tokenizer)  # chat needs a template: fail now
    dtype = str(loaded.dtype).removeprefix("torch.")
    params_key, params = settings_key(config, facts, dtype)
    echo(f"probe: {len(targets)} facts of {facts.source} with {first.model.name} "
         f"({config.estimator}, {loaded.device}, {dtype}); stored results are reused")  # fmt: skip
    ids = sorted(targets)
    if probe_cache is not None:
        with Store(probe_cache) as shared:
            lent = store.copy_probe_results(shared, loaded.fingerprint, params_key, ids)
        echo(f"probe: {lent} results taken from {probe_cache}")
    with tqdm(total=len(targets), desc="probe", unit="fact", dynamic_ncols=True) as bar:
        probe(loaded, facts, list(targets.values()), config, store, progress=bar.update)
    if probe_cache is not None:
        with Store(probe_cache) as shared:
            given = shared.copy_probe_results(store, loaded.fingerprint, params_key, ids)
        echo(f"probe: {given} new results added to {probe_cache}")
    return ProbeSource(loaded.fingerprint, params_key, params)


# --- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What the stages of one run share."""

    study: str
    run: PlannedRun
    run_dir: Path
    study_dir: Path
    facts: FactSet
    probe: ProbeSource | None  # None only for a run whose probe failed (it fails before use)
    store: Any
    device: str
    echo: Echo


def build_stage(ctx: RunContext) -> dict[str, Any]:
    """The run's fine-tuning set, drawn from the probed pool (reused when already written), and
    the id its training will be stored under."""
    from knowshift.facts.select import select_facts
    from knowshift.mixtures import build_training_set, write_training_set

    c = ctx.run.config
    set_dir = (
        ctx.study_dir
        / "sets"
        / digest([c.identity()[k] for k in ("model", "facts", "probe", "build")])
    )
    if not (set_dir / "manifest.json").is_file():
        pool = select_facts(ctx.facts, c.facts.relations, c.build.spec.split, c.probe.limit)
        stored = ctx.store.probe_results(
            ctx.probe.fingerprint, ctx.probe.params_key, [f.id for f in pool]
        )
        spec = c.build.spec
        if hasattr(spec, "n_samples"):  # where the greedy answers sit among the stored samples
            spec = replace(spec, n_samples=ctx.probe.params.get("n_samples", spec.n_samples))
        try:
            built = build_training_set(c.build.recipe, ctx.facts, {r.fact_id: r for r in stored}, spec,
                                       c.build.seed, model=c.model.name, probe_params=ctx.probe.params)  # fmt: skip
        except KnowshiftError as error:  # the recipes name flags (--size): name the study's keys
            raise KnowshiftError(flags_as_keys(str(error), "build")) from None
        write_training_set(built.examples, built.manifest, set_dir)
        counts = ", ".join(f"{k} {v}" for k, v in built.manifest.counts_by_category.items())
        ctx.echo(f"  set: {len(built.examples)} examples ({counts}) -> {set_dir}")
    return {
        "set": str(set_dir.relative_to(ctx.study_dir)),
        "train_run_id": train_run_id(ctx, set_dir),
    }


def train_run_id(ctx: RunContext, set_dir: Path) -> str:
    """The id `run_training` will give this run (the hash of the same resolved settings), so the
    study can record the run under it before training; `train_stage` checks it afterwards."""
    from knowshift.mixtures import read_training_set
    from knowshift.train.run import run_id_of, run_identity

    c = ctx.run.config
    return run_id_of(run_identity(read_training_set(set_dir), c.model.name, None, c.train.config,
                                  c.train.n_dev, c.train.n_test, ctx.facts))  # fmt: skip


def train_stage(ctx: RunContext, set_dir: Path) -> dict[str, Any]:
    """Fine-tune on the set, measuring after every epoch (an interrupted run resumes)."""
    from knowshift.train.run import run_training
    from knowshift.train.table import format_records

    c = ctx.run.config
    _write_environment(ctx)
    run_id, result = run_training(
        set_dir, c.model.name, ctx.run_dir, c.train.config, ctx.store, facts_spec=c.facts.source,
        n_dev=c.train.n_dev, n_test=c.train.n_test, device=ctx.device,
    )  # fmt: skip
    print(format_records(result.records), flush=True)
    last = result.records[-1].epoch if result.records else None
    return {"train_run_id": run_id, "early_stop_epoch": result.early_stop_epoch, "last_epoch": last}


def eval_stage(ctx: RunContext, checkpoint: str) -> str:
    """Greedy closed-book answers of a checkpoint to the test facts: saved as the run's
    predictions, summarised in the store (kind "eval", subject "<train run id>:<checkpoint>")."""
    from knowshift.analysis.pair import resolve_pair
    from knowshift.evaluate.qa import predict, summarise
    from knowshift.facts.select import select_facts
    from knowshift.models import load_model
    from knowshift.store.export import export_rows

    c = ctx.run.config
    pair = resolve_pair(str(ctx.run_dir), checkpoint=checkpoint)
    loaded = load_model(pair.tuned, device=ctx.device, dtype=c.model.dtype, adapter=pair.adapter)
    targets = select_facts(ctx.facts, None, "test", eval_facts(c))
    stored = ctx.store.probe_results(
        ctx.probe.fingerprint, ctx.probe.params_key, [f.id for f in targets]
    )
    categories = {r.fact_id: r.category for r in stored}
    relations = set(pair.train_relations) if pair.train_relations else None
    predictions = predict(loaded, targets, categories, relations, template=pair.template)
    export_rows(
        [asdict(p) for p in predictions], ctx.run_dir / "predictions" / f"{checkpoint}.jsonl"
    )
    summary = {kind: {name: asdict(b) for name, b in rows.items()}
               for kind, rows in summarise(predictions).items()}  # fmt: skip
    params = {"facts": c.facts.source, "split": "test", "limit": len(targets), "checkpoint": checkpoint,
              "template": pair.template, "dtype": c.model.dtype}  # fmt: skip
    ctx.store.put_analysis("eval", pair.subject, params, summary)
    overall = summary["all"]["all"]
    answered = overall["answered_exact"]
    return (f"{100 * overall['exact']:.1f}% exact, {100 * overall['refusal_rate']:.1f}% refused"
            + (f", {100 * answered:.1f}% of answered" if answered is not None else ""))  # fmt: skip


def analysis_stage(ctx: RunContext, index: int, checkpoint: str) -> None:
    """One analysis of the run's list on one checkpoint (stored by the analysis itself, in the
    workspace of the run's store: the study folder, or a Ray task's own)."""
    analysis = ctx.run.config.analyses[index]
    run_analysis(analysis.kind, dict(analysis.options), ctx.run_dir, checkpoint,
                 ctx.store.path.parent, ctx.device)  # fmt: skip


def _write_environment(ctx: RunContext) -> None:
    """The run's environment: package versions, device, seeds, threads."""
    import platform

    import torch

    from knowshift.models.loader import resolve_device
    from knowshift.versions import environment_versions

    c = ctx.run.config
    environment = {
        "versions": environment_versions(), "device": str(resolve_device(ctx.device)),
        "seeds": {"train": c.train.config.seed, "build": c.build.seed, "probe": c.probe.seed},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }  # fmt: skip
    atomic.write_json(ctx.run_dir / "environment.json", environment, indent=2)


def require_checkpoints(log: StageLog, run_dir: Path) -> None:
    if "pruned" in log:
        raise KnowshiftError(
            f"the checkpoints of {run_dir} were removed (eval.keep_checkpoints: false), so a new "
            "evaluation or analysis cannot run; delete that folder to retrain the run"
        )
