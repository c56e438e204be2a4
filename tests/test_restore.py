"""Parameter restoration (METHODS C) on a tiny Llama whose "fine-tune" is a known perturbation,
checked against brute force: a full sort of every relative update."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from knowshift.analysis.deltas import delta_stats, histogram_bins, in_bin, n_of
from knowshift.analysis.restore import (
    format_report,
    format_sweep,
    restore_in_place,
    restore_model,
    restore_sweep,
)
from knowshift.errors import KnowshiftError
from knowshift.models import load_model
from knowshift.models.loader import model_directory

PROMPT = "w3 w17 w42 w8 w61 w5"
TIE_ROWS = 4  # rows of layer 1's up_proj whose update is r = 0.5 exactly (ties)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(94)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


def _tiny_model(seed: int = 0, intermediate_size: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=intermediate_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _save(model, directory):
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    model = _tiny_model()
    with torch.no_grad():  # norms start at exactly 1; give them a spread like a trained model
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
        model.model.layers[1].mlp.up_proj.weight[:TIE_ROWS] = 1.0
    return _save(model, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def tuned_dir(base_dir, tmp_path_factory):
    """Every weight moved by a few percent (embeddings, head and norms too), except layer 0's
    k_proj, which is left unchanged (r = 0), and TIE_ROWS rows of r = 0.5 exactly."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layers.0.self_attn.k_proj" in name:
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.mul_(1 + 0.05 * noise).add_(
                1e-3 * torch.randn(parameter.shape, generator=generator)
            )
        model.model.layers[1].mlp.up_proj.weight[:TIE_ROWS] = 1.5
    return _save(model, tmp_path_factory.mktemp("tuned"))


def _is_layer_weight(name: str) -> bool:
    return ".layers." in name and "norm" not in name


def _brute_force(base_dir, tuned_dir, keep=_is_layer_weight):
    """Region names in stream order, and the concatenated r of all their scalars."""
    base, tuned = (
        load_file(base_dir / "model.safetensors"),
        load_file(tuned_dir / "model.safetensors"),
    )
    names = sorted(n for n in tuned if keep(n))
    change = torch.cat(
        [((tuned[n] - base[n]).abs() / (base[n].abs() + 1e-8)).reshape(-1) for n in names]
    )
    return names, base, tuned, change


def _restored_positions(out_dir, names, base, tuned) -> torch.Tensor:
    """Where the output took the base value of a scalar that fine-tuning had changed."""
    out = load_file(out_dir / "model.safetensors")
    return torch.cat([((out[n] == base[n]) & (tuned[n] != base[n])).reshape(-1) for n in names])


