"""Versions: which ones differ between stored results and this process, said in one line when a
probe or a study reuses or adds to results made with others (and never when they match). No
model is needed: the probe finds every result stored, and the study stops at its probe."""

from __future__ import annotations

import json

import pytest
from helpers import TOY_STUDY

from knowshift.facts import load_facts
from knowshift.probe.estimators import ProbeConfig
from knowshift.probe.run import probe, settings_key
from knowshift.store import Store
from knowshift.study import parse_study
from knowshift.study.runner import run_study
from knowshift.types import CATEGORIES, ProbeResult
from knowshift.versions import (
    environment_versions,
    version_differences,
    versions_in_use,
    versions_note,
)

NOW = {"knowshift": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.25.0", "peft": "0.22.0"}
# Made under older transformers and peft; the device and model name are not versions.
OLDER = {**NOW, "transformers": "5.19.0", "peft": "0.21.2", "device": "cuda:0", "model": "m"}


# --- the comparison -----------------------------------------------------------------------------


def test_differences_name_each_package_its_stored_versions_and_the_current_one():
    assert version_differences([OLDER], NOW) == [
        "transformers 5.19.0 (now 5.25.0)",
        "peft 0.21.2 (now 0.22.0)",
    ]
    # Several stored records: each earlier version once, in the order first met.
    between = {**NOW, "transformers": "5.20.0"}
    assert version_differences([OLDER, between, OLDER, NOW], NOW)[0] == (
        "transformers 5.19.0 and 5.20.0 (now 5.25.0)"
    )
    # A local build tag is another build of the package (other kernels): it counts.
    assert version_differences([{"torch": "2.13.0+cu128"}], NOW) == [
        "torch 2.13.0+cu128 (now 2.13.0+cpu)"
    ]


def test_matching_versions_and_packages_a_record_lacks_are_no_difference():
    assert version_differences([NOW, {**NOW, "device": "cpu"}], NOW) == []
    assert version_differences([{"transformers": "5.25.0"}], NOW) == []  # an older, shorter record
    assert version_differences([{"vllm": "0.9.0"}], NOW) == []  # not in this process
    assert versions_note("study x", [NOW], NOW) is None


def test_the_note_is_one_line_naming_what_was_stored_and_what_happens_now():
    assert versions_note("study x", [OLDER], NOW) == (
        "note: stored results of study x were made with transformers 5.19.0 (now 5.25.0), "
        "peft 0.21.2 (now 0.22.0); results made now will be marked with the new versions"
    )


def test_versions_in_use_groups_the_records_by_package_and_version():
    used = versions_in_use([("probe", OLDER), ("run a", NOW), ("run b", NOW)])
    assert list(used) == ["knowshift", "torch", "transformers", "peft"]  # packages only
    assert used["transformers"] == {"5.19.0": ["probe"], "5.25.0": ["run a", "run b"]}
    assert used["torch"] == {"2.13.0+cpu": ["probe", "run a", "run b"]}


# --- a probe reusing stored results -------------------------------------------------------------


class _Loaded:
    """A model as `probe` sees it when every asked result is stored: nothing is run on it."""

    tokenizer = None
    fingerprint = "fp-stored"
    dtype = "torch.float32"
    device = "cpu"
    name = "stored-model"


@pytest.fixture
def probed(facts_file, store):
    """Every planted fact stored for `_Loaded` under the default exact settings; returns
    (facts, settings key)."""
    facts = load_facts(f"jsonl:{facts_file}")
    key, params = settings_key(ProbeConfig(), facts, "float32")
    store.register_settings(key, "exact", params, environment_versions())
    results = [ProbeResult(f.id, "exact", key, _Loaded.fingerprint, 1.0, 1.0, CATEGORIES[0])
               for f in facts.facts]  # fmt: skip
    store.put_probe_results(results, {f.id: (f.relation, f.split.value) for f in facts.facts})
    return facts, key


def _reprobe(facts, store, capsys) -> list[str]:
    """Probe every fact again (all stored: no engine runs); the lines it wrote to stderr."""
    results = probe(_Loaded(), facts, list(facts.facts), ProbeConfig(), store, engine=object())
    assert len(results) == len(facts.facts)
    return capsys.readouterr().err.splitlines()


def test_reprobing_under_the_same_versions_says_nothing(probed, store, capsys):
    facts, _ = probed
    assert _reprobe(facts, store, capsys) == []


def test_reprobing_under_other_versions_says_which_in_one_line(probed, store, capsys):
    facts, key = probed
    older = {**store.settings_versions(key)[0], "transformers": "5.19.0", "peft": "0.21.2"}
    store.connection.execute(
        "UPDATE probe_settings SET versions = ? WHERE params_key = ?", (json.dumps(older), key)
    )
    now = environment_versions()
    (line,) = _reprobe(facts, store, capsys)
    assert line == (
        f"note: stored results of probe settings {key} were made with transformers 5.19.0 "
        f"(now {now['transformers']}), peft 0.21.2 (now {now['peft']}); "
        f"{len(facts.facts)} of the facts asked for are reused"
    )
    # The key and the stored record stay as they were: an upgrade invalidates nothing, and
    # reusing results adds no versions to the settings' record.
    assert store.settings_versions(key) == [older]
    assert store.probed_fact_ids(_Loaded.fingerprint, key) == {f.id for f in facts.facts}


# --- a study resuming over runs made under other versions ---------------------------------------


def _rerun_study(tmp_path, facts_file, stored_versions: dict) -> list[str]:
    """A study folder whose stored run was made with `stored_versions`, run again: its probe
    fails at once (the model is not there), so nothing is trained. Returns what it echoed."""
    document = {**TOY_STUDY, "name": "toy", "model": {"name": str(tmp_path / "no-model")},
                "facts": {"source": f"jsonl:{facts_file}"}}  # fmt: skip
    study_dir = tmp_path / "study"
    with Store.for_workspace(study_dir) as store:
        store.register_run("earlier-run", {"model": "m", "versions": stored_versions})
        store.put_study_run("toy", "earlier-run", {"build.frac_unknown": 0.5}, "done")
    lines: list[str] = []
    run_study(parse_study(document), study_dir, device="cpu", echo=lines.append)
    return lines


def test_a_study_rerun_under_other_versions_says_which(tmp_path, facts_file, capsys):
    now = environment_versions()
    lines = _rerun_study(tmp_path, facts_file, {**now, "transformers": "5.19.0"})
    notes = [line for line in lines if line.startswith("note:")]
    assert notes == [
        f"note: stored results of study toy were made with transformers 5.19.0 "
        f"(now {now['transformers']}); results made now will be marked with the new versions"
    ]
    assert lines.index(notes[0]) == 1  # right after the study's first line, before any work


def test_a_study_rerun_under_the_same_versions_says_nothing(tmp_path, facts_file, capsys):
    lines = _rerun_study(tmp_path, facts_file, environment_versions())
    assert lines[0].startswith("study toy:")
    assert not [line for line in lines if "note:" in line]


def test_results_added_after_an_upgrade_record_their_versions(tmp_path):
    """A settings key keeps every set of versions that added results under it, first probe first,
    each once; a database made before this record existed opens and gains it."""
    path = tmp_path / "ws"
    with Store.for_workspace(path) as store:
        store.register_settings("k", "exact", {}, {"transformers": "5.19.0"})
        store.connection.execute("DROP TABLE probe_versions")  # as an older knowshift made it
    with Store.for_workspace(path) as store:
        assert store.settings_versions("k") == [{"transformers": "5.19.0"}]
        for version in ("5.19.0", "5.25.0", "5.25.0"):
            store.add_settings_versions("k", {"transformers": version})
        assert store.settings_versions("k") == [{"transformers": "5.19.0"}, {"transformers": "5.25.0"}]  # fmt: skip
        assert store.settings_versions("unknown") == []
