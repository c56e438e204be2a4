"""The typed sections of one study run, parsed from plain mappings with clear errors.

Each section is a frozen dataclass whose fields are the keys a study file may give. Parsing
checks every key (an unknown one is named with the valid ones and the closest match), every
value's type (a float may be written 5e-5, which YAML would read as a string), and the ranges
the stages would otherwise only find after a model is loaded. Nothing here imports torch, so
`knowshift study validate` is instant.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Union

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.probe.settings import EstimatorSettings
from knowshift.train.config import TrainConfig

CHECKPOINTS = ("early_stop", "last")  # EARLY_STOP (best dev) and CONVERGENCE (the last epoch)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSection:
    """The base model: an embedded name, local path or hub id, and the dtype it is probed and
    evaluated in (training keeps float32 weights; `train.precision` sets its autocast)."""

    name: str = "smollm2-135m"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in MODEL_DTYPES:
            raise unknown_name("model.dtype", self.dtype, MODEL_DTYPES)


@dataclass(frozen=True)
class FactsSection:
    """The fact source ("geo", "jsonl:FILE", ...) and the relations sets are drawn from (None:
    all). Held-out test facts come from every relation: the others are out of distribution."""

    source: str = "geo"
    relations: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from knowshift.facts import SOURCE_NAMES

        kind = self.source.split(":", 1)[0]
        if ":" in self.source and kind not in SOURCE_NAMES:
            raise unknown_name("fact source in facts.source", kind, SOURCE_NAMES)


@dataclass(frozen=True)
class ProbeSection(EstimatorSettings):
    """How the base model's knowledge is probed (None: the estimator's published default).

    limit: facts of the set's split (build.split) probed, spread over relations: the pool every
        set of the study is drawn from. The held-out test facts are probed too (train.n_test).
    """

    limit: int = 500

    def __post_init__(self) -> None:
        from knowshift.mixtures import RECIPES
        from knowshift.probe.prompts import PROMPT_FORMATS

        estimators = {name for recipe in RECIPES.values() for name in recipe.estimators}
        if self.estimator not in estimators:
            raise unknown_name("probe.estimator", self.estimator, estimators)
        if self.prompt_format not in PROMPT_FORMATS:
            raise unknown_name("probe.prompt_format", self.prompt_format, PROMPT_FORMATS)
        for name, minimum in (("limit", 1), ("n_exemplar_sets", 1), ("k_shot", 0),
                              ("n_samples", 0), ("top_k", 1), ("max_new_tokens", 1)):  # fmt: skip
            _at_least(f"probe.{name}", getattr(self, name), minimum)
        if self.temperature is not None and self.temperature <= 0:
            raise KnowshiftError(f"probe.temperature must be above 0, got {self.temperature}")

    def settings(self) -> dict[str, Any]:
        """The probe's settings without the pool size (what `ProbeConfig.for_estimator` takes)."""
        settings = asdict(self)
        del settings["limit"]
        return settings

    def probe_config(self):
        """The `ProbeConfig` of these settings (imports the probe engine, and torch)."""
        from knowshift.probe.estimators import ProbeConfig

        settings = self.settings()
        return ProbeConfig.for_estimator(settings.pop("estimator"), **settings)


@dataclass(frozen=True)
class BuildSection:
    """The fine-tuning set: a recipe (see `knowshift.mixtures.RECIPES`), its typed spec, the seed
    of its draws. The study file gives the spec's fields beside `recipe` and `seed`."""

    recipe: str
    spec: Any  # the recipe's spec dataclass (knowshift.mixtures.specs), validated when made
    seed: int = 0

    def resolved(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "seed": self.seed, **asdict(self.spec)}


@dataclass(frozen=True)
class TrainSection:
    """The fine-tuning settings (`TrainConfig`'s fields) and the held-out facts measured after
    every epoch (None: they scale with the set, see `knowshift.train.run.heldout_sizes`)."""

    config: TrainConfig
    n_dev: int | None = None
    n_test: int | None = None

    def resolved(self) -> dict[str, Any]:
        return {**asdict(self.config), "n_dev": self.n_dev, "n_test": self.n_test}


@dataclass(frozen=True)
class EvalSection:
    """The closed-book evaluation after training: greedy answers to `n_facts` test facts (None:
    train.n_test, else 200) from each checkpoint, saved as the run's predictions.

    keep_checkpoints: false removes the run's weights once its evaluation and analyses are done
        (a study of many full fine-tunes otherwise keeps ~1 GB per run for smollm2-135m).
    """

    checkpoints: tuple[str, ...] = CHECKPOINTS
    n_facts: int | None = None
    keep_checkpoints: bool = True

    def __post_init__(self) -> None:
        for name in self.checkpoints:
            if name not in CHECKPOINTS:
                raise unknown_name("checkpoint in eval.checkpoints", name, CHECKPOINTS)
        _at_least("eval.n_facts", self.n_facts, 1)