def _logits(directory) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = _tokenizer()(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


# --- which scalars are restored -------------------------------------------------------------


def test_top_restores_exactly_the_largest_updates_with_ties_in_stream_order(
    base_dir, tuned_dir, tmp_path
):
    names, base, tuned, change = _brute_force(base_dir, tuned_dir)
    # A fraction whose boundary falls inside the r == 0.5 ties.
    n_ties = int((change == 0.5).sum())
    assert n_ties >= TIE_ROWS * 32
    n_restore = int((change > 0.5).sum()) + n_ties // 3
    fraction = n_restore / len(change)
    report = restore_model(base_dir, tuned_dir, tmp_path / "out", fraction)

    assert report.n_scalars == len(change) and report.n_restored == n_restore
    expected = torch.zeros(len(change), dtype=torch.bool)
    expected[torch.sort(change, descending=True, stable=True).indices[:n_restore]] = True
    assert torch.equal(_restored_positions(tmp_path / "out", names, base, tuned), expected)
    assert report.threshold == 0.5
    restored = change[expected].double().sum() / change.double().sum()
    assert report.share_of_change_restored == pytest.approx(float(restored), rel=1e-5)


@pytest.mark.parametrize("fraction", [0.013, 0.2, 0.6])
def test_histogram_threshold_equals_the_sorted_one(base_dir, tuned_dir, tmp_path, fraction):
    _, _, _, change = _brute_force(base_dir, tuned_dir)
    report = restore_model(base_dir, tuned_dir, tmp_path / "out", fraction)
    n_restore = n_of(fraction, len(change))
    assert report.n_restored == n_restore
    assert report.threshold == float(torch.sort(change, descending=True).values[n_restore - 1])


def test_bottom_restores_the_smallest_updates_first_the_unchanged_ones(
    base_dir, tuned_dir, tmp_path
):
    names, base, tuned, change = _brute_force(base_dir, tuned_dir)
    n_zero = int((change == 0).sum())
    assert n_zero == 16 * 32  # layer 0's k_proj

    # Fewer than the unchanged scalars: the threshold is 0 and the ties are all in k_proj.
    report = restore_model(base_dir, tuned_dir, tmp_path / "few", 300 / len(change), "bottom")
    assert (report.n_restored, report.threshold) == (300, 0.0)
    assert report.by_module["self_attn.k_proj"].n_restored == 300
    assert report.by_layer[0].n_restored == 300

    # More: the smallest nonzero updates follow, as in an ascending sort.
    n_restore = n_zero + 1000
    report = restore_model(
        base_dir, tuned_dir, tmp_path / "more", n_restore / len(change), "bottom"
    )
    assert report.n_restored == n_restore
    expected = torch.zeros(len(change), dtype=torch.bool)
    expected[torch.sort(change, stable=True).indices[:n_restore]] = True
    observed = _restored_positions(tmp_path / "more", names, base, tuned)
    assert torch.equal(observed, expected & (change > 0))


def test_random_restores_the_same_share_of_every_tensor_reproducibly(base_dir, tuned_dir, tmp_path):
    names, base, tuned, _ = _brute_force(base_dir, tuned_dir)
    fraction = 0.3
    first = restore_model(base_dir, tuned_dir, tmp_path / "a", fraction, "random", seed=1)
    restore_model(base_dir, tuned_dir, tmp_path / "b", fraction, "random", seed=1)
    other = restore_model(base_dir, tuned_dir, tmp_path / "c", fraction, "random", seed=2)

    assert first.threshold is None
    assert first.n_restored == sum(n_of(fraction, base[n].numel()) for n in names)
    out_a, out_b, out_c = (load_file(tmp_path / d / "model.safetensors") for d in "abc")
    up = "model.layers.1.mlp.up_proj.weight"
    assert int((out_a[up] == base[up]).sum()) == n_of(fraction, base[up].numel())
    assert all(torch.equal(out_a[n], out_b[n]) for n in out_a)
    assert not torch.equal(out_a[up], out_c[up])
    assert other.n_restored == first.n_restored


# --- end points: all of the update, none of it -------------------------------------------------


def test_restoring_everything_gives_back_the_base_outputs(base_dir, tuned_dir, tmp_path):
    report = restore_model(base_dir, tuned_dir, tmp_path / "out", 1.0, region="all")
    assert report.share_of_change_restored == pytest.approx(1.0)
    assert torch.equal(_logits(tmp_path / "out"), _logits(base_dir))
    assert not torch.equal(_logits(tuned_dir), _logits(base_dir))


def test_restoring_nothing_gives_back_the_tuned_model(base_dir, tuned_dir, tmp_path):
    report = restore_model(base_dir, tuned_dir, tmp_path / "out", 0.0, region="all")
    assert (report.n_restored, report.share_of_change_restored) == (0, 0.0)
    out, tuned = (
        load_file(tmp_path / "out" / "model.safetensors"),
        load_file(tuned_dir / "model.safetensors"),
    )
    assert out.keys() == tuned.keys() and all(torch.equal(out[n], tuned[n]) for n in out)


def test_the_default_region_leaves_embeddings_head_and_norms_tuned(base_dir, tuned_dir, tmp_path):
    names, base, tuned, change = _brute_force(base_dir, tuned_dir)
    report = restore_model(base_dir, tuned_dir, tmp_path / "out", 1.0)
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert report.n_scalars == len(change)
    for name in out:
        expected = base if name in names else tuned
        assert torch.equal(out[name], expected[name]), name
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}.isdisjoint(names)
    assert set(report.by_module) == {
        "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj",
        "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj",
    }  # fmt: skip
    assert sum(g.share_of_restored for g in report.by_layer.values()) == pytest.approx(1.0)
    assert "mlp.down_proj" in format_report(report) and "100.0%" in format_report(report)


