"""The fine-tuning loop on the planted-fact model."""

from __future__ import annotations

import json

import pytest
import torch

from knowshift.errors import KnowshiftError
from knowshift.models import load_model
from knowshift.train.config import TrainConfig
from knowshift.train.data import IGNORE_INDEX, collate, completion_loss, tokenize_pairs
from knowshift.train.loop import train
from knowshift.train.measure import EvalItem


def _pairs_and_items(planted):
    """Closed-book pairs of the planted (Known) and unseen (Unknown) test facts."""
    pairs, items = [], []
    for fact in planted.by_split("test"):
        kind = "Known" if fact.id.startswith("planted:") else "Unknown"
        prompt = f"Q: {fact.question}\nA:"
        pairs.append((prompt, f" {fact.answer}\n"))
        items.append(EvalItem(fact.id, prompt, (f" {fact.answer}",), ("train", f"train/{kind}")))
    for fact in planted.by_split("dev"):
        items.append(EvalItem(fact.id, f"Q: {fact.question}\nA:", (f" {fact.answer}",), ("dev",)))
    return pairs, items


def _fresh(planted_model_dir):
    return load_model(str(planted_model_dir), dtype="float32")


def test_prompt_tokens_carry_no_loss(planted_model):
    pairs = [("Q: What is the capital of Ka?\nA:", " Lo\n"), ("Q: Hi?\nA:", " Mivane Pesho\n")]
    tokenized = tokenize_pairs(planted_model.tokenizer, pairs)
    batch = collate(tokenized, pad_id=0)
    width = batch["input_ids"].shape[1]
    for row, pair in enumerate(tokenized):
        labels = batch["labels"][row]
        start = width - len(pair.input_ids)  # left padding
        assert (labels[: start + pair.n_prompt] == IGNORE_INDEX).all()
        completion = labels[start + pair.n_prompt :]
        assert planted_model.tokenizer.decode(completion[:-1]) == pairs[row][1]
        assert completion[-1] == planted_model.tokenizer.eos_token_id


def test_completion_loss_equals_the_full_logits_loss(planted_model):
    """Logits for the last positions only give the loss of the whole sequence's logits."""
    pairs = [("Q: What is the capital of Ka?\nA:", " Lo\n"), ("Q: Hi?\nA:", " Mivane Pesho\n")]
    batch = collate(tokenize_pairs(planted_model.tokenizer, pairs), pad_id=0)
    with torch.no_grad():
        full = planted_model.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"], labels=batch["labels"],
        ).loss  # fmt: skip
        ours = completion_loss(planted_model.model, batch)
    assert torch.allclose(full, ours, rtol=1e-5)


def _first_fitted(records, group, threshold=0.9):
    return next((r.epoch for r in records if r.accuracy[group] >= threshold), None)


