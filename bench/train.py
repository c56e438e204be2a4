"""Training speed, as ratios against peers measured in the same run (issue 3's targets).

On the same model, data and hyperparameters (full fine-tuning, completion-only loss, batch 8,
bf16 autocast where `auto` picks it, 1 epoch):
  1. knowshift's training loop vs TRL's SFTTrainer, training tokens per second (target >= 1.0);
  2. the fraction of the bf16 ceiling: 6 x parameters x tokens/s over the matmul rate measured
     here;
  3. the per-epoch measurement (fitted train examples, dev, test) against the epoch's training
     time on the demo-sized setting (target <= 30%).

    python bench/train.py [--n-examples 256] [--n-eval N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from knowshift.facts import load_facts
from knowshift.facts.select import select_facts
from knowshift.models import load_model
from knowshift.models.loader import quiet_transformers
from knowshift.probe.engine import Engine
from knowshift.train.config import TrainConfig
from knowshift.train.data import tokenize_pairs
from knowshift.train.loop import train
from knowshift.train.measure import EvalItem, measure
from knowshift.train.run import heldout_sizes

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from probe import matmul_ceiling  # noqa: E402  (bench/probe.py)


def qa_pairs(facts) -> list[tuple[str, str]]:
    return [(f"Q: {f.question}\nA:", f" {f.answer}\n") for f in facts]


def run_knowshift(args, pairs) -> tuple[float, int]:
    """Seconds in training steps and tokens of one epoch of knowshift's loop."""
    loaded = load_model(args.model, dtype="float32")
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-5, precision=args.precision)
    tokens = sum(len(p.input_ids) for p in tokenize_pairs(loaded.tokenizer, pairs))
    with tempfile.TemporaryDirectory() as out:
        result = train(loaded, pairs, [], config, out)
    # Time in training steps, as TRL's train_runtime (no checkpoint saving, no measurement).
    return result.records[-1].train_seconds, tokens


def run_trl(args, pairs) -> tuple[float, int]:
    """Seconds and tokens of one epoch of TRL's SFTTrainer on the same pairs and settings."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    loaded = load_model(args.model, dtype="float32")
    dataset = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-5, lr_scheduler_type="constant", bf16=args.precision != "fp32",
            use_cpu=loaded.device.type == "cpu", completion_only_loss=True, packing=False,
            save_strategy="no", report_to="none", logging_steps=10_000, dataloader_num_workers=0,
            max_length=None, seed=0,
        )  # fmt: skip
        trainer = SFTTrainer(
            model=loaded.model,
            args=config,
            train_dataset=dataset,
            processing_class=loaded.tokenizer,
        )
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        print(f"TRL optimizer: {config.optim}", flush=True)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, tokens


def measurement_cost(args, pairs, eval_facts) -> tuple[float, float]:
    """Seconds of one per-epoch measurement (train pairs + eval facts) and of one epoch."""
    loaded = load_model(args.model, dtype="float32")
    items = [EvalItem(str(i), p, (c.rstrip("\n"),), ("train",)) for i, (p, c) in enumerate(pairs)]
    items += [
        EvalItem(f.id, f"Q: {f.question}\nA:", (f" {f.answer}",), ("test",)) for f in eval_facts
    ]
    engine = Engine(loaded)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision != "fp32"):
        start = time.perf_counter()
        measure(engine, items)
        return time.perf_counter() - start, len(items)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-examples", type=int, default=256)
    parser.add_argument(
        "--n-eval", type=int, help="held-out facts measured per epoch (default: as knowshift train)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    quiet_transformers()
    facts = load_facts("geo")
    pairs = qa_pairs(select_facts(facts, split="train", limit=args.n_examples))
    n_eval = args.n_eval if args.n_eval is not None else sum(heldout_sizes(len(pairs)))
    eval_facts = select_facts(facts, split="test", limit=n_eval)
    ceiling = matmul_ceiling(torch.bfloat16)
    print(f"{len(pairs)} training pairs, batch {args.batch_size}, precision {args.precision}; "
          f"bf16 matmul ceiling {ceiling / 1e9:.0f} GFLOP/s", flush=True)  # fmt: skip

    t_ks, tokens_ks = run_knowshift(args, pairs)
    print(
        f"knowshift: {tokens_ks / t_ks:8.0f} tokens/s ({t_ks:.1f} s, {tokens_ks} tokens)",
        flush=True,
    )
    t_trl, tokens_trl = run_trl(args, pairs)
    print(
        f"TRL SFT:   {tokens_trl / t_trl:8.0f} tokens/s ({t_trl:.1f} s, {tokens_trl} tokens)",
        flush=True,
    )
    t_measure, n_items = measurement_cost(args, pairs, eval_facts)
    n_params = sum(p.numel() for p in load_model(args.model).model.parameters())

    print(
        f"\nknowshift / TRL tokens per second: {(tokens_ks / t_ks) / (tokens_trl / t_trl):6.2f}  (target >= 1.0)"
    )
    print(
        f"fraction of bf16 ceiling (6 N tokens/s): {6 * n_params * tokens_ks / t_ks / ceiling:6.1%}"
    )
    print(f"per-epoch measurement of {n_items} items: {t_measure:.1f} s = {t_measure / t_ks:6.1%} "
          f"of the epoch's training time  (target <= 30%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
