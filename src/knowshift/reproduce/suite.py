"""The reproduction suite: its studies per model (configs/reproduce/suite.yaml), run resumably
into a workspace, exported as compact data, and turned into RESULTS.md with its figures.

    suite = load_suite("configs/reproduce/suite.yaml")
    run_suite(suite, "workspace/reproduce")                 # resumes where it stopped
    export_suite(suite, "workspace/reproduce", "results/reproduce")
    write_results(suite, "results/reproduce", "RESULTS.md")

Layout: the workspace holds <model>/<study>/ (a study folder) and <model>/knowshift.db (the
probing the model's studies share); the data folder holds <model>/<study>.json (StudyData
exports) and figures/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.reproduce.data import StudyData, read_data_folder, write_study_data
from knowshift.reproduce.findings import FINDINGS, INCONCLUSIVE
from knowshift.reproduce.results_md import ModelResults, render_results, results_context
from knowshift.reproduce.verdicts import N_DRAWS, RNG_SEED, Verdict, verdict

SUITE_FILE = Path("configs/reproduce/suite.yaml")
WORKSPACE = Path("workspace/reproduce")
DATA = Path("results/reproduce")
RESULTS = Path("RESULTS.md")


@dataclass(frozen=True)
class Suite:
    """Per model (in order) its studies (in order) and the settings it changes in every one of
    them (`--set`-style, e.g. a larger probed pool); the study files sit in `folder`."""

    models: Mapping[str, tuple[str, ...]]
    folder: Path
    settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # model -> KEY=VALUE

    def study_file(self, name: str) -> Path:
        return self.folder / f"{name}.yaml"

    def selected(self, models: Sequence[str] = (), studies: Sequence[str] = ()) -> list[tuple[str, str]]:  # fmt: skip
        """(model, study) pairs in suite order, limited to `models` and `studies` when given."""
        for model in models:
            if model not in self.models:
                raise unknown_name("model of the suite", model, list(self.models))
        every = sorted({s for names in self.models.values() for s in names})
        for study in studies:
            if study not in every:
                raise unknown_name("study of the suite", study, every)
        return [(m, s) for m, names in self.models.items() for s in names
                if (not models or m in models) and (not studies or s in studies)]  # fmt: skip


def load_suite(path: str | Path = SUITE_FILE) -> Suite:
    """Read a suite file: `models:` maps each model name to its studies, a list of study names
    (each a file `<study>.yaml` beside the suite file), or to a mapping with `studies:` and
    `set:` (settings changed in each of that model's studies, e.g. {probe.limit: 1200})."""
    import yaml

    from knowshift.study.plan import parse_overrides

    path = Path(path)
    if not path.is_file():
        raise KnowshiftError(f"no suite file {path}; the reproduction suite is {SUITE_FILE}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise KnowshiftError(f"{path} is not valid YAML: {error}") from None
    example = "models: {smollm2-135m: [unknown-ratio, categories]}"
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not models:
        raise KnowshiftError(f"{path} must map models: to each model's studies, e.g. {example}")
    suite, settings = {}, {}
    for model, entry in models.items():
        where = f"{path}: models.{model}"
        studies, changed = entry, {}
        if isinstance(entry, dict):
            unknown = set(entry) - {"studies", "set"}
            if unknown:
                raise KnowshiftError(f"{where} has {', '.join(sorted(map(str, unknown)))}; it takes studies: and set:")  # fmt: skip
            studies, changed = entry.get("studies"), entry.get("set") or {}
            if not isinstance(changed, dict):
                raise KnowshiftError(f"{where}.set must map settings to values, e.g. {{probe.limit: 1200}}")  # fmt: skip
        if not isinstance(studies, list) or not all(isinstance(s, str) for s in studies):
            raise KnowshiftError(f"{where} must be a list of study names, e.g. {example}")
        for study in studies:
            if not (path.parent / f"{study}.yaml").is_file():
                raise KnowshiftError(f"{path}: model {model} lists study {study!r}, but there is no {path.parent / f'{study}.yaml'}")  # fmt: skip
        pairs = tuple(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}" for key, value in changed.items())  # fmt: skip
        parse_overrides(pairs)  # checked now, as a study would
        suite[str(model)], settings[str(model)] = tuple(studies), pairs
    return Suite(suite, path.parent, settings)


def suite_study(suite: Suite, model: str, name: str, overrides: Sequence[str] = ()):
    """The study `name` of the suite for `model` (its file with model.name set)."""
    from knowshift.study.plan import load_study

    changed = [f"model.name={model}", *suite.settings.get(model, ()), *overrides]
    study = load_study(suite.study_file(name), overrides=changed)
    if study.name != name:
        raise KnowshiftError(
            f"{suite.study_file(name)} is named {study.name!r}; the findings read it as {name!r}: "
            f"set name: {name}"
        )
    return study


def study_folder(work: str | Path, model: str, study: str) -> Path:
    return Path(work) / model / study


def run_suite(suite: Suite, work: str | Path = WORKSPACE, *, models: Sequence[str] = (),
              studies: Sequence[str] = (), overrides: Sequence[str] = (), device: str = "auto",
              echo: Callable[[str], None] | None = None) -> list[tuple[str, str, int, int]]:  # fmt: skip
    """Run the selected studies of the suite one after another, each resuming where it stopped;
    a model's studies share its probing. Returns (model, study, done runs, failed runs)."""
    from knowshift.store import database_path
    from knowshift.study.runner import echo_stderr, run_study

    echo = echo or echo_stderr
    plan = suite.selected(models, studies)
    loaded = [(m, s, suite_study(suite, m, s, overrides)) for m, s in plan]  # all checked first
    outcomes = []
    for model, name, study in loaded:
        echo(f"reproduce: {model} / {name}")
        folder = study_folder(work, model, name)
        outcome = run_study(study, folder, device=device, echo=echo,
                            probe_cache=database_path(Path(work) / model))  # fmt: skip
        outcomes.append((model, name, outcome.n_done, len(outcome.failures)))
    return outcomes


def export_suite(suite: Suite, work: str | Path = WORKSPACE, data: str | Path = DATA, *,
                 models: Sequence[str] = (), studies: Sequence[str] = ()) -> list[Path]:  # fmt: skip
    """Export the done runs of every selected study that has a store in `work` to
    `data`/<model>/<study>.json (replacing the earlier export). Studies never run are skipped."""
    from knowshift.store import Store, database_path

    written = []
    for model, name in suite.selected(models, studies):
        folder = study_folder(work, model, name)
        if not database_path(folder).is_file():
            continue
        with Store.for_workspace(folder) as store:
            study_data = StudyData.from_store(store, name)
        if study_data.runs:
            written.append(write_study_data(study_data, Path(data) / model / f"{name}.json"))
    return written


def suite_verdicts(suite: Suite, found: Mapping[str, Sequence[StudyData]], *,
                   n_draws: int = N_DRAWS, rng_seed: int = RNG_SEED) -> list[ModelResults]:  # fmt: skip
    """Per model of the suite, the verdict of every finding whose study the model runs, from
    `found` (model -> its studies' data); a study without data gives an inconclusive verdict
    that says it has not been run."""
    results = []
    for model, names in suite.models.items():
        by_study = {d.study: d for d in found.get(model, ())}
        planned = {name: len(suite_study(suite, model, name).runs) for name in names}
        verdicts = []
        for finding in (f for f in FINDINGS if f.study in names):
            if finding.study in by_study:
                verdicts.append(verdict(by_study[finding.study], finding, n_draws=n_draws, rng_seed=rng_seed))  # fmt: skip
            else:
                verdicts.append(_not_run(finding))
        done = sum(len(by_study[n].runs) for n in names if n in by_study)
        context = results_context(list(by_study.values()), planned)
        results.append(ModelResults(model, tuple(verdicts), context, (done, sum(planned.values()))))  # fmt: skip
    return results


def _not_run(finding) -> Verdict:
    names = [p.name for p in finding.parts]
    return Verdict(finding.id, dict.fromkeys(names), dict.fromkeys(names),
                   dict.fromkeys(names, INCONCLUSIVE), 0, 0, INCONCLUSIVE,
                   f"study {finding.study!r} has no exported runs yet", "nothing")  # fmt: skip


def write_results(suite: Suite, data: str | Path = DATA, out: str | Path = RESULTS, *,
                  figures: str | Path | None = None, n_draws: int = N_DRAWS,
                  rng_seed: int = RNG_SEED) -> list[Path]:  # fmt: skip
    """RESULTS.md (`out`) and its figures (SVG files in `figures`, default `data`/figures) from
    the exported data alone; figures no longer drawn are removed. Returns the files written,
    the page last."""
    from knowshift.atomic import write_text
    from knowshift.reproduce.figures import suite_figures

    data, out = Path(data), Path(out)
    figures = Path(figures) if figures is not None else data / "figures"
    found = read_data_folder(data) if data.is_dir() else {}
    models = suite_verdicts(suite, found, n_draws=n_draws, rng_seed=rng_seed)
    written, links = [], {}
    for name, (caption, chart) in suite_figures(models, found).items():
        path = figures / f"{name}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_text(path, chart + "\n"))
        links[caption] = _relative(path, out.parent)
    for stale in sorted(figures.glob("*.svg")) if figures.is_dir() else []:
        if stale not in written:
            stale.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    written.append(write_text(out, render_results(models, links)))
    return written


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def progress_line(outcomes: Sequence[tuple[str, str, int, int]]) -> str:
    return "; ".join(f"{m}/{s}: {done} done, {failed} failed" for m, s, done, failed in outcomes)
