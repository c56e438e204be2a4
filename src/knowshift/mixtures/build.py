"""The recipe registry and the entry point of the build stage.

    training_set = build_training_set("unknown-ratio", facts, results, spec, seed)

looks the recipe up by name, runs it (a pure function of facts, probe results, spec and seed),
applies the "I don't know" modifier, and counts what came out into a manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.mixtures.composition import category_set, known_only, mastery_set, unknown_ratio
from knowshift.mixtures.intervention import intervention
from knowshift.mixtures.output import examples_digest
from knowshift.mixtures.packing import entity_bias, pack
from knowshift.mixtures.pool import count_by, format_example
from knowshift.mixtures.specs import (
    BaseSpec,
    CategorySpec,
    EntityBiasSpec,
    InterventionSpec,
    MasterySpec,
    PackSpec,
    UnknownRatioSpec,
    flag,
)
from knowshift.types import Category, Example, FactSet, Manifest, ProbeResult, TrainingSet

RecipeFunction = Callable[[FactSet, Mapping[str, ProbeResult], Any, int], list[Example]]
IDK_PREFIX = "idk:"  # "idk:unknown-ratio" is unknown-ratio with idk=True
SLICK_ESTIMATORS = ("exact", "sampling", "greedy")
DERIVED_FIELDS = ("n_samples",)  # filled from the probe settings, not given as options


@dataclass(frozen=True)
class Recipe:
    """A named recipe: its spec type, its function (see its docstring for what it builds), and
    the estimators whose results it reads (the first is the default)."""

    name: str
    spec_type: type[BaseSpec]
    build: RecipeFunction
    estimators: tuple[str, ...]


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("unknown-ratio", UnknownRatioSpec, unknown_ratio, SLICK_ESTIMATORS),
        Recipe("known-only", UnknownRatioSpec, known_only, SLICK_ESTIMATORS),
        Recipe("category", CategorySpec, category_set, SLICK_ESTIMATORS),
        Recipe("mastery", MasterySpec, mastery_set, ("mastery",)),
        Recipe("pack", PackSpec, pack, SLICK_ESTIMATORS),
        Recipe("intervention", InterventionSpec, intervention, ("sampling", "greedy")),
        Recipe("entity-bias", EntityBiasSpec, entity_bias, SLICK_ESTIMATORS),
    )
}


def get_recipe(name: str) -> tuple[Recipe, bool]:
    """The recipe of a name, and whether the name asks for the idk modifier ("idk:<recipe>")."""
    base = name.removeprefix(IDK_PREFIX)
    if base not in RECIPES:
        raise unknown_name("recipe", base, RECIPES)
    return RECIPES[base], base != name


def check_estimator(recipe: str, estimator: str) -> None:
    """Raise unless the recipe can read results of this estimator."""
    entry, _ = get_recipe(recipe)
    if estimator not in entry.estimators:
        valid = " or ".join(f"--estimator {e}" for e in entry.estimators)
        raise KnowshiftError(
            f"recipe {entry.name} cannot use {estimator} probe results; probe and build with {valid}"
        )


def make_spec(recipe: str, options: Mapping[str, Any]) -> BaseSpec:
    """The recipe's spec from option values (None: not given), with one-line errors naming flags."""
    entry, idk = get_recipe(recipe)
    given = {key: value for key, value in options.items() if value is not None}
    if idk:
        given["idk"] = True
    spec_fields = [f for f in fields(entry.spec_type) if f.name not in DERIVED_FIELDS]
    names = {f.name for f in spec_fields}
    extra = sorted(set(given) - names)
    if extra:
        valid = ", ".join(flag(name) for name in sorted(names))
        raise KnowshiftError(
            f"{flag(extra[0])} does not apply to recipe {entry.name} (its options: {valid})"
        )
    missing = [f.name for f in spec_fields if f.default is MISSING and f.name not in given]
    if missing:
        raise KnowshiftError(f"recipe {entry.name} needs {', '.join(flag(n) for n in missing)}")
    return entry.spec_type(**given)


def build_examples(
    recipe: str,
    facts: FactSet,
    results: Mapping[str, ProbeResult],
    spec: BaseSpec,
    seed: int,
) -> list[Example]:
    """Run a recipe by name; `results` maps fact id to the probe result of one model and setting."""
    entry, idk = get_recipe(recipe)
    if not isinstance(spec, entry.spec_type):
        raise TypeError(f"recipe {entry.name} takes a {entry.spec_type.__name__}")
    probe_identity(results)  # one model, one setting
    if idk and not spec.idk:
        spec = replace(spec, idk=True)
    examples = entry.build(facts, results, spec, seed)
    return apply_idk(examples, spec.refusal, spec.template) if spec.idk else examples


def apply_idk(examples: list[Example], refusal: str, template: str = "plain") -> list[Example]:
    """Unknown-category examples answer `refusal` instead (kind "idk"); the others are unchanged."""
    changed = []
    for example in examples:
        if example.category == Category.UNKNOWN.value:
            _, completion = format_example(example.question, refusal, template)
            example = replace(example, answer=refusal, completion=completion, kind="idk")
        changed.append(example)
    return changed


def probe_identity(results: Mapping[str, ProbeResult]) -> tuple[str, str, str]:
    """(estimator, params_key, model_fingerprint) shared by every result; raises if they mix."""
    identities = {(r.estimator, r.params_key, r.model_fingerprint) for r in results.values()}
    if not identities:
        raise KnowshiftError("no probe results given; run knowshift probe first")
    if len(identities) > 1:
        listed = ", ".join(f"{e}/{k}/{m}" for e, k, m in sorted(identities))
        raise KnowshiftError(
            f"the probe results mix {len(identities)} estimators, settings or models ({listed}); "
            "give the results of one probe"
        )
    return identities.pop()


def build_training_set(
    recipe: str,
    facts: FactSet,
    results: Mapping[str, ProbeResult],
    spec: BaseSpec,
    seed: int,
    *,
    model: str = "",
    probe_params: Mapping[str, Any] | None = None,
) -> TrainingSet:
    """Build a recipe's examples and their manifest (the stage's entry point).

    `model` (the name the user gave) and `probe_params` (the probe settings behind the results'
    key) are recorded in the manifest as given.
    """
    from knowshift._version import __version__

    examples = build_examples(recipe, facts, results, spec, seed)
    estimator, params_key, fingerprint = probe_identity(results)
    if get_recipe(recipe)[1]:
        spec = replace(spec, idk=True)
    manifest = Manifest(
        recipe=recipe,
        spec=json.loads(json.dumps(asdict(spec))),  # as it reads back from manifest.json
        seed=seed,
        n_examples=len(examples),
        counts_by_category=count_by(examples, "category"),
        counts_by_relation=count_by(examples, "relation"),
        counts_by_kind=count_by(examples, "kind"),
        counts_by_relation_category={
            relation: count_by([e for e in examples if e.relation == relation], "category")
            for relation in count_by(examples, "relation")
        },
        counts_by_mastery_level=count_by(examples, "mastery_level"),
        facts_source=facts.source,
        estimator=estimator,
        params_key=params_key,
        model_fingerprint=fingerprint,
        probe_params=dict(probe_params or {}),
        model=model,
        examples_digest=examples_digest(examples),
        knowshift_version=__version__,
    )
    return TrainingSet(tuple(examples), manifest)
