"""Typed specs of the recipes, validated when they are made.

Every spec field has a command-line flag of the same name (`frac_unknown` is `--frac-unknown`),
so validation messages name the flag to change. A spec that exists is a valid spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.types import CATEGORIES, Split

TEMPLATES = ("plain", "tagged")
NATURAL = "natural"  # the natural category mix of the pool
ADDITIONS = ("paraphrase", "highly-known")
GROUPS = ("harmonious", "incompatible", "self-aligning", "mixture")
MASTERY_LEVELS = range(5)


def flag(field_name: str) -> str:
    """The command-line flag of a spec field."""
    return "--" + field_name.replace("_", "-")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise KnowshiftError(f"{flag(name)} must be between 0 and 1, got {value}")


def _check_count(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise KnowshiftError(f"{flag(name)} must be at least {minimum}, got {value}")


def parse_category(name: str, allow_natural: bool = True) -> str:
    """A category name (any case) as its canonical value, or "natural"."""
    valid = [c.value for c in CATEGORIES] + ([NATURAL] if allow_natural else [])
    by_lower = {v.lower(): v for v in valid}
    if name.lower() not in by_lower:
        raise unknown_name("category", name, valid)
    return by_lower[name.lower()]


@dataclass(frozen=True, kw_only=True)
class BaseSpec:
    """Options every recipe takes.

    split: where the facts come from (train: the facts are later evaluated on test).
    relations: only these relations (None: every probed relation).
    template: prompt format, see `format_example` ("plain" Q:/A: as probed, or "tagged").
    idk: replace the answer of every Unknown-category example by `refusal`.
    """

    split: str = "train"
    relations: tuple[str, ...] | None = None
    template: str = "plain"
    idk: bool = False
    refusal: str = "I don't know"

    def __post_init__(self) -> None:
        if self.split not in {s.value for s in Split}:
            raise unknown_name("split", self.split, [s.value for s in Split])
        if self.template not in TEMPLATES:
            raise unknown_name("template", self.template, TEMPLATES)
        if not self.refusal.strip() or "\n" in self.refusal:
            raise KnowshiftError(f"--refusal must be one non-empty line, got {self.refusal!r}")
        if self.relations is not None:
            if not self.relations:
                raise KnowshiftError("--relations needs at least one relation")
            object.__setattr__(self, "relations", tuple(self.relations))


@dataclass(frozen=True, kw_only=True)
class UnknownRatioSpec(BaseSpec):
    """`unknown-ratio` and `known-only`: share `frac_unknown` Unknown, the rest Known, per relation.

    size: examples in all (None: per relation the count of its smallest category, summed).
    """

    size: int | None = None
    frac_unknown: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("size", self.size)
        _check_fraction("frac_unknown", self.frac_unknown)


@dataclass(frozen=True, kw_only=True)
class CategorySpec(BaseSpec):
    """`category`: every example from one category, or the natural mix ("natural")."""

    category: str
    size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "category", parse_category(self.category))
        _check_count("size", self.size)


@dataclass(frozen=True, kw_only=True)
class MasterySpec(BaseSpec):
    """`mastery`: facts of one mastery level (0-4), equally many per relation.

    size: None takes the largest balanced set (relations x the fewest facts any relation has).
    """

    mastery_level: int
    size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mastery_level not in MASTERY_LEVELS:
            raise KnowshiftError(f"--mastery-level must be 0 to 4, got {self.mastery_level}")
        if self.idk:
            raise KnowshiftError("--idk needs SliCK categories; mastery examples have none")
        _check_count("size", self.size)


@dataclass(frozen=True, kw_only=True)
class PackSpec(BaseSpec):
    """`pack`: n Unknown facts, each followed by k additions (paraphrases or HighlyKnown facts)."""

    n_unknown: int
    k_additions: int = 0
    addition: str = "paraphrase"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_count("n_unknown", self.n_unknown)
        _check_count("k_additions", self.k_additions, minimum=0)
        if self.addition not in ADDITIONS:
            raise unknown_name("addition", self.addition, ADDITIONS)


@dataclass(frozen=True, kw_only=True)
class InterventionSpec(BaseSpec):
    """`intervention` (Ren et al.): harmonious, incompatible, self-aligning or a mixture.

    ratio: for "mixture", the share of the incompatible questions answered with the model's own
        answer instead of gold.
    size: examples in the group (None: the smaller of the confident-correct and confident-wrong
        counts, so every group has the same size).
    min_confidence: a fact is confident when this share of its greedy answers agree.
    n_samples: samples per exemplar set stored by the sampling estimator (its --n-samples), to
        find the greedy answers among the stored answers; ignored for greedy results.
    """

    group: str
    ratio: float | None = None
    size: int | None = None
    min_confidence: float = 0.5
    n_samples: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group not in GROUPS:
            raise unknown_name("intervention group", self.group, GROUPS)
        if self.group == "mixture" and self.ratio is None:
            raise KnowshiftError("--group mixture needs --ratio (share of self-aligned answers)")
        if self.group != "mixture" and self.ratio is not None:
            raise KnowshiftError(f"--ratio applies only to --group mixture, not {self.group}")
        if self.ratio is not None:
            _check_fraction("ratio", self.ratio)
        _check_fraction("min_confidence", self.min_confidence)
        _check_count("size", self.size)
        _check_count("n_samples", self.n_samples, minimum=0)


@dataclass(frozen=True, kw_only=True)
class EntityBiasSpec(BaseSpec):
    """`entity-bias`: share `frac_biased` of the set answered by a relation's top `n_objects`.

    category: draw only from this category ("natural": every category).
    """

    size: int | None = None
    n_objects: int = 3
    frac_biased: float = 0.5
    category: str = NATURAL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "category", parse_category(self.category))
        _check_count("size", self.size)
        _check_count("n_objects", self.n_objects)
        _check_fraction("frac_biased", self.frac_biased)
