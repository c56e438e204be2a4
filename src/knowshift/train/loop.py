"""The fine-tuning loop, with a knowledge measurement after every epoch (METHODS B).

    result = train(loaded, pairs, eval_items, config, out_dir)

reads top to bottom: set up (seed, LoRA wrap, data, optimizer, accelerate), resume if a previous
run of the same folder was interrupted, then per epoch: train, measure which examples are
fitted and the accuracy of every evaluation group, write the metrics line, and save checkpoints
(`last` every epoch, `early_stop` when dev accuracy improves).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knowshift import atomic
from knowshift.errors import KnowshiftError
from knowshift.models import LoadedModel
from knowshift.train.config import TrainConfig, check_processes
from knowshift.train.data import batch_loader, completion_loss, completion_tokens, tokenize_pairs
from knowshift.train.launch import training_device
from knowshift.train.measure import EvalItem, measure

DEV_GROUP = "dev"


@dataclass(frozen=True)
class EpochRecord:
    """What one measurement found: accuracy per evaluation group, at an epoch and step."""

    epoch: int
    step: int
    train_loss: float
    accuracy: dict[str, float]
    train_seconds: float | None = None  # time in training steps (measurements excluded)
    measure_seconds: float | None = None  # time this measurement took


@dataclass(frozen=True)
class TrainResult:
    records: tuple[EpochRecord, ...]
    early_stop_epoch: int | None
    out_dir: Path


def train(
    loaded: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    eval_items: Sequence[EvalItem],
    config: TrainConfig,
    out_dir: str | Path,
    on_record: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Fine-tune `loaded.model` in place on prompt/completion `pairs`, measuring after each epoch."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from tqdm import tqdm

    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # 1. Set-up: seeds, the trainable model, accelerate, data, optimizer, schedule.
    _seed_everything(config.seed)
    model = _trainable(loaded.model, config)
    _fresh_accelerator_state()
    # accelerate warns at every save that tied embeddings are stored once: expected, not news.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    device = training_device(loaded.device)  # FSDP loads on the CPU, trains on GPUs
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config, device), gradient_accumulation_steps=config.grad_accum,
        cpu=device.type == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True),  # batch_size is the global batch
    )  # fmt: skip
    check_processes(config, accelerator.num_processes)
    if accelerator.num_processes > 1:  # dropout masks differ between the processes' rows
        torch.manual_seed(config.seed + accelerator.process_index)
    tokenized = tokenize_pairs(loaded.tokenizer, pairs)
    generator = torch.Generator().manual_seed(config.seed)
    loader = batch_loader(tokenized, config.batch_size, loaded.tokenizer.pad_token_id or 0,
                          generator, accelerator.num_processes)  # fmt: skip
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    measuring = _Measurer(loaded, accelerator, model, eval_items)
    # 2. Resume an interrupted run of this folder.
    records, first_epoch = _resume(out_dir, accelerator, config)
    best_dev = max((r.accuracy.get(DEV_GROUP, -1.0) for r in records), default=-1.0)
    step = records[-1].step if records else 0
    # 3. Train, measuring after every epoch (or every N steps).
    for epoch in range(first_epoch, config.epochs + 1):
        generator.manual_seed(config.seed * 1_000_003 + epoch)  # the same order on a resumed run
        model.train()
        losses, started = [], time.perf_counter()
        measuring.seconds_in_epoch(reset=True)  # count only this epoch's mid-epoch measurements
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            disable=not accelerator.is_main_process,
        )
        for batch in bar:
            with accelerator.accumulate(model):
                loss = _loss(accelerator, model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(_batch_loss(accelerator, loss))
            step += int(accelerator.sync_gradients)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", **measuring.latest)
            if (
                config.eval_every_steps
                and accelerator.sync_gradients
                and step % config.eval_every_steps == 0
                and len(losses) < len(loader)  # the epoch's own measurement follows at once
            ):
                _keep(
                    measuring.record(epoch - 1 + len(losses) / len(loader), step, losses),
                    records,
                    out_dir,
                    on_record,
                    accelerator.is_main_process,
                )
        train_seconds = time.perf_counter() - started - measuring.seconds_in_epoch(reset=False)
        record = _keep(
            measuring.record(epoch, step, losses, train_seconds),
            records,
            out_dir,
            on_record,
            accelerator.is_main_process,
        )
        # 4. Store: resume state and checkpoints.
        if record.accuracy.get(DEV_GROUP, -1.0) > best_dev:
            best_dev = record.accuracy.get(DEV_GROUP, -1.0)
            _save_checkpoint(
                accelerator, model, loaded.tokenizer, out_dir / "checkpoints" / "early_stop", epoch
            )
        _save_checkpoint(
            accelerator, model, loaded.tokenizer, out_dir / "checkpoints" / "last", epoch
        )
        _save_state(accelerator, out_dir, epoch)
        if _stops(config, record):
            break
    epoch_records = [r for r in records if float(r.epoch).is_integer()]
    early = (
        max(epoch_records, key=lambda r: r.accuracy.get(DEV_GROUP, -1.0)).epoch
        if epoch_records
        else None
    )
    return TrainResult(tuple(records), early, out_dir)


def _loss(accelerator, model, batch) -> torch.Tensor:
    """The loss whose gradient is that of the mean cross-entropy over the completion tokens of
    the whole (global) batch. Alone, that is this batch's mean. Split over N processes, each
    sums its slice's token losses and divides by the tokens of all slices, times N, as DDP and
    FSDP average the processes' gradients: the mean of the slices' own means would weigh a
    token of a slice with few completion tokens more than one of a slice with many."""
    if accelerator.num_processes == 1:
        return completion_loss(model, batch)
    n_tokens = accelerator.reduce(completion_tokens(batch), "sum")
    return completion_loss(model, batch, n_tokens) * accelerator.num_processes


def _batch_loss(accelerator, loss: torch.Tensor) -> float:
    """The global batch's mean loss (the sum of the processes' shares, each N times its own)."""
    if accelerator.num_processes == 1:
        return loss.item()
    return (accelerator.reduce(loss.detach(), "sum") / accelerator.num_processes).item()


def _keep(
    record: EpochRecord, records: list, out_dir: Path, on_record, main: bool = True
) -> EpochRecord:
    """Remember a measurement; the main process appends it to metrics.jsonl and reports it."""
    records.append(record)
    if not main:
        return record
    with (out_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.__dict__) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    if on_record:
        on_record(record)
    return record


class _Measurer:
    """Runs the per-epoch measurement on the live model and remembers the latest figures.
    Under a launch every process measures every item (the processes hold the same weights), so
    the figures equal those of a single process."""

    def __init__(self, loaded: LoadedModel, accelerator, model, eval_items: Sequence[EvalItem]):
        self.loaded, self.accelerator, self.items = loaded, accelerator, eval_items
        self.model = accelerator.unwrap_model(model)  # the live model being trained
        self.engine = None
        self.latest: dict[str, str] = {}
        self._seconds = 0.0  # measurement time since the epoch began

    def seconds_in_epoch(self, reset: bool) -> float:
        seconds = self._seconds
        if reset:
            self._seconds = 0.0
        return seconds

    def record(
        self, epoch: float, step: int, losses: Sequence[float], train_seconds: float | None = None
    ) -> EpochRecord:
        from knowshift.probe.engine import Engine

        model = self.model
        live = LoadedModel(self.loaded.name, model, self.loaded.tokenizer, "",
                           self.accelerator.device, self.loaded.dtype)  # fmt: skip
        self.engine = self.engine or Engine(live)
        self.engine.model = model
        model.eval()
        started = time.perf_counter()
        with self.accelerator.autocast():
            accuracy = measure(self.engine, self.items)
        seconds = time.perf_counter() - started
        self._seconds += seconds
        model.train()
        loss = float(np.mean(losses)) if losses else float("nan")
        self.latest = {
            k: f"{v:.2f}"
            for k, v in accuracy.items()
            if k in ("train/Known", "train/Unknown", DEV_GROUP)
        }
        record = EpochRecord(epoch, step, loss, accuracy, train_seconds, seconds)
        if self.accelerator.num_processes == 1:
            return record
        # Every process measured its copy (FSDP needs them all in every forward); they act on
        # the main one's figures, so all take the same checkpoint and stopping decisions.
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([record])[0]


def _fresh_accelerator_state() -> None:
    """accelerate keeps its settings in process-wide singletons; a study trains many runs in one
    process, with other precisions and accumulation steps, so each run starts them afresh. The
    distributed state (PartialState, set up by `accelerate launch`) is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _trainable(model: Any, config: TrainConfig) -> Any:
    """Full fine-tuning trains every weight; LoRA wraps the model with PEFT adapters."""
    if config.method == "full":
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    from knowshift.models.loader import linear_names

    linear = linear_names(model)
    missing = [t for t in config.lora_target_modules if t not in linear]
    if missing:
        raise KnowshiftError(
            f"LoRA target module(s) {', '.join(missing)} not in this model; "
            f"its linear modules are: {', '.join(sorted(linear))}"
        )
    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules), use_rslora=config.use_rslora, task_type="CAUSAL_LM",
    )  # fmt: skip
    with (
        warnings.catch_warnings()
    ):  # PEFT reads a deprecated transformers attribute; not the user's
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora)


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    # The fused kernel updates all parameters in one pass: ~10x faster than the loop on CPU.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _scheduler(optimizer, config: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    warmup = int(config.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(config.schedule, config.schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def resolved_precision(config: TrainConfig, device: torch.device) -> str:
    """The precision a run trains in on `device`: fp32, bf16 or fp16. `auto` is bf16 autocast
    where it is fast (CUDA with bf16, or a CPU with bf16 matmul units), so it depends on the
    machine, and a run records what it resolved to."""
    if config.precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return config.precision


