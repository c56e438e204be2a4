"""Find the stored probe results a build reads: a model fingerprint and a probe settings key.

A settings key hashes the probe's parameters, the facts' content and the dtype the model ran in. A
build asks for an estimator's default parameters; the dtype is the one the store holds results
for (`auto`), since a set is often built on another machine than the one that probed. Only when
results exist in several dtypes does `auto` pick the one the loader would choose here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knowshift.errors import KnowshiftError
from knowshift.store import Store
from knowshift.types import FactSet, ProbeResult

PROBE_DTYPES = ("float32", "bfloat16", "float16")  # the loader's DTYPES; a key holds one


@dataclass(frozen=True)
class ProbeSource:
    """The stored probe results of one model and setting, with that setting's parameters."""

    params_key: str
    params: dict[str, Any]
    results: dict[str, ProbeResult]

    @property
    def estimator(self) -> str:
        return self.params["estimator"]


def find_probe_results(
    store: Store,
    facts: FactSet,
    fingerprint: str,
    estimator: str,
    *,
    dtype: str = "auto",
    params_key: str | None = None,
    probe_hint: str = "knowshift probe --split train",
) -> ProbeSource:
    """The results of `fingerprint` on `facts` for the estimator's default settings (or for
    `params_key`); `probe_hint` is the command the error suggests when there are none."""
    if params_key is None:
        params_key, params = _default_key(store, facts, fingerprint, estimator, dtype, probe_hint)
    else:
        from knowshift.probe.run import facts_digest

        params = _stored_params(store, params_key)
        if params.get("facts_digest") != facts_digest(facts):
            raise KnowshiftError(
                f"probe settings {params_key} are for other facts than {facts.source} (their "
                "content differs); pass the --facts they were probed on"
            )
    fact_ids = {f.id for f in facts.facts}
    stored = store.probe_results(fingerprint, params_key)
    results = {r.fact_id: r for r in stored if r.fact_id in fact_ids}
    if not results:
        raise KnowshiftError(
            f"no results for probe settings {params_key} and this model on {facts.source} in "
            f"{store.path}; run: {probe_hint}"
        )
    return ProbeSource(params_key, params, results)


def _default_key(
    store: Store, facts: FactSet, fingerprint: str, estimator: str, dtype: str, probe_hint: str
) -> tuple[str, dict[str, Any]]:
    from knowshift.probe.estimators import ProbeConfig
    from knowshift.probe.run import settings_key, validate_config

    config = ProbeConfig.for_estimator(estimator)
    validate_config(config)
    if dtype != "auto" and dtype not in PROBE_DTYPES:
        raise KnowshiftError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(PROBE_DTYPES)}")
    candidates = PROBE_DTYPES if dtype == "auto" else (dtype,)
    keys = {d: settings_key(config, facts, d) for d in candidates}
    found = [d for d in candidates if store.probed_fact_ids(fingerprint, keys[d][0])]
    if not found:
        others = _other_settings(store, fingerprint, estimator, keys[candidates[0]][1])
        raise KnowshiftError(
            f"no {estimator} probe results for this model on {facts.source} in {store.path}"
            f"{others}; run: {probe_hint}"
        )
    if len(found) > 1:
        local = _loader_dtype()
        if local not in found:
            raise KnowshiftError(
                f"{estimator} probe results exist in several dtypes ({', '.join(found)}); "
                "pass --dtype"
            )
        found = [local]
    return keys[found[0]]


def _loader_dtype() -> str:
    """The dtype `load_model(dtype="auto")` would use on this machine, without loading anything."""
    from knowshift.models.loader import resolve_device, resolve_dtype

    return str(resolve_dtype("auto", resolve_device("auto"))).removeprefix("torch.")


def _stored_params(store: Store, params_key: str) -> dict[str, Any]:
    params = store.settings_params(params_key)
    if params is None:
        raise KnowshiftError(
            f"no probe settings {params_key!r} in {store.path}; knowshift export lists the keys"
        )
    return params


def _other_settings(store: Store, fingerprint: str, estimator: str, default: dict) -> str:
    """A note naming the other settings this model has results for, and how they differ."""
    rows = store.settings_with_results(fingerprint, estimator)
    if not rows:
        return ""
    notes = []
    for key, params in rows:
        changed = [f"{k}={params[k]}" for k in sorted(params) if params[k] != default.get(k)]
        notes.append(f"{key} ({', '.join(changed)})")
    return f" with default settings (found other settings: {'; '.join(notes)}; pass --params-key)"
