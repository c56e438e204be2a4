"""What an analysis compares: a base model and a fine-tuned one, from a run folder or by name.

    pair = resolve_pair(run="runs/u50")                   # base, checkpoint, facts, set from the run
    pair = resolve_pair(base="smollm2-135m", tuned="out/model")   # any two models

A run folder (written by `knowshift train`) knows its base model, fact source, prompt template,
trained relations, training examples and the probe settings its set was built from; with two
bare models those fall back to defaults the caller can override.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.types import Example

CHECKPOINTS = ("last", "early_stop")


@dataclass(frozen=True)
class ModelPair:
    """A base model and a fine-tuned one (a full model folder, or the base plus an adapter).

    `subject` names the pair in the results database: the run id and checkpoint when it comes
    from a run, else "base -> tuned".
    """

    base: str
    tuned: str
    adapter: str | None
    subject: str
    facts_spec: str
    template: str = "plain"
    run_id: str | None = None
    run_dir: str | None = None
    train_relations: tuple[str, ...] | None = None
    train_examples: tuple[Example, ...] = ()
    probe_params: dict | None = None  # the probe settings of the set's categories
    probe_key: str | None = None  # and their key in the results database


def resolve_pair(
    run: str | None = None,
    *,
    base: str | None = None,
    tuned: str | None = None,
    adapter: str | None = None,
    checkpoint: str = "last",
    facts_spec: str | None = None,
    data: str | None = None,
) -> ModelPair:
    """The pair to analyse: from a run folder (`run`), or from `base` and `tuned` (plus an
    optional `adapter` on the base). Explicit `base` / `facts_spec` / `data` (the training set
    folder) override the run's."""
    if run is None:
        if tuned is None and adapter is None:
            raise KnowshiftError(
                "name what to analyse: --run RUN_FOLDER, or --tuned MODEL (and --base MODEL)"
            )
        if tuned is not None and (Path(tuned) / "run.json").is_file():
            read_run_json(Path(tuned))  # a damaged one fails here, not as a model that won't load
        if tuned is not None and _is_run_folder(Path(tuned)):
            return resolve_pair(
                tuned, base=base, checkpoint=checkpoint, facts_spec=facts_spec, data=data
            )
        base = base or "smollm2-135m"
        tuned_name = tuned or base
        return ModelPair(base, tuned_name, adapter, f"{base} -> {tuned_name}{f' + {adapter}' if adapter else ''}",
                         facts_spec or "geo")  # fmt: skip
    return _from_run(Path(run), base, checkpoint, facts_spec, data)


def _is_run_folder(path: Path) -> bool:
    return (path / "run.json").is_file() and (path / "checkpoints").is_dir()


def read_run_json(run_dir: Path) -> dict:
    """The run.json `knowshift train` wrote in `run_dir`; one that is not (unreadable, not
    JSON, or missing the run's id or base model) is a KnowshiftError naming it and the fix."""
    path = run_dir / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        config = info["config"]
        sound = (
            isinstance(info["run_id"], str)
            and isinstance(config["model"], str)
            and isinstance(config.get("facts"), str | None)
            and isinstance(info.get("data_dir"), str | None)
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        sound = False
    if not sound:
        raise KnowshiftError(
            f"{path} is damaged (not the run.json knowshift train writes); retrain into a new "
            "--out folder, or give the models with --base and --tuned"
        )
    return info


def _from_run(
    run_dir: Path, base: str | None, checkpoint: str, facts_spec: str | None, data: str | None
) -> ModelPair:
    from knowshift.mixtures import read_training_set

    if not (run_dir / "run.json").is_file():
        raise KnowshiftError(
            f"{run_dir} is not a run folder (no run.json); pass the --out folder of knowshift train"
        )
    if checkpoint not in CHECKPOINTS:
        raise unknown_name("checkpoint", checkpoint, CHECKPOINTS)
    info = read_run_json(run_dir)
    config = info["config"]
    folder = run_dir / "checkpoints" / checkpoint
    if not folder.is_dir():
        raise KnowshiftError(
            f"{run_dir} has no {checkpoint} checkpoint yet (has the run finished an epoch?); "
            f"choose one of: {', '.join(p.name for p in (run_dir / 'checkpoints').glob('*')) or 'none'}"
        )
    base = base or config["model"]
    is_adapter = (folder / "adapter_config.json").is_file()
    # The run's set gives its examples, template and the probe settings of its categories.
    examples: tuple[Example, ...] = ()
    template, probe_params, probe_key, relations = "plain", None, None, None
    data_dir = data or info.get("data_dir")
    if data_dir is not None:
        training_set = read_training_set(data_dir)
        examples = training_set.examples
        template = training_set.manifest.spec.get("template", "plain")
        probe_params = training_set.manifest.probe_params or None
        probe_key = training_set.manifest.params_key
        relations = tuple(sorted({e.relation for e in examples}))
    return ModelPair(
        base=base,
        tuned=base if is_adapter else str(folder),
        adapter=str(folder) if is_adapter else None,
        subject=f"{info['run_id']}:{checkpoint}",
        facts_spec=facts_spec or config.get("facts") or "geo",
        template=template,
        run_id=info["run_id"],
        run_dir=str(run_dir),
        train_relations=relations,
        train_examples=examples,
        probe_params=probe_params,
        probe_key=probe_key,
    )


def checked_pair(run: str | None, **options):
    """`resolve_pair(run, **options)` (which checks the run folders' run.json), after checking
    that the fine-tuned model can be a fine-tune of the base (same architecture)."""
    pair = resolve_pair(run, **options)
    if pair.adapter is None and pair.tuned != pair.base:
        _check_same_architecture(pair)
    return pair


def _check_same_architecture(pair) -> None:
    """Refuse to compare a 'fine-tuned' model whose weights cannot come from the base."""
    from knowshift.models.checks import architecture_difference
    from knowshift.models.loader import model_config

    base, tuned = model_config(pair.base), model_config(pair.tuned)
    difference = architecture_difference(base or {}, tuned or {})
    if difference is None:
        return
    if pair.run_dir:
        raise KnowshiftError(
            f"{pair.tuned} is not a fine-tune of {pair.base}, the base model its run "
            f"{pair.run_dir} names ({difference}); pass --base MODEL, the model it was trained from"
        )
    raise KnowshiftError(
        f"--tuned {pair.tuned} is not a fine-tune of --base {pair.base} ({difference}); "
        "pass the base model it was fine-tuned from"
    )


def load_pair(pair, device: str, dtype: str = "auto"):
    """Both models of the pair, loaded (the fine-tuned one as base + adapter where it is one)."""
    from knowshift.models import load_model
    from knowshift.models.loader import quiet_transformers

    quiet_transformers()
    base = load_model(pair.base, device=device, dtype=dtype)
    tuned = load_model(pair.tuned, device=device, dtype=dtype, adapter=pair.adapter)
    return base, tuned


def probe_config(pair, estimator: str | None):
    """The run's probe settings (so stored base results are reused), else the estimator's defaults."""
    from knowshift.probe.estimators import ProbeConfig
    from knowshift.probe.run import validate_config

    params = pair.probe_params or {}
    if params and (estimator is None or estimator == params.get("estimator")):
        names = {f.name for f in fields(ProbeConfig)}
        config = ProbeConfig(**{k: v for k, v in params.items() if k in names})
    else:
        config = ProbeConfig.for_estimator(estimator or "exact")
    validate_config(config)
    return config