def _mixed_precision(config: TrainConfig, device: torch.device) -> str:
    """accelerate's name of the run's precision ("no" for fp32)."""
    precision = resolved_precision(config, device)
    return "no" if precision == "fp32" else precision


def _save_checkpoint(accelerator, model, tokenizer, target: Path, epoch: int) -> None:
    """Weights as safetensors (the adapter alone for LoRA), written aside then swapped in, by
    the main process while the others wait; `epoch.json`, written last, marks it complete.
    Under FSDP every process holds a shard, so all take part in gathering the full weights."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type == DistributedType.FSDP
    state_dict = accelerator.get_state_dict(model) if sharded else None
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.unwrap_model(model).save_pretrained(
        tmp, state_dict=state_dict, safe_serialization=True
    )
    tokenizer.save_pretrained(tmp)
    atomic.write_json(tmp / "epoch.json", {"epoch": epoch})
    atomic.replace_dir(tmp, target)


def _stops(config: TrainConfig, record: EpochRecord) -> bool:
    """Whether training ends after this epoch's measurement, before its last epoch."""
    return config.stop_at_full_train_accuracy and record.accuracy.get("train", 0.0) >= 1.0


def _save_state(accelerator, out_dir: Path, epoch: int) -> None:
    """Optimizer, schedule and RNG state for resuming, then the epoch it belongs to."""
    tmp = out_dir / ".state.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)  # every process takes part
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic.write_json(tmp / "epoch.json", {"epoch": epoch})
        atomic.replace_dir(tmp, out_dir / "state")
    accelerator.wait_for_everyone()