@dataclass(frozen=True)
class AnalysisSection:
    """One analysis of `knowshift analyze` run after each run, on each of `checkpoints`;
    `options` are that command's options by name (`limit: 200` is --limit 200)."""

    kind: str
    checkpoints: tuple[str, ...] = ("last",)
    options: tuple[tuple[str, Any], ...] = ()

    def key(self) -> str:
        """What identifies this analysis of a run (a stage of the run)."""
        options = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.kind}({options})"


@dataclass(frozen=True)
class RunConfig:
    """Everything one run of a study is: what makes its fine-tuned model (model, facts, probe,
    build, train: hashed into its id) and what is measured on it (eval, analyses)."""

    model: ModelSection
    facts: FactsSection
    probe: ProbeSection
    build: BuildSection
    train: TrainSection
    eval: EvalSection = field(default_factory=EvalSection)
    analyses: tuple[AnalysisSection, ...] = ()

    def identity(self) -> dict[str, Any]:
        """The resolved settings that decide the trained model: the run id hashes these."""
        return {"model": asdict(self.model), "facts": asdict(self.facts),
                "probe": asdict(self.probe), "build": self.build.resolved(),
                "train": self.train.resolved()}  # fmt: skip

    def resolved(self) -> dict[str, Any]:
        """Every setting, defaults included (what a run folder's config.json holds)."""
        analyses = [{"kind": a.kind, "checkpoints": list(a.checkpoints), **dict(a.options)}
                    for a in self.analyses]  # fmt: skip
        return {**self.identity(), "eval": asdict(self.eval), "analyses": analyses}


# --- parsing -------------------------------------------------------------------------------------

SECTIONS = ("model", "facts", "probe", "build", "train", "eval")  # what grid keys may set


def section_keys(section: str, recipe: str | None = None) -> list[str]:
    """The keys a section takes (build: those of `recipe`, or of every recipe when None)."""
    if section == "build":
        from knowshift.mixtures import RECIPES
        from knowshift.mixtures.build import DERIVED_FIELDS

        recipes = [RECIPES[recipe]] if recipe else RECIPES.values()
        names = {f.name for r in recipes for f in fields(r.spec_type)} - set(DERIVED_FIELDS)
        return sorted(names | {"recipe", "seed"})
    if section == "train":
        return sorted([f.name for f in fields(TrainConfig)] + ["n_dev", "n_test"])
    classes = {"model": ModelSection, "facts": FactsSection, "probe": ProbeSection,
               "eval": EvalSection}  # fmt: skip
    if section not in classes:
        raise unknown_name("study section", section, SECTIONS)
    return [f.name for f in fields(classes[section])]


def parse_run(document: Mapping[str, Any]) -> RunConfig:
    """A run's sections from its (overridden, scaled) mapping; raises on the first bad value."""
    from knowshift.mixtures.build import check_estimator

    model = parse_section(ModelSection, document.get("model"), "model")
    facts = parse_section(FactsSection, document.get("facts"), "facts")
    probe = parse_section(ProbeSection, document.get("probe"), "probe")
    build = parse_build(document.get("build"))
    try:
        check_estimator(build.recipe, probe.estimator)
    except KnowshiftError as error:
        raise KnowshiftError(f"{error}".replace("--estimator", "probe.estimator:")) from None
    train = parse_train(document.get("train"))
    evaluation = parse_section(EvalSection, document.get("eval"), "eval")
    analyses = tuple(parse_analysis(item, f"analyses[{i}]")
                     for i, item in enumerate(_as_list(document.get("analyses"), "analyses")))  # fmt: skip
    return RunConfig(model, facts, probe, build, train, evaluation, analyses)


def parse_section(cls: type, mapping: Any, where: str) -> Any:
    """An instance of the section dataclass `cls` from `mapping` (None: every default)."""
    mapping = _as_mapping(mapping, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in mapping:
        if key not in names:
            raise unknown_name(f"{where} key", str(key), names)
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in mapping]  # fmt: skip
    if missing:
        raise KnowshiftError(f"{where} needs {', '.join(f'{where}.{m}' for m in missing)}")
    values = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in mapping.items()}
    return cls(**values)


