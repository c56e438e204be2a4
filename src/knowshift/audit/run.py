"""The audit stage: every example of a fine-tuning file gets a SliCK category or a reason.

    result = audit(sft, model, config, store)

reads top to bottom: screen the examples, turn the short-answer ones into facts of one relation,
probe them (stored results first; the model is loaded only when something is missing), and
return one row per example.

Exemplars come from the file itself; `knowshift.audit.facts` says how no example is shown its
own answer (or a paraphrase of it) among them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from knowshift.audit.data import SftExample, SftFile
from knowshift.audit.facts import RELATION, example_facts
from knowshift.audit.screen import MAX_ANSWER_WORDS, reason_kind, screen
from knowshift.errors import KnowshiftError
from knowshift.probe.estimators import ProbeConfig
from knowshift.store import Store
from knowshift.types import FactSet, ProbeResult, Split

if TYPE_CHECKING:
    from knowshift.models.loader import LoadedModel

AUDIT_ESTIMATORS = ("exact", "sampling", "greedy")  # those that report SliCK categories

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ModelChoice:
    """The model to audit against, as the user named it; loaded only when needed."""

    name: str
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class AuditRow:
    """One example: its question and answer as probed, and its result or why it has none."""

    example: SftExample  # question taken out of its template, `problem` set if not probed
    fact_id: str | None  # the fact it was probed as (duplicates share one)
    result: ProbeResult | None

    @property
    def probed(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class Audit:
    """What the model knows of one fine-tuning file: a row per example, in file order."""

    path: str
    schema: str
    group_field: str | None
    model: str
    model_fingerprint: str
    config: ProbeConfig
    params_key: str
    rows: tuple[AuditRow, ...]
    loaded_model: bool  # False when every result came from the store


def prepare(
    sft: SftFile, config: ProbeConfig, max_answer_words: int = MAX_ANSWER_WORDS
) -> tuple[list[SftExample], FactSet, dict[int, str]]:
    """Screen the examples and make facts of the short-answer ones; needs no model and no store,
    so a file with nothing to probe fails before anything is loaded or written.

    Returns the screened examples, the facts of the probed ones (one relation; its dev split is
    the exemplar pool) and each probed example's fact id.
    """
    examples = [screen(e, max_answer_words) for e in sft.examples]
    probed = [e for e in examples if e.problem is None]
    if not probed:
        reasons = Counter(reason_kind(e.problem) for e in examples if e.problem)
        raise KnowshiftError(
            f"{sft.path}: no example is a short-answer question to probe "
            f"({', '.join(f'{r}: {n}' for r, n in reasons.most_common())}); "
            "the audit needs question/answer pairs with short answers"
        )
    facts, fact_of = example_facts(probed)
    _check_pool(sft, facts, config)
    return examples, facts, fact_of


def audit(
    sft: SftFile,
    model: ModelChoice,
    config: ProbeConfig,
    store: Store,
    max_answer_words: int = MAX_ANSWER_WORDS,
    progress: Progress | None = None,
    loaded: LoadedModel | None = None,
) -> Audit:
    """Probe every short-answer example of `sft` with `model`; report the rest as not probed.

    `loaded`: the model, already loaded (else it is loaded only if a result is not stored).
    """
    # 1. Screen, and make the short-answer examples facts of one relation.
    examples, facts, fact_of = prepare(sft, config, max_answer_words)
    # 2. Probe (stored results first), then one row per example.
    results, fingerprint, params_key, loaded_now = _probe(
        facts, model, config, store, progress, loaded
    )
    by_id = {r.fact_id: r for r in results}
    rows = tuple(
        AuditRow(e, fact_of.get(e.index), by_id.get(fact_of.get(e.index, ""))) for e in examples
    )
    return Audit(
        str(sft.path), sft.schema, sft.group_field, model.name, fingerprint, config,
        params_key, rows, loaded_now,
    )  # fmt: skip


def _check_pool(sft: SftFile, facts: FactSet, config: ProbeConfig) -> None:
    """k-shot prompts need k + 1 exemplar candidates (one spare for the example itself)."""
    pool = len(facts.by_split(Split.DEV))
    if pool < config.k_shot + 1:
        kept_out = len(facts.facts) - pool
        why = f" ({kept_out} more would give away another's answer)" if kept_out else ""
        raise KnowshiftError(
            f"{sft.path}: {pool} distinct short-answer examples can serve as few-shot exemplars"
            f"{why}, fewer than the {config.k_shot + 1} that {config.k_shot}-shot prompts need; "
            "lower --k-shot or add examples"
        )


def _probe(
    facts: FactSet,
    model: ModelChoice,
    config: ProbeConfig,
    store: Store,
    progress: Progress | None,
    loaded: LoadedModel | None = None,
) -> tuple[list[ProbeResult], str, str, bool]:
    """(results, model fingerprint, settings key, whether the model was used)."""
    from knowshift.models import load_model, resolve_device, resolve_dtype
    from knowshift.models.resolve import model_fingerprint
    from knowshift.probe.engine import Engine
    from knowshift.probe.prompts import exemplar_sets
    from knowshift.probe.run import probe, settings_key

    # A rerun finds everything stored under the same model and settings: no model load at all.
    if loaded is None:
        fingerprint = model_fingerprint(model.name, model.adapter)
        dtype = resolve_dtype(model.dtype, resolve_device(model.device))
    else:
        fingerprint, dtype = loaded.fingerprint, loaded.dtype
    params_key, _ = settings_key(config, facts, str(dtype).removeprefix("torch."))
    stored = store.probe_results(fingerprint, params_key, [f.id for f in facts.facts])
    if len(stored) == len(facts.facts):
        if progress:
            progress(len(stored))
        return stored, fingerprint, params_key, False
    if loaded is None:
        loaded = load_model(
            model.name, device=model.device, dtype=model.dtype, adapter=model.adapter,
            trust_remote_code=model.trust_remote_code,
        )  # fmt: skip
    # Examples that sit in an exemplar set are asked with that set's spare, so their prompts
    # differ from the others'; probing them last keeps the shared-prefix batches of the rest
    # intact (the engine runs a group's common prefix once). Results do not depend on the order.
    sets = exemplar_sets(facts, RELATION.name, config.n_exemplar_sets, config.k_shot, config.seed)
    in_sets = {f.id for s in sets for f in s.facts}
    engine = Engine(loaded)
    results = []
    for targets in (
        [f for f in facts.facts if f.id not in in_sets],
        [f for f in facts.facts if f.id in in_sets],
    ):
        if targets:
            results += probe(loaded, facts, targets, config, store, progress, engine)
    return results, loaded.fingerprint, params_key, True
