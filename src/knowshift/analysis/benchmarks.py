"""General-ability benchmarks (METHODS E: MMLU, TruthfulQA before and after) via lm-eval.

    base = run_benchmarks(loaded_base, ["mmlu", "truthfulqa_mc1"])
    tuned = run_benchmarks(loaded_tuned, ["mmlu", "truthfulqa_mc1"])
    print(format_benchmarks([base, tuned]))

lm-evaluation-harness scores the model object knowshift already holds (a PEFT-wrapped one too), so
a fine-tuned or restored model is measured without being saved first. Tasks are lm-eval's, by
name; their datasets come from the Hugging Face hub or its local cache. `include_path` adds a
folder of task YAMLs of one's own (tests/data/lm_eval holds one that reads a local JSONL file).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowshift.errors import KnowshiftError

if TYPE_CHECKING:
    from knowshift.models import LoadedModel


@dataclass(frozen=True)
class BenchmarkResult:
    """One model's lm-eval scores. Metric names drop lm-eval's ",none" filter suffix ("acc",
    "acc_stderr"); a metric under another filter keeps it in brackets ("exact_match[strict-match]").
    """

    model_name: str
    model_fingerprint: str
    tasks: tuple[str, ...]  # as requested: tasks, groups (mmlu) or tags
    scores: dict[str, dict[str, float]]  # every task and group lm-eval reported -> metric -> value
    n_samples: dict[str, int]  # task or group -> documents scored (after `limit`)
    subtasks: dict[str, tuple[str, ...]]  # group -> its direct members
    n_shot: dict[str, int]  # task -> exemplars in each prompt
    num_fewshot: int | None  # as asked; None keeps each task's default
    limit: int | float | None  # as asked; None scores every document
    seed: int
    lm_eval_version: str

    @property
    def headline(self) -> tuple[str, ...]:
        """The rows that answer the request: the reported tasks and groups no group contains
        (mmlu but not its 57 subjects; a tag's tasks, since a tag has no row of its own)."""
        members = {name for children in self.subtasks.values() for name in children}
        return tuple(name for name in self.scores if name not in members)


def run_benchmarks(
    loaded: LoadedModel,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> BenchmarkResult:
    """Score `loaded` on lm-eval `tasks` (names, or paths to task YAMLs) in this process.

    `limit` caps the documents per task (a fraction when below 1; for quick looks only, the
    scores are then not comparable with published ones). `num_fewshot` overrides each task's
    default number of exemplars. `seed` seeds lm-eval's sampling of exemplars and of documents.
    lm-eval's logs and progress bars are kept off the console; only its errors show.
    """
    names = tuple(tasks)
    if not names:
        raise KnowshiftError("no benchmark tasks given; name lm-eval tasks, e.g. mmlu")
    evaluator, hflm_class = _lm_eval()
    manager = _task_manager(names, include_path)
    model = loaded.model
    was_training = model.training  # HFLM switches the model to eval mode; give it back as it was
    try:
        with _quiet():
            lm = hflm_class(pretrained=model, tokenizer=loaded.tokenizer, batch_size=batch_size)
            output = evaluator.simple_evaluate(
                model=lm, tasks=list(names), task_manager=manager, num_fewshot=num_fewshot,
                limit=limit, log_samples=False, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed,
            )  # fmt: skip
    except (ConnectionError, FileNotFoundError) as error:  # a dataset that could not be loaded
        raise _data_unavailable(names, error) from None
    finally:
        model.train(was_training)
    return _result(loaded, names, output, num_fewshot=num_fewshot, limit=limit, seed=seed)


def format_benchmarks(results: Sequence[BenchmarkResult]) -> str:
    """A table with one column per model (base, fine-tuned, restored, ...): for each headline
    task, a row per metric ("0.612 ± 0.004") and a row with the number of documents scored."""
    columns = _column_names(results)
    rows: list[list[str]] = []
    for task in _unique(task for result in results for task in result.headline):
        metrics = _unique(
            metric
            for result in results
            for metric in result.scores.get(task, {})
            if not _is_stderr(metric)
        )
        for i, metric in enumerate(metrics):
            cells = [_score_cell(result, task, metric) for result in results]
            rows.append([task if i == 0 else "", metric, *cells])
        rows.append(["", "n", *(str(result.n_samples.get(task, "-")) for result in results)])
    header = ["task", "metric", *columns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


# ---- lm-eval: import, tasks, quiet -----------------------------------------------------------


def _lm_eval() -> tuple[Any, Any]:
    """lm-eval's evaluator module and HFLM class, imported only when benchmarks run."""
    try:
        from lm_eval import evaluator
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:  # lm-eval itself or one of its dependencies
        raise KnowshiftError(
            f"benchmarks need lm-evaluation-harness ({error}): pip install 'knowshift[eval]'"
        ) from None
    return evaluator, HFLM


def _task_manager(names: tuple[str, ...], include_path: str | Path | None) -> Any:
    """The TaskManager that knows every name. When `include_path` defines them all as plain tasks
    it is used alone, skipping the scan of lm-eval's ~15,000 task YAMLs (about 6 s)."""
    folder = None
    if include_path is not None:
        folder = Path(include_path).expanduser().resolve()
        if not folder.is_dir():
            raise KnowshiftError(f"include path {include_path} is not a folder of task YAMLs")
        local = _cached_task_manager(str(folder), include_defaults=False)
        if all(name in local.all_subtasks for name in names):
            return local
    manager = _cached_task_manager(str(folder) if folder else None, include_defaults=True)
    known = manager.task_index
    for name in names:
        if name not in known and not Path(name).is_file():
            raise _unknown_task(name, known)
    return manager


@functools.cache
def _cached_task_manager(folder: str | None, include_defaults: bool) -> Any:
    """Index once per process: the index is built from YAML files, and tasks (with their data)
    are built afresh from it on every run."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=folder, include_defaults=include_defaults)


def _unknown_task(name: str, known: Iterable[str]) -> KnowshiftError:
    # Not errors.unknown_name: listing all ~15,000 lm-eval names would bury the suggestion.
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return KnowshiftError(
        f"unknown lm-eval task {name!r}{hint}; `lm-eval ls tasks` lists the {len(known)} known "
        "tasks, groups and tags, and an include path adds a folder of your own task YAMLs"
    )


def _data_unavailable(names: tuple[str, ...], error: OSError) -> KnowshiftError:
    from datasets.exceptions import DatasetNotFoundError

    reason = " ".join(str(error).split())
    tasks = ", ".join(names)
    if isinstance(error, FileNotFoundError) and not isinstance(error, DatasetNotFoundError):
        return KnowshiftError(
            f"a data file of {tasks} is missing ({reason}); check the task YAML's data_files "
            "(relative paths are read from the working directory, not the YAML's folder)"
        )
    return KnowshiftError(
        f"a dataset that {tasks} need is not available offline ({reason}); download it once where "
        "the Hugging Face hub is reachable, point HF_DATASETS_CACHE at a cache that holds it, "
        "or pass --include-path with a local task"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep lm-eval's step-by-step logs, its warnings about how it is called (an initialised
    model, `limit`) and its per-task progress bars off the console; errors still show."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stderr(devnull),  # tqdm bars of lm-eval and datasets
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ---- results ---------------------------------------------------------------------------------


def _result(
    loaded: LoadedModel,
    names: tuple[str, ...],
    output: dict[str, Any],
    *,
    num_fewshot: int | None,
    limit: int | float | None,
    seed: int,
) -> BenchmarkResult:
    """lm-eval's results dict as a BenchmarkResult of plain, JSON-ready values."""
    from importlib.metadata import version

    rows = output["results"]
    n_effective = {task: n["effective"] for task, n in output.get("n-samples", {}).items()}
    return BenchmarkResult(
        model_name=loaded.name,
        model_fingerprint=loaded.fingerprint,
        tasks=names,
        scores={task: _metrics(row) for task, row in rows.items()},
        n_samples={
            task: int(row.get("sample_len", n_effective.get(task, 0))) for task, row in rows.items()
        },
        subtasks={
            group: tuple(children) for group, children in output.get("group_subtasks", {}).items()
        },
        n_shot={task: int(n) for task, n in output.get("n-shot", {}).items()},
        num_fewshot=num_fewshot,
        limit=limit,
        seed=seed,
        lm_eval_version=str(output.get("lm_eval_version") or version("lm_eval")),
    )


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    """{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...} -> {"acc": 0.5, "acc_stderr": 0.1}.
    Keys without a filter (alias, sample_len) and stderrs lm-eval could not compute ("N/A") go."""
    metrics = {}
    for key, value in row.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        name = metric if filter_name == "none" else f"{metric}[{filter_name}]"
        metrics[name] = float(value)
    return metrics


def _stderr_name(metric: str) -> str:
    """ "acc" -> "acc_stderr"; "exact_match[strict-match]" -> "exact_match_stderr[strict-match]"."""
    base, bracket, filter_name = metric.partition("[")
    return f"{base}_stderr{bracket}{filter_name}"


def _is_stderr(metric: str) -> bool:
    return metric.partition("[")[0].endswith("_stderr")


def _score_cell(result: BenchmarkResult, task: str, metric: str) -> str:
    scores = result.scores.get(task, {})
    if metric not in scores:
        return "-"
    stderr = scores.get(_stderr_name(metric))
    return f"{scores[metric]:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")


def _column_names(results: Sequence[BenchmarkResult]) -> list[str]:
    """Model names, with a short fingerprint where two share a name (a base model and the same
    model with an adapter are both called by the base's name)."""
    names = [result.model_name for result in results]
    return [
        f"{result.model_name} [{result.model_fingerprint[:8]}]"
        if names.count(result.model_name) > 1
        else result.model_name
        for result in results
    ]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
