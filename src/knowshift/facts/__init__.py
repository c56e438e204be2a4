"""Fact sources: the built-in `geo` base, EntityQuestions, PopQA, JSONL and CSV files.

`load_facts(spec)` returns a FactSet with deterministic train/dev/test splits, merged
duplicates, flagged multi-answer facts and relations that carry question paraphrases and
completion templates. `knowshift.facts.normalize` holds the answer matching every estimator uses.
"""

from knowshift.facts.normalize import contains_match, exact_match, normalize_answer, surface_aliases
from knowshift.facts.sources import SOURCE_NAMES, load_facts

__all__ = [
    "SOURCE_NAMES",
    "contains_match",
    "exact_match",
    "load_facts",
    "normalize_answer",
    "surface_aliases",
]
