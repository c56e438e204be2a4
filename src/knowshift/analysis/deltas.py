"""What fine-tuning changed in the weights (METHODS C): relative updates, streamed from the files.

For every scalar of the selected region, r = |w_ft - w_pre| / (|w_pre| + 1e-8), computed in
float32 one tensor at a time from the two checkpoints' safetensors files, so neither model is ever
held whole. One pass builds a histogram of r (fixed bins, 1/256 of an octave wide, independent of
any fraction); it gives the concentration curve and, for any fraction k, the bin that holds the
k-quantile. A second pass over just that bin's values gives the exact threshold, so restoring "the
top k%" never sorts all the weights.

A tuned checkpoint is a model folder (same architecture as the base) or a PEFT LoRA adapter
folder, whose tuned weights are the merged ones, W0 + scaling * B @ A, computed here per tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.models.loader import model_directory

REGIONS = ("layers", "mlp", "attention", "all")
MODES = ("top", "bottom", "random")
CONCENTRATION_FRACTIONS = (0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0)
EPS = 1e-8  # METHODS C: keeps r finite where the pre-trained weight is zero

_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")
_MLP_PARTS = frozenset({"mlp", "feed_forward", "ffn"})
_ATTENTION_PARTS = frozenset({"self_attn", "attn", "attention", "self_attention"})
_MODULE_TYPES = {
    **{p: f"mlp.{p}" for p in ("down_proj", "up_proj", "gate_proj")},
    **{p: f"self_attn.{p}" for p in ("o_proj", "q_proj", "k_proj", "v_proj")},
}
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip

# Histogram of r over its float32 bit pattern, which for r >= 0 orders exactly as r does: bin
# b = ceil(bits / 2^15) holds lower < bits <= upper. Bin 0 is r == 0 exactly; every other bin is
# 1/256 of an octave (under 0.4% wide), and nothing from 1e-45 to 3e38 falls outside.
_BIN_SHIFT = 15
N_BINS = ((0x7F800000 + (1 << _BIN_SHIFT) - 1) >> _BIN_SHIFT) + 1  # up to the pattern of +inf


# --- reading checkpoints -----------------------------------------------------------------------


class Checkpoint:
    """A folder of safetensors weights (one file or shards), read one tensor at a time."""

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({directory / file for file in weight_map.values()})
        elif (directory / "model.safetensors").is_file():
            files = [directory / "model.safetensors"]
        else:
            files = sorted(directory.glob("*.safetensors"))
        self.files: dict[str, Path] = {}
        self.specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for path in files:
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a handle is not iterable)
                    piece = handle.get_slice(name)
                    self.files[name] = path
                    self.specs[name] = (tuple(piece.get_shape()), _torch_dtype(piece.get_dtype()))

    def names(self) -> list[str]:
        """Every tensor name, in the stream order all passes share."""
        return sorted(self.files)

    def tensor(self, name: str) -> torch.Tensor:
        # A fresh handle per tensor: an open handle maps the whole file, and the pages it has
        # read count as resident memory until it closes. The copy is all that stays.
        with safe_open(self.files[name], framework="pt") as handle:
            return handle.get_tensor(name)


class MergedLora:
    """A base checkpoint with a PEFT LoRA adapter merged one tensor at a time, as peft's
    merge_and_unload would: W = W0 + (B @ A) * scaling."""

    def __init__(self, base: Checkpoint, adapter_dir: Path):
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        _check_lora_config(config, adapter_dir)
        weights = adapter_dir / "adapter_model.safetensors"
        if not weights.is_file():
            raise KnowshiftError(
                f"{adapter_dir} has no adapter_model.safetensors; save the adapter with "
                "save_pretrained(safe_serialization=True)"
            )
        self.directory = adapter_dir.resolve()
        self.base = base
        self.alpha = float(config["lora_alpha"])
        self.rslora = bool(config.get("use_rslora", False))
        self.fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
        self.factors = _lora_factors(load_file(weights), base, adapter_dir, self.fan_in_fan_out)
        self.files, self.specs = base.files, base.specs

    def names(self) -> list[str]:
        return self.base.names()

    def tensor(self, name: str) -> torch.Tensor:
        return self.merge(name, self.base.tensor(name))

    def merge(self, name: str, base_weight: torch.Tensor) -> torch.Tensor:
        """The merged weight, in the base weight's dtype; the base weight itself if not adapted."""
        if name not in self.factors:
            return base_weight
        lora_a, lora_b = self.factors[name]
        rank = lora_a.shape[0]  # per module, so a rank_pattern is honoured
        scaling = self.alpha / (math.sqrt(rank) if self.rslora else rank)
        delta = lora_b.float() @ lora_a.float()
        delta = (delta.T if self.fan_in_fan_out else delta) * scaling
        return (base_weight.float() + delta).to(base_weight.dtype)


