"""The `knowshift train` and `knowshift eval` commands (registered by the cli package)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.paths import default_workspace
from knowshift.train.table import format_records  # noqa: F401 - public here too


def add_commands(commands) -> None:
    """Register `train` and `eval` on the CLI's sub-command parser."""
    train = commands.add_parser(
        "train", help="fine-tune on a built set, measuring after every epoch"
    )
    train.add_argument("--data", required=True, help="folder written by knowshift build")
    train.add_argument(
        "--model", default="smollm2-135m", help="the base model the set was built for"
    )
    train.add_argument("--adapter", help="a PEFT adapter to start from")
    train.add_argument("--facts", help="fact source for dev/test measurement (default: the set's)")
    train.add_argument(
        "--out", required=True, help="run folder (metrics, checkpoints, resume state)"
    )
    train.add_argument("--method", default="full", help="full or lora")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--lr", type=float, help="learning rate (full 1e-5, lora 1e-3)")
    train.add_argument("--schedule", default="constant", help="constant, linear, cosine")
    train.add_argument("--warmup-ratio", type=float, default=0.0)
    train.add_argument("--optimizer", default="adamw", help="adamw or sgd")
    train.add_argument(
        "--precision", default="auto", help="auto (bf16 autocast where fast), fp32, bf16, fp16"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--eval-every-steps", type=int, help="also measure every N optimizer steps")
    train.add_argument(
        "--stop-at-full-train-accuracy",
        action="store_true",
        help="stop once every example is fitted",
    )
    train.add_argument("--lora-rank", type=int, default=1)
    train.add_argument("--lora-alpha", type=float, default=2.0)
    train.add_argument("--lora-dropout", type=float, default=0.1)
    train.add_argument(
        "--lora-target-modules", nargs="+", default=["down_proj", "gate_proj", "up_proj"]
    )
    train.add_argument("--rslora", action="store_true", help="rank-stabilised LoRA scaling")
    train.add_argument(
        "--n-dev",
        type=int,
        help="dev facts measured per epoch (default: scales with the set, <= 200)",
    )
    train.add_argument(
        "--n-test",
        type=int,
        help="test facts measured per epoch (default: scales with the set, <= 500)",
    )
    train.add_argument("--device", default="auto")
    train.add_argument("--workspace", default=str(default_workspace()))
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="closed-book QA per category, relation, popularity")
    evaluate.add_argument(
        "--model", default="smollm2-135m", help="base model or full checkpoint folder"
    )
    evaluate.add_argument("--adapter", help="a LoRA adapter folder (e.g. RUN/checkpoints/last)")
    evaluate.add_argument(
        "--base-model", help="the model whose probe categories to report by (default --model)"
    )
    evaluate.add_argument("--facts", default="geo")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--relations", nargs="+")
    evaluate.add_argument(
        "--train-relations",
        nargs="+",
        help="relations trained on (the rest are out of distribution)",
    )
    evaluate.add_argument("--limit", type=int)
    evaluate.add_argument(
        "--estimator", default="exact", help="probe estimator whose categories to use"
    )
    evaluate.add_argument("--out", help="predictions file (.jsonl or .parquet)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--dtype", default="auto")
    evaluate.add_argument("--workspace", default=str(default_workspace()))
    evaluate.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    from knowshift.store import Store
    from knowshift.train.config import TrainConfig
    from knowshift.train.launch import is_main_process
    from knowshift.train.run import run_training

    config = TrainConfig(
        method=args.method, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lr=args.lr if args.lr is not None else (1e-3 if args.method == "lora" else 1e-5),
        schedule=args.schedule, warmup_ratio=args.warmup_ratio, optimizer=args.optimizer,
        precision=args.precision, seed=args.seed, eval_every_steps=args.eval_every_steps,
        stop_at_full_train_accuracy=args.stop_at_full_train_accuracy, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_target_modules=tuple(args.lora_target_modules), use_rslora=args.rslora,
    )  # fmt: skip
    config.validate()
    from knowshift.cli.common import check_workspace, removed_if_failed
    from knowshift.models.loader import quiet_transformers

    quiet_transformers()
    _check_train_inputs(args, config)  # every mistake that needs no training, before any output
    check_workspace(args.workspace)
    # A failure before the first epoch leaves no run folder and no new workspace behind (the
    # main process of a launch cleans up; the others leave its folders alone).
    out, new_run = Path(args.out), not Path(args.out).exists()
    main = is_main_process()
    with (
        removed_if_failed(Path(args.workspace), when=lambda: main and new_run and not out.exists()),
        removed_if_failed(out, keep_if_any_but="run.json") if main else contextlib.nullcontext(),
        Store.for_workspace(args.workspace) as store,
    ):
        run_id, result = run_training(
            args.data, args.model, args.out, config, store, adapter=args.adapter,
            facts_spec=args.facts, n_dev=args.n_dev, n_test=args.n_test, device=args.device,
        )  # fmt: skip
    if not main:
        return 0
    print(f"run {run_id}: {args.out}")
    print(format_records(result.records))
    print(
        f"EARLY_STOP: epoch {result.early_stop_epoch} (best dev); CONVERGENCE: epoch {result.records[-1].epoch}"
    )
    return 0