def parse_build(mapping: Any) -> BuildSection:
    """The build section: the recipe's spec from the other keys (`knowshift.mixtures.make_spec`)."""
    from knowshift.mixtures import get_recipe, make_spec

    mapping = dict(_as_mapping(mapping, "build"))
    if "recipe" not in mapping:
        raise KnowshiftError("build needs build.recipe (e.g. build.recipe: unknown-ratio)")
    recipe = coerce(mapping.pop("recipe"), str, "build.recipe")
    seed = coerce(mapping.pop("seed", 0), int, "build.seed")
    entry, _ = get_recipe(recipe)
    valid = section_keys("build", entry.name)
    for key in mapping:
        if key not in valid:
            every = section_keys("build")
            if key in every:
                raise KnowshiftError(f"build.{key} does not apply to recipe {recipe} "
                                     f"(its keys: {', '.join(valid)})")  # fmt: skip
            raise unknown_name("build key", str(key), every)
    hints = typing.get_type_hints(entry.spec_type)
    options = {k: coerce(v, hints[k], f"build.{k}") for k, v in mapping.items()}
    try:
        spec = make_spec(recipe, options)
    except KnowshiftError as error:  # its messages name flags (--frac-unknown): name keys
        raise KnowshiftError(flags_as_keys(str(error), "build")) from None
    return BuildSection(recipe, spec, seed)


def parse_train(mapping: Any) -> TrainSection:
    """The train section: `TrainConfig` fields plus n_dev / n_test. Without `lr`, LoRA takes
    1e-3 and full fine-tuning 1e-5 (as `knowshift train`)."""
    mapping = dict(_as_mapping(mapping, "train"))
    valid = section_keys("train")
    for key in mapping:
        if key not in valid:
            raise unknown_name("train key", str(key), valid)
    extra = {k: mapping.pop(k) for k in ("n_dev", "n_test") if k in mapping}
    hints = typing.get_type_hints(TrainConfig)
    values = {k: coerce(v, hints[k], f"train.{k}") for k, v in mapping.items()}
    if "lr" not in values:
        values["lr"] = 1e-3 if values.get("method") == "lora" else 1e-5
    config = TrainConfig(**values)
    try:
        config.validate()
    except KnowshiftError as error:  # "epochs must be ..." / "unknown method ...": name the key
        message = str(error)
        named = message.replace("unknown ", "unknown train.", 1)
        raise KnowshiftError(named if named != message else f"train.{message}") from None
    n_dev, n_test = (coerce(extra.get(k), int | None, f"train.{k}") for k in ("n_dev", "n_test"))
    _at_least("train.n_dev", n_dev, 1)
    _at_least("train.n_test", n_test, 1)
    return TrainSection(config, n_dev, n_test)


def parse_analysis(item: Any, where: str) -> AnalysisSection:
    """One entry of `analyses`: {kind: shift, checkpoints: [last], limit: 200, ...}."""
    from knowshift.study.analyses import check_run_analysis

    if isinstance(item, str):
        item = {"kind": item}
    mapping = dict(_as_mapping(item, where))
    if "kind" not in mapping:
        raise KnowshiftError(f"{where} needs a kind (e.g. kind: shift)")
    kind = coerce(mapping.pop("kind"), str, f"{where}.kind")
    checkpoints = coerce(
        mapping.pop("checkpoints", ["last"]), tuple[str, ...], f"{where}.checkpoints"
    )
    for name in checkpoints:
        if name not in CHECKPOINTS:
            raise unknown_name(f"checkpoint in {where}.checkpoints", name, CHECKPOINTS)
    options = tuple(sorted((str(k), v) for k, v in mapping.items()))
    check_run_analysis(kind, dict(options), where)
    return AnalysisSection(kind, checkpoints, options)


def coerce(value: Any, kind: Any, key: str) -> Any:
    """`value` as the annotated type `kind`, or a KnowshiftError naming `key` and the fix."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if kind is Any:
        return value
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise KnowshiftError(f"{key} must be a list, got {value!r} (e.g. {key}: [a, b])")
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        try:  # YAML reads 5e-5 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    if kind is str and isinstance(value, str):
        return value
    what = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}
    raise KnowshiftError(f"{key} must be {what.get(kind, kind)}, got {value!r}")


def _at_least(key: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise KnowshiftError(f"{key} must be at least {minimum}, got {value}")


def _as_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise KnowshiftError(f"{where} must be a mapping of keys to values, got {value!r}")
    return value


def _as_list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KnowshiftError(f"{where} must be a list, got {value!r}")
    return value


def flags_as_keys(message: str, section: str) -> str:
    """`--frac-unknown` -> `build.frac_unknown` in a message of the build stage's validation."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: f"{section}.{m[1].replace('-', '_')}", message)