def _check_lora_config(config: dict, adapter_dir: Path) -> None:
    unsupported = [
        key
        for key in ("use_dora", "modules_to_save", "alpha_pattern", "layer_replication")
        if config.get(key)
    ]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise KnowshiftError(
            f"adapter {adapter_dir} uses {', '.join(unsupported) or config.get('peft_type')}, "
            "which the streaming merge does not handle; merge it with peft's merge_and_unload() "
            "and pass the saved merged model instead"
        )


def _lora_factors(
    tensors: dict[str, torch.Tensor], base: Checkpoint, adapter_dir: Path, fan_in_fan_out: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{base tensor name: (A, B)} from keys like base_model.model.<module>.lora_A.weight."""
    pattern = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
    pieces: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if match is None:
            raise KnowshiftError(
                f"adapter {adapter_dir} holds {key}, which is not a LoRA A/B matrix; merge it "
                "with peft's merge_and_unload() and pass the merged model instead"
            )
        pieces.setdefault(f"{match.group(1)}.weight", {})[match.group(2)] = value
    factors = {}
    for name, ab in pieces.items():
        fits = set(ab) == {"A", "B"} and name in base.specs
        if fits:  # B @ A has the base weight's shape (transposed for Conv1D-style layers)
            shape = (ab["B"].shape[0], ab["A"].shape[1])
            fits = base.specs[name][0] == (shape[::-1] if fan_in_fan_out else shape)
        if not fits:
            raise KnowshiftError(
                f"adapter {adapter_dir} does not fit base {base.directory} at {name}; use the "
                "base model the adapter was trained on"
            )
        factors[name] = (ab["A"], ab["B"])
    return factors


def _torch_dtype(code: str) -> torch.dtype:
    if code not in _DTYPES:
        raise KnowshiftError(
            f"unsupported tensor dtype {code} in a checkpoint; valid: {', '.join(_DTYPES)}"
        )
    return _DTYPES[code]


@dataclass(frozen=True)
class Pair:
    """The two checkpoints restoration compares, and the region's tensor names in stream order."""

    base: Checkpoint
    tuned: Checkpoint | MergedLora
    region: str
    region_names: tuple[str, ...]

    @property
    def is_lora(self) -> bool:
        return isinstance(self.tuned, MergedLora)

    def changes(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base, tuned, r) of one tensor, flattened float32."""
        base = self.base.tensor(name)
        tuned = self.tuned.merge(name, base) if self.is_lora else self.tuned.tensor(name)
        base, tuned = base.reshape(-1).float(), tuned.reshape(-1).float()
        return base, tuned, relative_change(base, tuned)

    def check_finite(self, name: str, total: float) -> None:
        """Fail on a tensor whose sum of r is not finite (a NaN or inf weight)."""
        if not math.isfinite(total):
            raise KnowshiftError(
                f"{name} has non-finite weights in {self.base.directory} or "
                f"{self.tuned.directory}; restoration needs finite checkpoints (did training diverge?)"
            )


def open_pair(base: str | Path, tuned: str | Path, region: str) -> Pair:
    """Resolve the two folders, check they share an architecture and list the region's tensors."""
    check_region(region)
    base_ckpt = Checkpoint(model_directory(str(base)))
    tuned_path = Path(tuned).expanduser()
    if (tuned_path / "adapter_config.json").is_file():
        tuned_ckpt: Checkpoint | MergedLora = MergedLora(base_ckpt, tuned_path)
    else:
        tuned_ckpt = Checkpoint(model_directory(str(tuned)))
    _check_same_architecture(base_ckpt, tuned_ckpt)
    names = tuple(
        name
        for name in tuned_ckpt.names()
        if name in base_ckpt.specs
        and base_ckpt.specs[name][1].is_floating_point
        and in_region(name, region)
    )
    return Pair(base_ckpt, tuned_ckpt, region, names)


def _check_same_architecture(base: Checkpoint, tuned: Checkpoint | MergedLora) -> None:
    """Shared tensors must have the same shapes and the layer tensors must match one to one.
    Other tensors in only one file (a tied lm_head) are allowed: the output copies the tuned."""
    problem = None
    for name in sorted(set(base.specs) | set(tuned.specs)):
        in_base, in_tuned = name in base.specs, name in tuned.specs
        if in_base and in_tuned and base.specs[name][0] != tuned.specs[name][0]:
            problem = f"{name} is {list(base.specs[name][0])} in one, {list(tuned.specs[name][0])} in the other"
        elif not (in_base and in_tuned) and layer_index(name) is not None:
            problem = f"{name} is only in {'the base' if in_base else 'the tuned'}"
        if problem:
            raise KnowshiftError(
                f"{base.directory} and {tuned.directory} are not the same architecture: {problem}; "
                "pass the base model the tuned one was fine-tuned from"
            )


# --- regions -----------------------------------------------------------------------------------


def check_region(region: str) -> None:
    if region not in REGIONS:
        raise unknown_name("region", region, REGIONS)


def layer_index(name: str) -> int | None:
    """The transformer layer a tensor belongs to, or None (embeddings, head, final norm)."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def _is_norm(name: str) -> bool:
    return any("norm" in part or part.startswith("ln_") for part in name.split("."))


def in_region(name: str, region: str) -> bool:
    """`layers`: every transformer-layer weight and bias except norms (METHODS C); `mlp` and
    `attention`: their part of it; `all`: everything, embeddings, head and norms included."""
    if region == "all":
        return True
    if layer_index(name) is None or _is_norm(name):
        return False
    parts = set(name.split("."))
    if region == "mlp":
        return bool(parts & _MLP_PARTS)
    if region == "attention":
        return bool(parts & _ATTENTION_PARTS)
    return True


def module_type(name: str) -> str:
    """mlp.down_proj, self_attn.q_proj, ...; norm, embed_tokens, lm_head or other."""
    parts = name.split(".")
    leaf = parts[-2] if len(parts) > 1 and parts[-1] in ("weight", "bias") else parts[-1]
    if leaf in _MODULE_TYPES:
        return _MODULE_TYPES[leaf]
    if _is_norm(name):
        return "norm"
    if "embed" in leaf or leaf == "lm_head":
        return "embed_tokens" if "embed" in leaf else "lm_head"
    return "other"


# --- relative change and its histogram ---------------------------------------------------------


def relative_change(base: torch.Tensor, tuned: torch.Tensor) -> torch.Tensor:
    """r = |w_ft - w_pre| / (|w_pre| + 1e-8), flattened, in float32."""
    base, tuned = base.reshape(-1).float(), tuned.reshape(-1).float()
    return (tuned - base).abs_().div_(base.abs().add_(EPS))


def stream_changes(pair: Pair) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(name, base, tuned, r) for each region tensor, in stream order."""
    for name in pair.region_names:
        yield name, *pair.changes(name)


def histogram_bins(change: torch.Tensor) -> torch.Tensor:
    """The histogram bin of each (finite, non-negative) r."""
    return (change.view(torch.int32) + ((1 << _BIN_SHIFT) - 1)) >> _BIN_SHIFT


def in_bin(change: torch.Tensor, bin_index: int) -> torch.Tensor:
    bits = change.view(torch.int32)
    return (bits > (bin_index - 1) << _BIN_SHIFT) & (bits <= bin_index << _BIN_SHIFT)


@dataclass(frozen=True)
class DeltaStats:
    """One histogram pass over a base/tuned pair: the size of the update and where it sits."""

    base_dir: str
    tuned_dir: str
    region: str
    n_scalars: int
    n_unchanged: int  # r == 0
    total_change: float  # sum of r
    concentration: tuple[tuple[float, float], ...]  # (top fraction, share of the sum of r)
    # Weights that are exactly 0 in the base (common in a de-quantised GGUF) get r = |d| / 1e-8
    # and can swamp the sum of r; the same curve over the other weights shows the shape beneath.
    n_zero_base: int
    concentration_nonzero_base: tuple[tuple[float, float], ...]
    histogram: tuple[tuple[int, int, float], ...] = field(repr=False)  # (bin, count, sum of r)

    def bin_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts and sums of r for all N_BINS bins."""
        counts, sums = np.zeros(N_BINS, dtype=np.int64), np.zeros(N_BINS)
        for index, count, total in self.histogram:
            counts[index], sums[index] = count, total
        return counts, sums

    def share_of_top(self, fraction: float) -> float:
        """Share of the total change carried by the top `fraction` of scalars (interpolated
        inside the boundary bin, so exact to within its width: 0.4% of the values there)."""
        counts, sums = self.bin_arrays()
        top = _top_sum(counts, sums, n_of(fraction, self.n_scalars))
        return top / self.total_change if self.total_change > 0 else 0.0


def delta_stats(
    base: str | Path,
    tuned: str | Path,
    region: str = "layers",
    concentration_fractions: tuple[float, ...] = CONCENTRATION_FRACTIONS,
) -> DeltaStats:
    """Histogram pass: size and concentration of the update in `region`; computed once, it
    serves restorations at any fraction."""
    return pair_stats(open_pair(base, tuned, region), concentration_fractions)


def pair_stats(pair: Pair, fractions: tuple[float, ...] = CONCENTRATION_FRACTIONS) -> DeltaStats:
    counts = torch.zeros(N_BINS, dtype=torch.int64)
    sums = torch.zeros(N_BINS, dtype=torch.float64)
    zero_counts = torch.zeros(N_BINS, dtype=torch.int64)  # the same, over base weights == 0
    zero_sums = torch.zeros(N_BINS, dtype=torch.float64)
    for name, base, _, change in stream_changes(pair):
        bins = histogram_bins(change)
        binned = torch.bincount(bins, weights=change, minlength=N_BINS)  # float32 per tensor
        pair.check_finite(name, math.inf if len(binned) > N_BINS else float(binned[-1]))  # NaN, inf
        counts += torch.bincount(bins, minlength=N_BINS)
        sums += binned
        zero = base.reshape(-1) == 0
        if zero.any():
            zero_counts += torch.bincount(bins[zero], minlength=N_BINS)
            zero_sums += torch.bincount(bins[zero], weights=change[zero], minlength=N_BINS)
    counts, sums = counts.numpy(), sums.numpy()
    n_scalars = int(counts.sum())
    nonzero = np.flatnonzero(counts)
    return DeltaStats(
        base_dir=str(pair.base.directory),
        tuned_dir=str(pair.tuned.directory),
        region=pair.region,
        n_scalars=n_scalars,
        n_unchanged=int(counts[0]),
        total_change=float(sums.sum()),
        concentration=_curve(counts, sums, fractions),
        n_zero_base=int(zero_counts.sum()),
        concentration_nonzero_base=_curve(
            counts - zero_counts.numpy(), sums - zero_sums.numpy(), fractions
        ),
        histogram=tuple((int(b), int(counts[b]), float(sums[b])) for b in nonzero),
    )


def _curve(counts: np.ndarray, sums: np.ndarray, fractions) -> tuple[tuple[float, float], ...]:
    """(fraction, share of the sum of r in the top fraction of scalars) per fraction."""
    n, total = int(counts.sum()), float(sums.sum())
    return tuple(
        (f, min(1.0, _top_sum(counts, sums, n_of(f, n)) / total) if total > 0 else 0.0)
        for f in fractions
    )


def n_of(fraction: float, n: int) -> int:
    """How many of n scalars a fraction selects: fraction * n rounded half up."""
    return math.floor(fraction * n + 0.5)


def _boundary(counts: np.ndarray, n: int, from_top: bool) -> tuple[int, int]:
    """The bin holding the n-th scalar counted from the top (or bottom), and how many of that
    bin's scalars the n take."""
    ordered = counts[::-1] if from_top else counts
    cumulative = np.cumsum(ordered)
    position = int(np.searchsorted(cumulative, n))  # first where cumulative >= n
    taken = n - int(cumulative[position] - ordered[position])
    return (len(counts) - 1 - position if from_top else position), taken


def _top_sum(counts: np.ndarray, sums: np.ndarray, n: int) -> float:
    """Sum of the n largest r, taking a proportional part of the boundary bin."""
    if n <= 0:
        return 0.0
    bin_index, taken = _boundary(counts, n, from_top=True)
    return float(sums[bin_index + 1 :].sum() + sums[bin_index] * taken / counts[bin_index])


# --- selection: which scalars a (fraction, mode) restores -----------------------------------------


@dataclass(frozen=True)
class Selection:
    """Top/bottom: every r beyond `threshold`, plus the first `n_ties` scalars equal to it in
    stream order. Random: fraction * n positions per tensor, drawn from (seed, tensor name)."""

    fraction: float
    mode: str
    seed: int
    threshold: float | None
    n_ties: int


def check_fraction_mode(fraction: float, mode: str) -> None:
    if mode not in MODES:
        raise unknown_name("restoration mode", mode, MODES)
    if not 0.0 <= fraction <= 1.0:  # also false for NaN
        raise KnowshiftError(f"fraction {fraction} is not in [0, 1]; give e.g. 0.2 for 20%")


def select(
    pair: Pair, stats: DeltaStats | None, fraction: float, mode: str, seed: int
) -> Selection:
    """The threshold (and ties) for top/bottom from the histogram plus one pass over the
    boundary bin; random and fraction 0 need neither (`stats` may be None for them)."""
    if mode == "random" or fraction == 0 or n_of(fraction, stats.n_scalars) == 0:
        return Selection(fraction, mode, seed, None, 0)
    counts, _ = stats.bin_arrays()
    bin_index, needed = _boundary(counts, n_of(fraction, stats.n_scalars), mode == "top")
    # The exact threshold: the needed-th value inside that bin, from its distinct values.
    values, value_counts = _bin_values(pair, bin_index)
    if mode == "top":
        values, value_counts = values.flip(0), value_counts.flip(0)
    position, n_ties = _boundary(value_counts.numpy(), needed, from_top=False)
    return Selection(fraction, mode, seed, float(values[position]), n_ties)


def _bin_values(pair: Pair, bin_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct r values in one bin, ascending, with their counts (second pass)."""
    if bin_index == 0:  # bin 0 holds r == 0 only; its count is all that matters
        return torch.zeros(1), torch.full((1,), torch.iinfo(torch.int64).max)
    values, counts = [], []
    for _, _, _, change in stream_changes(pair):
        distinct, count = torch.unique(change[in_bin(change, bin_index)], return_counts=True)
        values.append(distinct)
        counts.append(count)
    distinct, inverse = torch.unique(torch.cat(values), return_inverse=True)
    totals = torch.zeros(len(distinct), dtype=torch.int64).index_add_(0, inverse, torch.cat(counts))
    return distinct, totals


def random_positions(seed: int, name: str, n: int, fraction: float) -> torch.Tensor:
    """fraction * n positions of one tensor, the same for the same (seed, name) on any run."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randperm(n, generator=generator)[: n_of(fraction, n)]
