"""Shared fixtures: the planted-fact model (trained once per session) and clean workspaces."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Tests run offline: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from planted import planted_facts, train_planted_model  # noqa: E402


@pytest.fixture(scope="session")
def planted():
    """The planted fact base: dev exemplars, planted test facts, unseen test facts."""
    return planted_facts()


@pytest.fixture(scope="session")
def planted_model_dir(planted, tmp_path_factory) -> Path:
    """A tiny model trained on the planted facts, saved like any local model."""
    return train_planted_model(planted, tmp_path_factory.mktemp("planted-model"))


@pytest.fixture(scope="session")
def planted_model(planted_model_dir):
    from knowshift.models import load_model

    return load_model(str(planted_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def facts_file(planted, tmp_path_factory) -> Path:
    """The planted facts as a JSONL file with ids, relation, subject and split columns."""
    path = tmp_path_factory.mktemp("facts") / "planted.jsonl"
    records = [
        {"id": f.id, "relation": f.relation, "subject": f.subject, "question": f.question,
         "answers": list(f.answers), "split": f.split.value}
        for f in planted.facts
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path):
    from knowshift.store import Store

    store = Store.for_workspace(tmp_path / "workspace")
    yield store
    store.close()


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """Model digests and conversions go to a cache of the module's own, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNOWSHIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
