"""Fine-tuning sets of controlled composition, built from probe results.

A recipe is a pure function (facts, probe results by fact id, typed spec, seed) -> examples,
registered by name in `RECIPES`:

- unknown-ratio / known-only: Gekhman et al.'s X% Unknown variants and D_Known (METHODS B)
- category: one SliCK category or the natural mix, at the same sizes (METHODS B)
- mastery: one mastery level, balanced across relations (METHODS C)
- pack, entity-bias: new facts packed with additions, and entity-skewed sets (METHODS E)
- intervention: harmonious, incompatible, self-aligning and mixed groups (METHODS D)

Any recipe takes the "I don't know" modifier (`idk=True` in its spec, or the name
`idk:<recipe>`). `build_training_set` runs one and counts the result into a manifest;
`write_training_set` writes train.jsonl and manifest.json.
"""

from knowshift.mixtures.build import (
    RECIPES,
    apply_idk,
    build_examples,
    build_training_set,
    get_recipe,
    make_spec,
)
from knowshift.mixtures.intervention import Belief, belief
from knowshift.mixtures.output import manifest_table, read_training_set, write_training_set
from knowshift.mixtures.pool import apportion, format_example
from knowshift.mixtures.specs import (
    BaseSpec,
    CategorySpec,
    EntityBiasSpec,
    InterventionSpec,
    MasterySpec,
    PackSpec,
    UnknownRatioSpec,
)

__all__ = [
    "RECIPES",
    "BaseSpec",
    "Belief",
    "CategorySpec",
    "EntityBiasSpec",
    "InterventionSpec",
    "MasterySpec",
    "PackSpec",
    "UnknownRatioSpec",
    "apply_idk",
    "apportion",
    "belief",
    "build_examples",
    "build_training_set",
    "format_example",
    "get_recipe",
    "make_spec",
    "manifest_table",
    "read_training_set",
    "write_training_set",
]