@pytest.mark.parametrize("region, part", [("mlp", ".mlp."), ("attention", ".self_attn.")])
def test_mlp_and_attention_regions_are_their_part_of_the_layers(base_dir, tuned_dir, region, part):
    _, _, _, change = _brute_force(base_dir, tuned_dir, lambda n: _is_layer_weight(n) and part in n)
    assert delta_stats(base_dir, tuned_dir, region=region).n_scalars == len(change)


# --- the histogram pass ------------------------------------------------------------------------


def test_concentration_curve_matches_brute_force(base_dir, tuned_dir):
    _, _, _, change = _brute_force(base_dir, tuned_dir)
    stats = delta_stats(base_dir, tuned_dir)
    cumulative = torch.sort(change.double(), descending=True).values.cumsum(0)
    assert stats.n_scalars == len(change) and stats.n_unchanged == 16 * 32
    assert stats.total_change == pytest.approx(float(cumulative[-1]), rel=1e-5)
    shares = [share for _, share in stats.concentration]
    assert shares == sorted(shares) and shares[-1] == 1.0
    for fraction, share in stats.concentration:
        exact = float(cumulative[n_of(fraction, len(change)) - 1] / cumulative[-1])
        assert share == pytest.approx(exact, abs=2e-3), fraction
        assert stats.share_of_top(fraction) == pytest.approx(share)


