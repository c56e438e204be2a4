"""An estimator and the settings a caller may change on top of its published defaults, as one
dataclass that the stage API's ProbeRequest and a study's probe section both extend (imports
nothing heavy: a study file is checked without torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EstimatorSettings:
    """The estimator and its settings; None takes the estimator's published default
    (ProbeConfig.for_estimator)."""

    estimator: str = "exact"
    n_exemplar_sets: int | None = None
    k_shot: int | None = None
    n_samples: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    prompt_format: str = "plain"
    seed: int = 0
