"""`knowshift demo`: a reduced unknown-ratio study (METHODS B) that finishes in minutes on CPU.

It is configs/unknown-ratio.yaml at toy size: smollm2-135m is probed on geo facts, then fine-tuned
on sets of 0%, 50% and 100% Unknown facts, on D_Known and on the "I don't know" variant, 3 epochs
each; the study's regression of test accuracy on the fitted Known and Unknown shares follows.
"""

from __future__ import annotations

DEMO_STUDY = """
name: demo
description: >-
  A reduced unknown-ratio study (Gekhman et al. 2024, METHODS B): smollm2-135m fine-tuned on
  geo sets of 0/50/100% Unknown facts, D_Known and the IDK variant; toy sizes, 3 epochs.
model: {name: smollm2-135m}
facts:
  source: geo
  # The relations with enough Unknown train facts for a 100%-Unknown set of this size.
  relations: [city_country, country_capital, country_currency, subdivision_country]
probe: {estimator: exact, limit: 160}
build: {recipe: unknown-ratio, size: 24, frac_unknown: 0.5}
train: {epochs: 3, lr: 1.0e-4, batch_size: 4, n_dev: 20, n_test: 60}
eval: {checkpoints: [early_stop, last], n_facts: 60, keep_checkpoints: false}
study_analyses: [regression]
grid:
  build.frac_unknown: [0, 0.5, 1.0]
variants:
  - {label: D_Known, build.recipe: known-only}
  - {label: IDK, build.recipe: "idk:unknown-ratio"}
"""


def demo_study(scale: float | None = None, overrides: tuple[str, ...] = ()):
    """The demo's study, parsed like any study file."""
    import yaml

    from knowshift.study.plan import parse_study

    return parse_study(yaml.safe_load(DEMO_STUDY), scale=scale, overrides=overrides)
