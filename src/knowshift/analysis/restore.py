"""Parameter restoration (METHODS C; Ye et al., EMNLP 2025): reset part of a fine-tuning update.

The scalars of the region are ranked by their relative update r (see `deltas`); the top, bottom or
a random `fraction` of them go back to their pre-trained values. `restore_model` writes the result
as a model folder that loads like any other; `restore_in_place` sets the parameters of a loaded
tuned model, so `restore_sweep` can evaluate many fractions with one model load and one histogram.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from knowshift.analysis.deltas import (
    DeltaStats,
    Pair,
    Selection,
    check_fraction_mode,
    layer_index,
    module_type,
    open_pair,
    pair_stats,
    random_positions,
    select,
    stream_changes,
)
from knowshift.errors import KnowshiftError

if TYPE_CHECKING:
    from knowshift.models.loader import LoadedModel

SHARD_BYTES = 1 << 30
# What a model folder needs besides its weights, copied from the tuned folder (the base for LoRA).
SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "*.model", "chat_template.*",
)  # fmt: skip
_WRAPPER_PREFIXES = ("base_model.model.", "module.", "_orig_mod.")


@dataclass(frozen=True)
class GroupShare:
    """What restoration did to one module type or one layer."""

    n_scalars: int  # in the region
    n_restored: int
    share_of_restored: float  # n_restored / all restored scalars
    share_of_restored_change: float  # its sum of r restored / all r restored


@dataclass(frozen=True)
class RestoreReport:
    """One restoration: how much of the update it undid and where."""

    base_dir: str
    tuned_dir: str
    fraction: float
    mode: str
    region: str
    seed: int
    n_scalars: int
    n_restored: int
    threshold: float | None  # top: smallest r restored; bottom: largest; random: None
    total_change: float  # sum of r over the region
    share_of_change_restored: float
    by_module: dict[str, GroupShare]
    by_layer: dict[int, GroupShare]
    out_dir: str | None  # None when restored in place


@dataclass(frozen=True)
class SweepPoint:
    """One evaluated restoration of a sweep."""

    fraction: float
    mode: str
    report: RestoreReport
    metrics: dict[str, float]


def restore_model(
    base: str | Path,
    tuned: str | Path,
    out_dir: str | Path,
    fraction: float,
    mode: str = "top",
    region: str = "layers",
    seed: int = 0,
    stats: DeltaStats | None = None,
    *,
    shard_bytes: int = SHARD_BYTES,
) -> RestoreReport:
    """Write `tuned` with `fraction` of its region's update reset to `base` into `out_dir`.

    `base` is a model folder, embedded name or cached hub id; `tuned` a model folder of the same
    architecture or a LoRA adapter folder (the output is then the merged model). Tensors outside
    the region are copied from the tuned model, in its dtype. Memory: one shard (`shard_bytes`)
    plus a few tensors. `stats` from `delta_stats` saves the histogram pass (top/bottom only).
    """
    # Check everything cheap before the passes over the weights.
    check_fraction_mode(fraction, mode)
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KnowshiftError(f"{out} already exists and is not empty; give a new folder")
    pair = open_pair(base, tuned, region)
    restorer = _restorer(pair, stats, fraction, mode, seed)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = _write_restored(pair, restorer, tmp, out, shard_bytes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written model is never left behind
        raise
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return report


def _write_restored(
    pair: Pair, restorer: _Restorer, tmp: Path, out: Path, shard_bytes: int
) -> RestoreReport:
    """Every tensor of the tuned model into new shards (restored where in the region), then
    config, tokenizer and chat template, and a record of what was done."""
    names = pair.tuned.names()
    writer = _ShardWriter(tmp, [(n, _nbytes(*pair.tuned.specs[n])) for n in names], shard_bytes)
    region_names = set(pair.region_names)
    for name in names:
        shape, dtype = pair.tuned.specs[name]
        if name in region_names:
            restored = restorer.restore(name, *pair.changes(name))
            writer.add(name, restored.view(shape).to(dtype))
        else:
            writer.add(name, pair.tuned.tensor(name))
    writer.finish()
    source = pair.base.directory if pair.is_lora else pair.tuned.directory
    for pattern in SIDE_FILES:
        for path in source.glob(pattern):
            shutil.copy2(path, tmp / path.name)
    report = restorer.report(str(out))
    (tmp / "restore.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
    return report


def restore_in_place(
    model: torch.nn.Module,
    base: str | Path,
    tuned: str | Path,
    fraction: float,
    mode: str = "top",
    region: str = "layers",
    seed: int = 0,
    stats: DeltaStats | None = None,
) -> RestoreReport:
    """Set the region's parameters of a loaded tuned model (any dtype or device) to the restored
    values. Every region parameter is rewritten from the files, so calls can follow each other
    in any order; fraction 0 gives back the tuned values. For a LoRA adapter, `model` is the base
    with the adapter merged (merge_and_unload)."""
    check_fraction_mode(fraction, mode)
    pair = open_pair(base, tuned, region)
    return _restore_parameters(_parameters_for(model, pair), pair, fraction, mode, seed, stats)


def restore_sweep(
    base: str | Path,
    tuned: str | Path,
    points: Sequence[tuple[float, str]],
    evaluate: Callable[[LoadedModel], Mapping[str, float]],
    *,
    region: str = "layers",
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    endpoints: bool = False,
    stats: DeltaStats | None = None,
) -> list[SweepPoint]:
    """Evaluate the tuned model restored at each (fraction, mode), loading it once.

    `evaluate` gets the LoadedModel with its parameters restored and returns named metrics.
    `endpoints` adds the unrestored tuned model (fraction 0) first and the region fully restored
    (fraction 1, top) last. `stats` (from `delta_stats` of the same pair and region) saves
    the histogram pass.
    """
    points = [(0.0, "top"), *points, (1.0, "top")] if endpoints else list(points)
    for fraction, mode in points:
        check_fraction_mode(fraction, mode)
    pair = open_pair(base, tuned, region)
    loaded = _load_tuned(base, tuned, pair.is_lora, device, dtype)
    parameters = _parameters_for(loaded.model, pair)
    needs_stats = any(mode != "random" and fraction > 0 for fraction, mode in points)
    if stats is None and needs_stats:
        stats = pair_stats(pair)
    results = []
    for fraction, mode in points:
        report = _restore_parameters(parameters, pair, fraction, mode, seed, stats)
        results.append(SweepPoint(fraction, mode, report, dict(evaluate(loaded))))
    return results


# --- the restoration itself --------------------------------------------------------------------


class _Restorer:
    """Applies a selection tensor by tensor, in stream order, and tallies what it restored."""

    def __init__(self, pair: Pair, selection: Selection):
        self.pair, self.selection = pair, selection
        self.ties_left = selection.n_ties
        # (module type or layer) -> [n_scalars, n_restored, sum of r restored]
        self.by_module: dict[str, list] = {}
        self.by_layer: dict[int, list] = {}
        self.total_change = 0.0

    def restore(
        self, name: str, base: torch.Tensor, tuned: torch.Tensor, change: torch.Tensor
    ) -> torch.Tensor:
        """The tensor with its selected scalars back at the base values (flat float32)."""
        total = float(change.sum())
        self.pair.check_finite(name, total)
        mask = self._mask(name, change)
        restored = change[mask]
        n_restored, restored_change = len(restored), float(restored.sum())
        groups = [(self.by_module, module_type(name)), (self.by_layer, layer_index(name))]
        for tally, key in groups:
            if key is not None:
                row = tally.setdefault(key, [0, 0, 0.0])
                row[0] += change.numel()
                row[1] += n_restored
                row[2] += restored_change
        self.total_change += total
        return torch.where(mask, base, tuned)

    def _mask(self, name: str, change: torch.Tensor) -> torch.Tensor:
        s = self.selection
        if s.mode == "random" or s.threshold is None:
            mask = torch.zeros_like(change, dtype=torch.bool)
            if s.mode == "random":
                mask[random_positions(s.seed, name, change.numel(), s.fraction)] = True
            return mask
        mask = change > s.threshold if s.mode == "top" else change < s.threshold
        if self.ties_left:  # ties at the threshold: the first ones in stream order
            ties = (change == s.threshold).nonzero().squeeze(1)[: self.ties_left]
            mask[ties] = True
            self.ties_left -= len(ties)
        return mask

    def report(self, out_dir: str | None) -> RestoreReport:
        pair = self.pair
        n_restored = sum(row[1] for row in self.by_module.values())
        restored_change = sum(row[2] for row in self.by_module.values())
        total = self.total_change
        s = self.selection
        return RestoreReport(
            base_dir=str(pair.base.directory),
            tuned_dir=str(pair.tuned.directory),
            fraction=s.fraction,
            mode=s.mode,
            region=pair.region,
            seed=s.seed,
            n_scalars=sum(row[0] for row in self.by_module.values()),
            n_restored=n_restored,
            threshold=s.threshold,
            total_change=total,
            share_of_change_restored=restored_change / total if total > 0 else 0.0,
            by_module=_shares(self.by_module, n_restored, restored_change),
            by_layer=_shares(self.by_layer, n_restored, restored_change),
            out_dir=out_dir,
        )


def _shares(tally: dict, n_restored: int, restored_change: float) -> dict:
    return {
        key: GroupShare(
            n_scalars=n,
            n_restored=k,
            share_of_restored=k / n_restored if n_restored else 0.0,
            share_of_restored_change=change / restored_change if restored_change else 0.0,
        )
        for key, (n, k, change) in sorted(tally.items())
    }


def _restorer(
    pair: Pair, stats: DeltaStats | None, fraction: float, mode: str, seed: int
) -> _Restorer:
    return _Restorer(
        pair, select(pair, _stats_for(pair, stats, fraction, mode), fraction, mode, seed)
    )


def _stats_for(
    pair: Pair, stats: DeltaStats | None, fraction: float, mode: str
) -> DeltaStats | None:
    """The histogram top/bottom need: the one given (if it is this pair's) or a fresh pass."""
    if mode == "random" or fraction == 0:
        return None
    if stats is None:
        return pair_stats(pair)
    given = (stats.base_dir, stats.tuned_dir, stats.region)
    if given != (str(pair.base.directory), str(pair.tuned.directory), pair.region):
        raise KnowshiftError(
            f"stats were computed for {given[1]} against {given[0]} in region {given[2]!r}, not "
            f"for this restoration; compute them with delta_stats(base, tuned, region={pair.region!r})"
        )
    return stats


def _restore_parameters(
    parameters: dict[str, torch.nn.Parameter],
    pair: Pair,
    fraction: float,
    mode: str,
    seed: int,
    stats: DeltaStats | None,
) -> RestoreReport:
    restorer = _restorer(pair, stats, fraction, mode, seed)
    with torch.no_grad():
        for name, base, tuned, change in stream_changes(pair):
            parameter = parameters[name]
            parameter.copy_(restorer.restore(name, base, tuned, change).view(parameter.shape))
    return restorer.report(None)


def _parameters_for(model: torch.nn.Module, pair: Pair) -> dict[str, torch.nn.Parameter]:
    """The model's parameter for each region tensor of the checkpoints, by name up to wrapper
    prefixes (peft, DDP, torch.compile) or, failing that, one unique suffix match."""
    named = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if "lora_" in name:
            raise KnowshiftError(
                "the model has unmerged LoRA layers; restore into model.merge_and_unload()"
            )
        for prefix in _WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
        named[name] = parameter
    found = {}
    for name in pair.region_names:
        candidates = [named[name]] if name in named else [
            p for n, p in named.items() if n.endswith(f".{name}") or name.endswith(f".{n}")
        ]  # fmt: skip
        shape = pair.base.specs[name][0]
        if len(candidates) != 1 or tuple(candidates[0].shape) != shape:
            raise KnowshiftError(
                f"the model has no parameter {name} of shape {list(shape)}; pass the model "
                f"loaded from {pair.tuned.directory}"
            )
        found[name] = candidates[0]
    return found


def _load_tuned(base, tuned, is_lora: bool, device: str, dtype: str) -> LoadedModel:
    """The tuned model as knowshift loads it; for LoRA the base with the adapter merged."""
    from knowshift.models import load_model

    if not is_lora:
        return load_model(str(tuned), device=device, dtype=dtype)
    loaded = load_model(str(base), device=device, dtype=dtype, adapter=str(tuned))
    return dataclasses.replace(loaded, model=loaded.model.merge_and_unload())


# --- writing -------------------------------------------------------------------------------------


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * dtype.itemsize


class _ShardWriter:
    """Writes tensors, in a fixed order, into safetensors shards of about `shard_bytes` named as
    save_pretrained names them; holds at most one shard in memory."""

    def __init__(self, directory: Path, sizes: list[tuple[str, int]], shard_bytes: int):
        shards: list[list[str]] = [[]]
        filled = 0
        for name, size in sizes:
            if shards[-1] and filled + size > shard_bytes:
                shards.append([])
                filled = 0
            shards[-1].append(name)
            filled += size
        self.directory, self.shards = directory, shards
        self.total_bytes = sum(size for _, size in sizes)
        self.shard_index = 0
        self.pending: dict[str, torch.Tensor] = {}
        self.weight_map: dict[str, str] = {}

    def _file_name(self, index: int) -> str:
        if len(self.shards) == 1:
            return "model.safetensors"
        return f"model-{index + 1:05d}-of-{len(self.shards):05d}.safetensors"

    def add(self, name: str, tensor: torch.Tensor) -> None:
        shard = self.shards[self.shard_index]
        assert name == shard[len(self.pending)], "tensors out of the planned order"
        self.pending[name] = tensor.contiguous()
        if len(self.pending) == len(shard):
            file_name = self._file_name(self.shard_index)
            save_file(self.pending, self.directory / file_name, metadata={"format": "pt"})
            self.weight_map.update(dict.fromkeys(self.pending, file_name))
            self.pending = {}
            self.shard_index += 1

    def finish(self) -> None:
        if len(self.shards) > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": self.weight_map}
            index_path = self.directory / "model.safetensors.index.json"
            index_path.write_text(json.dumps(index, indent=1))


# --- text ----------------------------------------------------------------------------------------


def format_report(report: RestoreReport) -> str:
    """A restoration as a few lines: how much, how large, and where (module types, layers)."""
    threshold = "" if report.threshold is None else f", r threshold {report.threshold:.3g}"
    lines = [
        f"restored {report.mode} {100 * report.fraction:g}% of the {report.region} update: "
        f"{report.n_restored:,} of {report.n_scalars:,} scalars{threshold}, "
        f"{100 * report.share_of_change_restored:.1f}% of the total relative change",
        f"  {'module':18s} {'restored':>12s} {'share':>7s} {'share of r':>11s}",
    ]
    for module, group in sorted(report.by_module.items(), key=lambda kv: -kv[1].n_restored):
        lines.append(
            f"  {module:18s} {group.n_restored:12,d} {100 * group.share_of_restored:6.1f}% "
            f"{100 * group.share_of_restored_change:10.1f}%"
        )
    by_layer = " ".join(f"{k}:{100 * g.share_of_restored:.1f}" for k, g in report.by_layer.items())
    lines.append(f"  by layer (% of restored): {by_layer}")
    return "\n".join(lines)


def format_concentration(stats: DeltaStats) -> str:
    """The concentration curve: share of the total relative change in the top k% of scalars,
    also over the weights that are not exactly 0 in the base (see DeltaStats)."""
    head = "  ".join(f"{100 * f:>6g}%" for f, _ in stats.concentration)
    lines = [
        f"{stats.n_scalars:,} scalars in region {stats.region}; {stats.n_unchanged:,} unchanged; "
        f"{stats.n_zero_base:,} zero in the base",
        f"{'top':<26}{head}",
        f"{'share of the change':<26}"
        + "  ".join(f"{100 * s:6.1f}%" for _, s in stats.concentration),
    ]
    if stats.n_zero_base:
        lines.append(
            f"{'  without base zeros':<26}"
            + "  ".join(f"{100 * s:6.1f}%" for _, s in stats.concentration_nonzero_base)
        )
    return "\n".join(lines)


def format_sweep(points: Sequence[SweepPoint]) -> str:
    """One row per restoration: fraction, mode, share of the change undone, then the metrics."""
    metrics = sorted({name for point in points for name in point.metrics})
    lines = ["  ".join([f"{'fraction':>8s}", f"{'mode':6s}", f"{'share of r':>10s}", *metrics])]
    for point in points:
        values = [f"{point.metrics.get(m, float('nan')):{len(m)}.4g}" for m in metrics]
        share = f"{100 * point.report.share_of_change_restored:9.2f}%"
        lines.append(
            "  ".join([f"{100 * point.fraction:7.1f}%", f"{point.mode:6s}", share, *values])
        )
    return "\n".join(lines)
