"""`knowshift audit DATA --model M` (registered by the cli package): what the model already knows of a
fine-tuning file, example by example, and the file filtered or relabelled accordingly."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from knowshift.errors import KnowshiftError, unknown_name
from knowshift.paths import default_workspace


def add_commands(commands) -> None:
    """Register the commands of this module on the CLI's sub-command parser."""
    from knowshift.audit.screen import MAX_ANSWER_WORDS

    audit = commands.add_parser(
        "audit", help="SliCK categories of a fine-tuning file's examples; filter or relabel it"
    )
    audit.add_argument(
        "data", metavar="DATA",
        help="JSONL (prompt/completion, messages, question/answer) or CSV fine-tuning file",
    )  # fmt: skip
    audit.add_argument(
        "--model", default="smollm2-135m", help="embedded name, local path or hub id"
    )
    audit.add_argument("--adapter", help="a PEFT adapter directory to apply")
    audit.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    audit.add_argument("--dtype", default="auto", help="auto (bf16 where fast), float32, ...")
    audit.add_argument(
        "--trust-remote-code", action="store_true", help="allow a model's own code to run"
    )
    audit.add_argument(
        "--workspace", default=str(default_workspace()), help="folder of the results database"
    )
    probe = audit.add_argument_group("probe settings (as for knowshift probe)")
    probe.add_argument("--estimator", default="exact", help="exact (default), sampling, greedy")
    probe.add_argument("--n-exemplar-sets", type=int, default=10, help="few-shot prompts (10)")
    probe.add_argument("--k-shot", type=int, default=4, help="exemplars per prompt, from DATA (4)")
    probe.add_argument("--n-samples", type=int, help="samples per prompt (16)")
    probe.add_argument("--temperature", type=float, help="sampling temperature (0.5)")
    probe.add_argument("--top-k", type=int, help="top-k for sampling (40)")
    probe.add_argument("--max-new-tokens", type=int, help="answer length cap when sampling (16)")
    probe.add_argument("--prompt-format", default="plain", help="plain (Q:/A:) or chat")
    probe.add_argument("--seed", type=int, default=0, help="seed of exemplar sets and samples")
    audit.add_argument(
        "--group-by",
        help="field that groups the summary (default: source, topic, category, domain or "
        "relation, the first DATA has)",
    )
    audit.add_argument(
        "--max-answer-words", type=int, default=MAX_ANSWER_WORDS,
        help=f"longer answers are long-form: reported, not probed ({MAX_ANSWER_WORDS})",
    )  # fmt: skip
    audit.add_argument("--out", help="per-example table: FILE.jsonl, .csv or .parquet")
    audit.add_argument("--filtered", help="write DATA without its Unknown examples (same format)")
    audit.add_argument(
        "--relabelled", help="write DATA with Unknown examples answered --refusal (same format)"
    )
    audit.add_argument("--refusal", default="I don't know", help="the refusal (I don't know)")
    audit.set_defaults(handler=_audit)


def _audit(args: argparse.Namespace) -> int:
    from knowshift.audit.data import read_sft
    from knowshift.audit.run import AUDIT_ESTIMATORS, prepare
    from knowshift.probe.estimators import ProbeConfig
    from knowshift.probe.run import validate_config

    # Check everything that needs no model first, so bad input fails at once.
    if args.estimator not in AUDIT_ESTIMATORS:
        raise unknown_name("audit estimator (one that gives SliCK categories)", args.estimator,
                           AUDIT_ESTIMATORS)  # fmt: skip
    config = ProbeConfig.from_settings(args.estimator, args)
    validate_config(config)
    _check_options(args)
    sft = read_sft(args.data, args.group_by)
    prepare(sft, config, args.max_answer_words)  # something to probe, enough exemplars?
    return _run_audit(args, sft, config)