def _resume(out_dir: Path, accelerator, config: TrainConfig) -> tuple[list[EpochRecord], int]:
    """Records of completed epochs and the epoch to start from (1 for a fresh run; past the
    last when the run had already stopped, all its examples fitted)."""
    state = out_dir / "state"
    if accelerator.is_main_process:  # a kill between the two renames of a save
        checkpoints = out_dir / "checkpoints"
        for folder in (state, checkpoints / "last", checkpoints / "early_stop"):
            atomic.recover_dir(folder)
    accelerator.wait_for_everyone()
    if not (state / "epoch.json").is_file():
        if accelerator.is_main_process:
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)
        return [], 1
    done = json.loads((state / "epoch.json").read_text())["epoch"]
    accelerator.load_state(str(state))
    # Drop lines of an epoch that was measured but whose state was not saved.
    records = [r for r in read_metrics(out_dir / "metrics.jsonl") if r.epoch <= done]
    if accelerator.is_main_process:
        atomic.write_text(
            out_dir / "metrics.jsonl", "".join(json.dumps(r.__dict__) + "\n" for r in records)
        )
    stopped = bool(records) and records[-1].epoch == done and _stops(config, records[-1])
    return records, (config.epochs + 1 if stopped else done + 1)


def read_metrics(path: Path) -> list[EpochRecord]:
    """The records of metrics.jsonl. Its last line may be torn (the machine died while it was
    appended); that line is dropped, as its epoch is re-measured anyway."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(EpochRecord(**json.loads(line)))
        except (ValueError, TypeError):
            if number < len(lines):
                raise KnowshiftError(
                    f"{path} line {number} is damaged; delete the run folder to train it anew"
                ) from None
    return records
