"""Studies: many runs from one file, each run probe -> build -> train -> eval -> analyses.

A study file (YAML) holds a base configuration in sections, a grid of values to vary and/or a list
of variants, and the analyses to run; see configs/*.yaml for the published experiments.

    name: unknown-ratio                  # the study's name in the store
    description: one line for listings and reports
    scale: 1                             # multiplies the sizes (plan.SCALED_KEYS) towards the paper's
    model: {name: smollm2-135m, dtype: auto}
    facts: {source: geo, relations: [city_country, country_capital]}
    probe: {estimator: exact, limit: 700}             # the pool: train facts probed
    build: {recipe: unknown-ratio, size: 120, frac_unknown: 0.5, seed: 0}
    train: {method: full, epochs: 10, lr: 5.0e-5, n_dev: 60, n_test: 180}
    eval: {checkpoints: [early_stop, last], n_facts: 180}
    analyses:                             # `knowshift analyze KIND` on every run, flags by name
      - {kind: collapse, checkpoints: [last], limit: 180}
    study_analyses: [regression]          # over every (run, epoch) of the study
    grid:                                 # the product of every axis
      build.frac_unknown: [0, 0.25, 0.5, 0.75, 1.0]
    variants:                             # single runs beside the grid
      - {label: D_Known, build.recipe: known-only}
    overrides: {train.epochs: 3}          # last word, for every run (also: --set KEY=VALUE)

`load_study` validates and expands it without loading torch; `run_study` runs it into a study
folder (its own workspace), skipping finished work on a rerun.
"""

from knowshift.study.plan import PlannedRun, Study, format_plan, load_study, parse_study, run_id_of
from knowshift.study.runner import StudyOutcome, run_study

__all__ = [
    "PlannedRun",
    "Study",
    "StudyOutcome",
    "format_plan",
    "load_study",
    "parse_study",
    "run_id_of",
    "run_study",
]