def _check_options(args: argparse.Namespace) -> None:
    """Options and output files: one clear line for each mistake, before any work."""
    from knowshift.audit.write import TABLE_FORMATS

    data = Path(args.data)
    if args.max_answer_words < 1:
        raise KnowshiftError("--max-answer-words must be at least 1")
    if not args.refusal.strip() or "\n" in args.refusal:
        raise KnowshiftError('--refusal must be one non-empty line, e.g. "I don\'t know"')
    if args.out and Path(args.out).suffix not in TABLE_FORMATS:
        raise KnowshiftError(f"--out {args.out}: use a file ending in {', '.join(TABLE_FORMATS)}")
    outputs = {"--out": args.out, "--filtered": args.filtered, "--relabelled": args.relabelled}
    for option, out in outputs.items():
        if out is None:
            continue
        if option != "--out" and Path(out).suffix.lower() != data.suffix.lower():
            raise KnowshiftError(
                f"{option} {out}: the output keeps DATA's format ({data.suffix or 'none'}); "
                f"give a file ending in {data.suffix}"
            )
        if Path(out).resolve() == data.resolve():
            raise KnowshiftError(f"{option} {out} would overwrite DATA; write to another file")
    given = [Path(out).resolve() for out in outputs.values() if out]
    if len(set(given)) < len(given):
        raise KnowshiftError("--out, --filtered and --relabelled must name different files")


def _load_unless_stored(args: argparse.Namespace, model):
    """The model, loaded now when the workspace holds no database (so nothing stored to reuse,
    and a model that does not load leaves no workspace behind); else None: the audit loads it
    only if some result is not stored."""
    from knowshift.cli.common import check_workspace
    from knowshift.models import load_model
    from knowshift.models.resolve import model_fingerprint
    from knowshift.store import database_path

    check_workspace(args.workspace)
    if database_path(args.workspace).is_file():
        model_fingerprint(model.name, model.adapter)  # a wrong path fails before the store opens
        return None
    return load_model(model.name, device=model.device, dtype=model.dtype, adapter=model.adapter,
                      trust_remote_code=model.trust_remote_code)  # fmt: skip


def _run_audit(args: argparse.Namespace, sft, config) -> int:
    from tqdm import tqdm

    from knowshift.audit.report import expected_effect, format_effect, summary_table
    from knowshift.audit.run import ModelChoice, audit
    from knowshift.audit.write import write_filtered, write_relabelled, write_table
    from knowshift.models.loader import quiet_transformers
    from knowshift.store import Store

    quiet_transformers()
    model = ModelChoice(args.model, args.adapter, args.device, args.dtype, args.trust_remote_code)
    loaded = _load_unless_stored(args, model)
    with Store.for_workspace(args.workspace) as store, contextlib.ExitStack() as studies:
        with tqdm(unit="fact", dynamic_ncols=True, disable=None, file=sys.stderr) as bar:
            result = audit(sft, model, config, store, args.max_answer_words, bar.update, loaded)
        # The runs of studies (knowshift study run) sit in study folders inside the workspace.
        found = [studies.enter_context(Store(path)) for path in _study_databases(args.workspace)]
        effect = expected_effect([store, *found], result)
    print(summary_table(result))
    print(format_effect(effect, args.workspace), flush=True)  # before the notes on stderr
    if args.out:
        print(f"wrote {write_table(result, args.out)}", file=sys.stderr)
    if args.filtered:
        path, n_kept = write_filtered(sft, result, args.filtered)
        print(f"wrote {path}: {n_kept} of {len(sft.records)} examples (Unknown dropped)",
              file=sys.stderr)  # fmt: skip
    if args.relabelled:
        path, n_changed = write_relabelled(sft, result, args.relabelled, args.refusal)
        print(f"wrote {path}: {n_changed} Unknown examples answered {args.refusal!r}",
              file=sys.stderr)  # fmt: skip
    return 0


def _study_databases(workspace: str) -> list[Path]:
    """The results databases of the study folders in a workspace (two levels down at most)."""
    root = Path(workspace)
    return sorted({*root.glob("*/knowshift.db"), *root.glob("*/*/knowshift.db")})