def test_base_zeros_are_counted_and_left_out_of_the_second_curve(base_dir, tuned_dir, tmp_path):
    """A de-quantised base has exact zeros whose r = |d| / 1e-8 swamps the sum; the second
    curve is the brute-force one over the other weights."""
    base = load_file(base_dir / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    base[name].view(-1)[:100] = 0.0  # 100 zero weights, all changed by the tuned model
    zeroed = tmp_path / "zeroed"
    zeroed.mkdir()
    save_file(base, zeroed / "model.safetensors", metadata={"format": "pt"})
    for extra in base_dir.iterdir():
        if extra.name != "model.safetensors":
            shutil.copy(extra, zeroed / extra.name)
    _, base_t, _, change = _brute_force(zeroed, tuned_dir)
    nonzero_base = torch.cat(
        [(base_t[n] != 0).reshape(-1) for n in sorted(n for n in base_t if _is_layer_weight(n))]
    )
    stats = delta_stats(zeroed, tuned_dir)
    assert stats.n_zero_base == 100
    assert stats.share_of_top(100 / stats.n_scalars) > 0.99  # r ~ 1e5 each: nearly all the sum
    kept = torch.sort(change[nonzero_base].double(), descending=True).values.cumsum(0)
    for fraction, share in stats.concentration_nonzero_base:
        exact = float(kept[n_of(fraction, len(kept)) - 1] / kept[-1])
        assert share == pytest.approx(exact, abs=2e-3), fraction


def test_histogram_bins_order_exactly_as_the_values():
    values = torch.cat(
        [torch.zeros(3), torch.rand(20000) * 10 ** torch.empty(20000).uniform_(-40, 30)]
    )
    values = torch.sort(values).values
    bins = histogram_bins(values)
    assert torch.all(bins[1:] >= bins[:-1]) and int(bins[0]) == 0 and int(bins[3]) > 0
    assert all(bool(in_bin(values[i : i + 1], int(bins[i]))) for i in range(0, 20003, 997))


def test_stats_are_reused_only_for_their_own_pair_and_region(base_dir, tuned_dir, tmp_path):
    stats = delta_stats(base_dir, tuned_dir, region="mlp")
    report = restore_model(base_dir, tuned_dir, tmp_path / "a", 0.1, region="mlp", stats=stats)
    assert report.n_restored == n_of(0.1, stats.n_scalars)
    with pytest.raises(KnowshiftError, match="stats were computed"):
        restore_model(base_dir, tuned_dir, tmp_path / "b", 0.1, region="layers", stats=stats)


# --- the written folder ----------------------------------------------------------------------


def test_sharded_output_loads_like_any_model(base_dir, tuned_dir, tmp_path):
    restore_model(base_dir, tuned_dir, tmp_path / "one", 0.2)
    restore_model(base_dir, tuned_dir, tmp_path / "many", 0.2, shard_bytes=20_000)
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert torch.equal(_logits(tmp_path / "many"), _logits(tmp_path / "one"))
    from_shards, from_one = (
        delta_stats(base_dir, tmp_path / "many"),
        delta_stats(base_dir, tmp_path / "one"),
    )
    assert from_shards.histogram == from_one.histogram
    loaded = load_model(str(tmp_path / "many"), device="cpu", dtype="float32")
    assert loaded.tokenizer(PROMPT).input_ids[:2] == [5, 19]
    assert json.loads((tmp_path / "one" / "restore.json").read_text())["fraction"] == 0.2


def test_output_keeps_the_tuned_dtype_and_copies_what_only_the_tuned_has(
    base_dir, tuned_dir, tmp_path
):
    # A bf16 fine-tune whose file omits lm_head (as a tied save would).
    tensors = load_file(tuned_dir / "model.safetensors")
    del tensors["lm_head.weight"]
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    save_file({n: t.bfloat16() for n, t in tensors.items()}, bf16 / "model.safetensors")
    (bf16 / "config.json").write_text((tuned_dir / "config.json").read_text())
    restore_model(base_dir, bf16, tmp_path / "out", 0.5)
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert "lm_head.weight" not in out and {t.dtype for t in out.values()} == {torch.bfloat16}
    assert torch.equal(
        out["model.embed_tokens.weight"], tensors["model.embed_tokens.weight"].bfloat16()
    )


# --- in place and sweeps --------------------------------------------------------------------


def test_sweep_in_place_matches_written_models(base_dir, tuned_dir, tmp_path):
    ids = _tokenizer()(PROMPT, return_tensors="pt").input_ids
    seen = []

    def evaluate(loaded):
        with torch.no_grad():
            seen.append(loaded.model(ids).logits)
        return {"mean_logit": float(seen[-1].mean())}

    points = restore_sweep(
        base_dir, tuned_dir, [(0.3, "top"), (0.3, "random")], evaluate,
        region="all", device="cpu", dtype="float32", endpoints=True,
    )  # fmt: skip
    assert [(p.fraction, p.mode) for p in points] == [
        (0, "top"),
        (0.3, "top"),
        (0.3, "random"),
        (1, "top"),
    ]
    restore_model(base_dir, tuned_dir, tmp_path / "top", 0.3, region="all")
    restore_model(base_dir, tuned_dir, tmp_path / "random", 0.3, "random", region="all")
    expected = [tuned_dir, tmp_path / "top", tmp_path / "random", base_dir]
    for logits, directory in zip(seen, expected, strict=True):
        assert torch.equal(logits, _logits(directory)), directory
    assert points[1].metrics["mean_logit"] == float(seen[1].mean())
    assert points[1].report.n_restored == n_of(0.3, points[1].report.n_scalars)
    table = format_sweep(points).splitlines()
    assert len(table) == 5 and "mean_logit" in table[0] and "random" in table[3]


def test_in_place_restores_a_bf16_model_to_the_rounded_restored_values(
    base_dir, tuned_dir, tmp_path
):
    loaded = load_model(str(tuned_dir), device="cpu", dtype="bfloat16")
    report = restore_in_place(loaded.model, base_dir, tuned_dir, 0.25, "top")
    restore_model(base_dir, tuned_dir, tmp_path / "out", 0.25)
    out = load_file(tmp_path / "out" / "model.safetensors")
    parameters = dict(loaded.model.named_parameters())
    assert report.out_dir is None and report.n_restored == n_of(0.25, report.n_scalars)
    assert all(torch.equal(parameters[n], out[n].bfloat16()) for n in out)


# --- LoRA ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "rslora"])
def lora(request, base_dir, tmp_path_factory):
    """An adapter folder and peft's own merge of it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=2, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False, use_rslora=request.param,
    )  # fmt: skip
    wrapped = get_peft_model(model, config)
    adapter = tmp_path_factory.mktemp("adapter")
    wrapped.save_pretrained(adapter)
    return adapter, wrapped.merge_and_unload().state_dict()


def test_streaming_lora_merge_equals_peft_merge(base_dir, lora, tmp_path):
    adapter, merged = lora
    restore_model(base_dir, adapter, tmp_path / "out", 0.0)
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert set(out) == set(merged)
    for name in out:
        assert torch.equal(out[name], merged[name]), name


def test_lora_update_sits_only_in_its_target_modules(base_dir, lora, tmp_path):
    adapter, _ = lora
    stats = delta_stats(base_dir, adapter)
    n_targeted = 2 * (32 * 32 + 16 * 32 + 32 * 64)  # q_proj, v_proj, down_proj in 2 layers
    assert stats.n_scalars - stats.n_unchanged == n_targeted
    report = restore_model(base_dir, adapter, tmp_path / "out", 1.0, stats=stats)
    assert set(k for k, g in report.by_module.items() if g.share_of_restored_change > 0) == {
        "self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj",
    }  # fmt: skip
    assert torch.equal(_logits(tmp_path / "out"), _logits(base_dir))


def test_lora_sweep_evaluates_the_merged_model_and_the_base(base_dir, lora, tmp_path):
    adapter, _ = lora
    ids = _tokenizer()(PROMPT, return_tensors="pt").input_ids
    seen = []

    def evaluate(loaded):
        with torch.no_grad():
            seen.append(loaded.model(ids).logits)
        return {}

    restore_sweep(base_dir, adapter, [], evaluate, device="cpu", dtype="float32", endpoints=True)
    restore_model(base_dir, adapter, tmp_path / "merged", 0.0)
    assert torch.equal(seen[0], _logits(tmp_path / "merged"))
    assert torch.equal(seen[1], _logits(base_dir))


# --- errors users can fix ---------------------------------------------------------------------


def test_different_architectures_are_refused(base_dir, tmp_path):
    other = _save(_tiny_model(intermediate_size=48), tmp_path / "other")
    with pytest.raises(KnowshiftError, match="not the same architecture: model.layers.0.mlp"):
        delta_stats(base_dir, other)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan])
def test_fraction_outside_zero_one_is_refused(base_dir, tuned_dir, tmp_path, fraction):
    with pytest.raises(KnowshiftError, match=r"not in \[0, 1\]"):
        restore_model(base_dir, tuned_dir, tmp_path / "out", fraction)
    assert not (tmp_path / "out").exists()


def test_unknown_mode_and_region_say_what_is_valid(base_dir, tuned_dir, tmp_path):
    with pytest.raises(KnowshiftError, match="did you mean 'top'"):
        restore_model(base_dir, tuned_dir, tmp_path / "out", 0.1, mode="topp")
    with pytest.raises(KnowshiftError, match="did you mean 'mlp'"):
        delta_stats(base_dir, tuned_dir, region="mlps")


def test_missing_folders_and_occupied_outputs_are_refused(base_dir, tuned_dir, tmp_path):
    with pytest.raises(KnowshiftError, match="unknown model"):
        delta_stats(tmp_path / "nowhere", tuned_dir)
    with pytest.raises(KnowshiftError, match="not in the local Hugging Face cache"):
        model_directory("nobody-knowshift/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowshiftError, match="not a model directory"):
        model_directory(str(tmp_path / "empty"))
    with pytest.raises(KnowshiftError, match="already exists and is not empty"):
        restore_model(base_dir, tuned_dir, tuned_dir, 0.1)


def test_non_finite_weights_are_refused(base_dir, tuned_dir, tmp_path):
    tensors = load_file(tuned_dir / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = math.nan
    broken = tmp_path / "broken"
    broken.mkdir()
    save_file(tensors, broken / "model.safetensors")
    (broken / "config.json").write_text((tuned_dir / "config.json").read_text())
    with pytest.raises(KnowshiftError, match="down_proj.weight has non-finite weights"):
        delta_stats(base_dir, broken)
