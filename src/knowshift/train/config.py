"""Typed settings of a fine-tuning run, validated with messages that say how to fix them."""

from __future__ import annotations

from dataclasses import dataclass, field

from knowshift.errors import KnowshiftError, unknown_name

METHODS = ("full", "lora")
SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings. Defaults follow Gekhman et al. at small scale; LoRA defaults follow
    the LoRA-packing paper (rank 1, alpha 2, dropout 0.1, MLP projections, lr 1e-3)."""

    method: str = "full"
    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-5
    schedule: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0
    precision: str = "auto"
    seed: int = 0
    eval_every_steps: int | None = None  # None: measure after every epoch
    stop_at_full_train_accuracy: bool = False
    lora_rank: int = 1
    lora_alpha: float = 2.0
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = field(default=("down_proj", "gate_proj", "up_proj"))
    use_rslora: bool = False

    def validate(self) -> None:
        """Raise a KnowshiftError naming the first bad setting and its valid range."""
        for name, value, valid in (
            ("method", self.method, METHODS),
            ("schedule", self.schedule, SCHEDULES),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in valid:
                raise unknown_name(name, value, valid)
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.grad_accum >= 1, "grad_accum must be at least 1"),
            (self.lr > 0, "lr must be above 0"),
            (0 <= self.warmup_ratio <= 1, "warmup_ratio must be in [0, 1]"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.lora_rank >= 1, "lora_rank must be at least 1"),
            (
                self.eval_every_steps is None or self.eval_every_steps >= 1,
                "eval_every_steps must be at least 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise KnowshiftError(message)


def check_processes(config: TrainConfig, n_processes: int) -> None:
    """A batch is global: split over the processes of a launch, each takes an equal slice."""
    if config.batch_size % n_processes:
        raise KnowshiftError(
            f"batch_size {config.batch_size} does not split evenly over {n_processes} processes "
            f"(the batch is global: each process takes batch_size / {n_processes} rows of it); "
            f"use a multiple of {n_processes}"
        )