def _check_train_inputs(args: argparse.Namespace, config) -> None:
    """The run folder, the set, the device, the model (the one the set was built for) and the
    LoRA targets, each checked without training, so a mistake fails before anything is written."""
    from knowshift.mixtures import read_training_set
    from knowshift.models.loader import linear_module_names, resolve_device
    from knowshift.models.resolve import model_fingerprint
    from knowshift.train.config import check_processes
    from knowshift.train.launch import n_processes

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise KnowshiftError(f"--out {out} is a file; give a folder for the run")
    if (out / "run.json").is_file():
        try:
            json.loads((out / "run.json").read_text(encoding="utf-8"))["run_id"]
        except (ValueError, TypeError, KeyError):
            raise KnowshiftError(
                f"{out / 'run.json'} is damaged; pick a new --out folder or delete that one"
            ) from None
    for option, value in (("--n-dev", args.n_dev), ("--n-test", args.n_test)):
        if value is not None and value < 1:
            raise KnowshiftError(f"{option} must be at least 1, got {value}")
    check_processes(config, n_processes())  # under `accelerate launch`, the batch is split
    manifest = read_training_set(args.data).manifest
    resolve_device(args.device)
    # The set's categories are those of the model it was probed with: the base, or the base
    # with the adapter training starts from.
    fingerprints = {model_fingerprint(args.model), model_fingerprint(args.model, args.adapter)}
    if manifest.model_fingerprint and manifest.model_fingerprint not in fingerprints:
        built_for = manifest.model or f"the model of fingerprint {manifest.model_fingerprint}"
        raise KnowshiftError(
            f"the set in {args.data} was built from the probe results of {built_for}, not of "
            f"--model {args.model}; its categories hold for that model only: train {built_for} "
            f"on it, or probe {args.model} and build a set from its results"
        )
    if config.method == "lora":
        linear = linear_module_names(args.model)
        missing = [t for t in config.lora_target_modules if t not in linear]
        if missing:
            raise KnowshiftError(
                f"--lora-target-modules {' '.join(missing)}: not in {args.model}, whose linear "
                f"modules are {', '.join(sorted(linear))}; name some of those"
            )


def _eval(args: argparse.Namespace) -> int:
    from knowshift.evaluate.qa import format_summary, predict, summarise
    from knowshift.facts import load_facts
    from knowshift.facts.select import select_facts
    from knowshift.models import load_model
    from knowshift.models.resolve import model_fingerprint
    from knowshift.probe.estimators import ProbeConfig
    from knowshift.probe.run import settings_key, validate_config
    from knowshift.store import Store, database_path
    from knowshift.store.export import EXPORT_FORMATS, export_rows

    if args.out and not args.out.endswith(EXPORT_FORMATS):
        raise KnowshiftError(f"--out {args.out}: use a file ending in .jsonl or .parquet")
    probe_config = ProbeConfig.for_estimator(args.estimator)
    validate_config(probe_config)
    facts = load_facts(args.facts)
    targets = select_facts(facts, args.relations, args.split, args.limit)
    for name in args.train_relations or ():
        if name not in facts.relations:
            raise unknown_name(
                f"--train-relations relation in {facts.source}", name, facts.relations
            )
    from knowshift.models.loader import quiet_transformers

    quiet_transformers()
    loaded = load_model(args.model, device=args.device, dtype=args.dtype, adapter=args.adapter)
    base = args.base_model or args.model
    results = []
    if database_path(args.workspace).is_file():  # reading categories creates no workspace
        with Store.for_workspace(args.workspace) as store:
            key, _ = settings_key(probe_config, facts, str(loaded.dtype).removeprefix("torch."))
            results = store.probe_results(model_fingerprint(base), key, [f.id for f in targets])
    categories = {r.fact_id: r.category for r in results}
    if not categories:
        print(f"note: no {args.estimator} probe results of {base} for these facts; "
              "categories shown as uncategorised", file=sys.stderr)  # fmt: skip
    train_relations = set(args.train_relations) if args.train_relations else None
    predictions = predict(loaded, targets, categories, train_relations)
    print(format_summary(summarise(predictions)))
    if args.out:
        print(f"wrote {export_rows([p.__dict__ for p in predictions], args.out)}", file=sys.stderr)
    return 0
