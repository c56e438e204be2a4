"""`knowshift build` on a workspace whose probe results the test stores by hand.

The model is a folder with a config and a stand-in weights file: the build fingerprints it the
way the loader does but never loads it. Every bad input must exit with status 2 and one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from knowshift.cli import main
from knowshift.facts import load_facts
from knowshift.mixtures import read_training_set
from knowshift.mixtures.source import PROBE_DTYPES, _loader_dtype
from knowshift.models import fingerprint as fp
from knowshift.models import resolve
from knowshift.probe.estimators import ProbeConfig
from knowshift.probe.run import settings_key
from knowshift.store import Store
from knowshift.types import CATEGORIES, FactSet, ProbeResult, Split

N_SETS = 3  # exemplar sets behind the hand-made answers
ORIGINAL_CACHE = os.environ.get("KNOWSHIFT_CACHE")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Fingerprint digests go to a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNOWSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@dataclass(frozen=True)
class Setup:
    facts: FactSet
    facts_arg: str
    model_dir: Path
    fingerprint: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    root = tmp_path_factory.mktemp("build")
    records = []
    for relation in ("capital", "currency"):
        for i in range(40):
            split = "train" if i < 32 else ("dev" if i < 36 else "test")
            subject = f"{relation.title()}land{i}"
            records.append({"id": f"{relation}:{i:02d}", "relation": relation, "subject": subject,
                            "question": f"What is the {relation} of {subject}?",
                            "answers": [f"{relation}-obj{i % 5}"], "split": split})  # fmt: skip
    facts_file = root / "facts.jsonl"
    facts_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = root / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "stand-in"}')
    (model_dir / "model.safetensors").write_bytes(b"not really weights")
    facts = load_facts(f"jsonl:{facts_file}")
    return Setup(facts, f"jsonl:{facts_file}", model_dir, resolve.model_fingerprint(str(model_dir)))


def _results(setup: Setup, estimator: str, no_weakly_known: str = "") -> list[ProbeResult]:
    """Category by fact index (i % 4; MaybeKnown for WeaklyKnown in relation `no_weakly_known`);
    greedy answers: gold for even i, "Nowhere" for odd."""
    results = []
    for fact in setup.facts.by_split(Split.TRAIN):
        i = int(fact.id.split(":")[1])
        greedy = fact.answer if i % 2 == 0 else "Nowhere"
        per_set = [greedy] + (["noise"] * 16 if estimator == "sampling" else [])
        category = CATEGORIES[i % 4 - (fact.relation == no_weakly_known and i % 4 == 2)]
        results.append(ProbeResult(fact.id, estimator, "", "", None, 0.0, category,
                                   tuple(float(c == category) for c in CATEGORIES),
                                   samples=tuple(per_set * N_SETS)))  # fmt: skip
    return results


def _store(setup, workspace, estimator="exact", dtype="float32", config=None, **kw) -> str:
    config = config or ProbeConfig.for_estimator(estimator)
    key, params = settings_key(config, setup.facts, dtype)
    info = {f.id: (f.relation, f.split.value) for f in setup.facts.facts}
    results = [
        ProbeResult(**{**r.__dict__, "params_key": key, "model_fingerprint": setup.fingerprint})
        for r in _results(setup, estimator, **kw)
    ]
    with Store.for_workspace(workspace) as store:
        store.register_settings(key, estimator, params, {})
        store.put_probe_results(results, info)
    return key


@pytest.fixture(scope="module")
def workspace(setup, tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("workspace")
    _store(setup, workspace, "exact")
    _store(setup, workspace, "sampling")
    return workspace


def _args(setup, workspace, out, *extra) -> list[str]:
    return ["build", "--recipe", "unknown-ratio", "--facts", setup.facts_arg,
            "--model", str(setup.model_dir), "--workspace", str(workspace), "--out", str(out),
            *extra]  # fmt: skip


def test_build_writes_the_set_its_manifest_and_a_summary(setup, workspace, tmp_path, capsys):
    out = tmp_path / "set"
    assert main(_args(setup, workspace, out, "--size", "16", "--frac-unknown", "0.25")) == 0
    stdout = capsys.readouterr().out
    assert "unknown-ratio: 16 examples (seed 0) from exact probe results" in stdout
    built = read_training_set(out)
    manifest = built.manifest
    expected_key = settings_key(ProbeConfig(), setup.facts, "float32")[0]
    assert (manifest.params_key, manifest.model_fingerprint) == (expected_key, setup.fingerprint)
    assert manifest.probe_params["dtype"] == "float32" and manifest.model == str(setup.model_dir)
    assert manifest.counts_by_category["Unknown"] == 4
    assert manifest.counts_by_relation == {"capital": 8, "currency": 8}
    assert all(e.fact_id in {f.id for f in setup.facts.by_split("train")} for e in built.examples)
    # The same command again writes the same bytes.
    first = (out / "train.jsonl").read_bytes()
    assert main(_args(setup, workspace, tmp_path / "again", "--size", "16",
                      "--frac-unknown", "0.25")) == 0  # fmt: skip
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == first


def test_intervention_reads_the_greedy_answers_among_sampled_ones(setup, workspace, tmp_path):
    out = tmp_path / "self"
    extra = ["--recipe", "intervention", "--group", "self-aligning"]
    assert main(_args(setup, workspace, out, *extra)) == 0
    built = read_training_set(out)
    assert built.manifest.estimator == "sampling"  # the recipe's default estimator
    assert {(e.kind, e.answer) for e in built.examples} == {("self-aligned", "Nowhere")}
    assert len(built.examples) == 32  # 32 confident-correct, 32 confident-wrong facts


def test_results_in_two_dtypes_resolve_like_the_loader(setup, tmp_path):
    workspace = tmp_path / "ws"
    keys = {d: _store(setup, workspace, dtype=d) for d in ("float32", "bfloat16")}
    assert main(_args(setup, workspace, tmp_path / "auto")) == 0
    assert read_training_set(tmp_path / "auto").manifest.params_key == keys[_loader_dtype()]
    assert main(_args(setup, workspace, tmp_path / "f32", "--dtype", "float32")) == 0
    assert read_training_set(tmp_path / "f32").manifest.params_key == keys["float32"]


def test_relations_left_out_by_the_default_size_are_named(setup, tmp_path, capsys):
    workspace = tmp_path / "ws"
    _store(setup, workspace, no_weakly_known="currency")
    assert main(_args(setup, workspace, tmp_path / "set")) == 0
    assert read_training_set(tmp_path / "set").manifest.counts_by_relation == {"capital": 8}
    assert "note: no examples from currency (by default" in capsys.readouterr().err


def test_other_probe_settings_are_named_and_usable_by_key(setup, tmp_path, capsys):
    workspace = tmp_path / "ws"
    key = _store(setup, workspace, config=ProbeConfig(n_exemplar_sets=3))
    assert main(_args(setup, workspace, tmp_path / "set")) == 2
    err = capsys.readouterr().err
    assert f"found other settings: {key} (n_exemplar_sets=3); pass --params-key" in err
    assert main(_args(setup, workspace, tmp_path / "set", "--params-key", key)) == 0
    assert read_training_set(tmp_path / "set").manifest.probe_params["n_exemplar_sets"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "unknown-ration"], "unknown recipe 'unknown-ration' (did you mean"),
        (["--frac-unknown", "1.5"], "--frac-unknown must be between 0 and 1, got 1.5"),
        (["--size", "1000"], "--size 1000 is more than the 64 probed facts"),
        (["--frac-unknown", "1", "--size", "40"], "not enough Unknown facts: capital needs 20, has 8"),
        (["--recipe", "pack", "--frac-unknown", "0.5"], "--frac-unknown does not apply to recipe pack"),
        (["--recipe", "pack"], "recipe pack needs --n-unknown"),
        (["--recipe", "category", "--category", "Knwon"], "unknown category 'Knwon'"),
        (["--recipe", "intervention", "--group", "harmonious", "--estimator", "exact"],
         "recipe intervention cannot use exact probe results"),
        (["--estimator", "greedy"], "no greedy probe results for this model"),
        (["--dtype", "bfloat16"], "run: knowshift probe --model"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
        (["--params-key", "0123"], "no probe settings '0123'"),
        (["--relations", "capitol"], "unknown relation"),
        (["--model", "no/such/dir/model"], "unknown model"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(setup, workspace, tmp_path, capsys, extra, message):
    out = tmp_path / "set"
    assert main(_args(setup, workspace, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_missing_workspace_or_out_is_one_line(setup, tmp_path, capsys):
    empty = tmp_path / "empty"
    assert main(_args(setup, empty, tmp_path / "set")) == 2
    err = capsys.readouterr().err
    assert "no results database" in err and "knowshift probe --model" in err
    assert not empty.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--recipe", "unknown-ratio"])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_model_fingerprint_is_the_loaders_without_loading(setup, tmp_path):
    from knowshift.models import loader

    assert setup.fingerprint == resolve.resolve_model(str(setup.model_dir))[1]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"delta")
    combined = fp.combine(setup.fingerprint, fp.directory_fingerprint(adapter))
    assert resolve.model_fingerprint(str(setup.model_dir), str(adapter)) == combined
    assert tuple(loader.DTYPES) == PROBE_DTYPES


@pytest.mark.slow
def test_embedded_model_fingerprint_needs_no_conversion(monkeypatch):

    # The shared cache, where the slow tier has converted the model already.
    if ORIGINAL_CACHE is None:
        monkeypatch.delenv("KNOWSHIFT_CACHE")
    else:
        monkeypatch.setenv("KNOWSHIFT_CACHE", ORIGINAL_CACHE)
    assert resolve.model_fingerprint("smollm2-135m") == resolve.resolve_model("smollm2-135m")[1]