def test_unknown_examples_are_fitted_later_than_known(planted, planted_model_dir, tmp_path):
    pairs, items = _pairs_and_items(planted)
    config = TrainConfig(
        epochs=40, batch_size=8, lr=1e-3, precision="fp32", stop_at_full_train_accuracy=True
    )
    result = train(_fresh(planted_model_dir), pairs, items, config, tmp_path / "run")
    known, unknown = (
        _first_fitted(result.records, "train/Known"),
        _first_fitted(result.records, "train/Unknown"),
    )
    assert known is not None and unknown is not None, [r.accuracy for r in result.records]
    assert known < unknown
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [r.epoch for r in result.records]
    assert (tmp_path / "run" / "checkpoints" / "early_stop" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_lora_leaves_the_base_weights_bit_identical(planted, planted_model_dir, tmp_path):
    loaded = _fresh(planted_model_dir)
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    pairs, items = _pairs_and_items(planted)
    config = TrainConfig(method="lora", epochs=2, lr=1e-2, lora_rank=4, precision="fp32",
                         lora_target_modules=("q_proj", "v_proj", "up_proj"))  # fmt: skip
    train(loaded, pairs, items, config, tmp_path / "lora")
    after = dict(loaded.model.named_parameters())
    changed_lora = 0
    for name, param in after.items():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if "lora_" in name:
            changed_lora += 1
            continue
        assert torch.equal(param, before[base_name]), name
    assert changed_lora > 0
    assert (tmp_path / "lora" / "checkpoints" / "last" / "adapter_model.safetensors").is_file()


def test_resumed_run_equals_an_uninterrupted_one(planted, planted_model_dir, tmp_path):
    pairs, items = _pairs_and_items(planted)
    config = TrainConfig(epochs=4, batch_size=8, lr=1e-3, precision="fp32")
    straight = train(_fresh(planted_model_dir), pairs, items, config, tmp_path / "straight")
    # "Interrupted" after epoch 2, then the same command again.
    train(
        _fresh(planted_model_dir),
        pairs,
        items,
        TrainConfig(**{**config.__dict__, "epochs": 2}),
        tmp_path / "resumed",
    )
    resumed = train(_fresh(planted_model_dir), pairs, items, config, tmp_path / "resumed")
    assert [r.epoch for r in resumed.records] == [1, 2, 3, 4]
    for a, b in zip(straight.records, resumed.records, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.accuracy == b.accuracy


def test_lora_target_modules_the_model_lacks(planted, planted_model_dir, tmp_path):
    pairs, items = _pairs_and_items(planted)
    config = TrainConfig(method="lora", lora_target_modules=("c_attn",))
    with pytest.raises(KnowshiftError, match="c_attn not in this model.*q_proj"):
        train(_fresh(planted_model_dir), pairs, items, config, tmp_path / "bad")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("method", "qlora", "unknown method"), ("lr", 0.0, "lr must be above 0"),
     ("epochs", 0, "epochs must be at least 1"), ("schedule", "cosin", "did you mean 'cosine'")],
)  # fmt: skip
def test_bad_settings_are_clear_errors(field, value, message):
    with pytest.raises(KnowshiftError, match=message):
        TrainConfig(**{field: value}).validate()


def test_records_time_training_and_measurement_apart(planted, planted_model_dir, tmp_path):
    pairs, items = _pairs_and_items(planted)
    result = train(
        _fresh(planted_model_dir),
        pairs,
        items,
        TrainConfig(epochs=3, precision="fp32"),
        tmp_path / "t",
    )
    for record in result.records:
        assert record.train_seconds > 0 and record.measure_seconds > 0
    # Every epoch trains on the same data: no epoch's training time may be a sliver of another's.
    times = [r.train_seconds for r in result.records]
    assert max(times) < 5 * min(times), times


def test_runs_with_other_precisions_in_one_process(planted, planted_model_dir, tmp_path):
    """A study trains many runs in one process; accelerate's global state must not leak."""
    pairs, items = _pairs_and_items(planted)
    for index, precision in enumerate(["fp32", "bf16", "fp32"]):
        config = TrainConfig(epochs=1, precision=precision, grad_accum=1 + index)
        result = train(_fresh(planted_model_dir), pairs, items, config, tmp_path / f"r{index}")
        assert len(result.records) == 1


def test_a_run_folder_from_before_the_facts_digest_still_resumes(tmp_path):
    # Run ids once left out the facts' content; a folder such a run started resumes under its
    # own id, and any other run is still refused.
    from knowshift.atomic import write_json
    from knowshift.train.run import _folder_run_id, run_id_of

    resolved = {"data": "d", "model": "m", "facts": "jsonl:f", "facts_digest": "abc"}
    legacy = {k: v for k, v in resolved.items() if k != "facts_digest"}
    write_json(tmp_path / "run.json", {"run_id": run_id_of(legacy), "config": legacy})
    assert _folder_run_id(tmp_path, run_id_of(resolved), resolved) == run_id_of(legacy)
    other = {**resolved, "model": "another"}
    with pytest.raises(KnowshiftError, match="holds another run"):
        _folder_run_id(tmp_path, run_id_of(other), other)
    assert _folder_run_id(tmp_path / "new", run_id_of(resolved), resolved) == run_id_of(resolved)
