"""`knowshift build`: a fine-tuning set of controlled composition from stored probe results."""

from __future__ import annotations

import argparse
import sys

from knowshift.cli.common import flags_named
from knowshift.paths import default_workspace


def add_commands(commands) -> None:
    """Register `build`."""
    _build_args(commands.add_parser("build", help="a fine-tuning set of controlled composition"))


_SPEC_OPTIONS = (
    "split", "relations", "template", "idk", "refusal", "size", "frac_unknown", "category",
    "mastery_level", "n_unknown", "k_additions", "addition", "group", "ratio", "min_confidence",
    "n_objects", "frac_biased",
)  # fmt: skip


def _build_args(build: argparse.ArgumentParser) -> None:
    build.add_argument(
        "--recipe", required=True,
        help="unknown-ratio, known-only, category, mastery, pack, intervention, entity-bias; "
        "idk:RECIPE adds --idk",
    )  # fmt: skip
    build.add_argument("--facts", default="geo", help="the fact source the probe used")
    build.add_argument("--model", default="smollm2-135m", help="the model the probe used")
    build.add_argument("--adapter", help="the PEFT adapter the probe used, if any")
    build.add_argument(
        "--estimator",
        help="whose probe results to read (exact; mastery for mastery, sampling for intervention)",
    )
    build.add_argument(
        "--dtype", default="auto", help="dtype the probe ran in (auto: the one stored results have)"
    )
    build.add_argument("--params-key", help="read the results of these probe settings instead")
    build.add_argument(
        "--workspace", default=str(default_workspace()), help="folder of the results database"
    )
    build.add_argument("--out", required=True, help="folder for train.jsonl and manifest.json")
    build.add_argument("--seed", type=int, default=0, help="seed of every draw (0)")
    spec = build.add_argument_group("recipe options (each recipe takes some; default: its own)")
    spec.add_argument("--split", help="draw facts from this split (train)")
    spec.add_argument("--relations", nargs="+", help="only these relations")
    spec.add_argument("--template", help="plain (Q:/A:, as probed) or tagged (<|question|>)")
    spec.add_argument("--idk", action="store_true", default=None, help="Unknown answers -> refusal")
    spec.add_argument("--refusal", help="the refusal string (I don't know)")
    spec.add_argument("--size", type=int, help="examples (default: smallest category per relation)")
    spec.add_argument("--frac-unknown", type=float, help="unknown-ratio: share of Unknown (0.5)")
    spec.add_argument("--category", help="HighlyKnown, MaybeKnown, WeaklyKnown, Unknown, natural")
    spec.add_argument("--mastery-level", type=int, help="mastery: level 0-4")
    spec.add_argument("--n-unknown", type=int, help="pack: Unknown facts")
    spec.add_argument("--k-additions", type=int, help="pack: additions per Unknown fact (0)")
    spec.add_argument("--addition", help="pack: paraphrase (default) or highly-known")
    spec.add_argument(
        "--group", help="intervention: harmonious, incompatible, self-aligning, mixture"
    )
    spec.add_argument("--ratio", type=float, help="intervention mixture: share self-aligned")
    spec.add_argument("--min-confidence", type=float, help="intervention: threshold (0.5)")
    spec.add_argument("--n-objects", type=int, help="entity-bias: top objects per relation (3)")
    spec.add_argument("--frac-biased", type=float, help="entity-bias: share of top objects (0.5)")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from knowshift.api import BuildRequest, build
    from knowshift.mixtures import manifest_table

    options = {
        name: getattr(args, name) for name in _SPEC_OPTIONS if getattr(args, name) is not None
    }
    request = BuildRequest(args.recipe, args.out, model=args.model, facts=args.facts,
                           options=options, estimator=args.estimator, adapter=args.adapter,
                           dtype=args.dtype, params_key=args.params_key, seed=args.seed,
                           workspace=args.workspace)  # fmt: skip
    request.spec()  # the recipe and its options, checked before anything is read
    built = flags_named(build, request)
    print(manifest_table(built.manifest))
    print(f"wrote {len(built.examples)} examples to {built.out}, from {built.n_results} "
          f"{built.estimator} probe results (settings {built.params_key})", file=sys.stderr)  # fmt: skip
    if built.left_out_relations:
        reason = " (by default a relation gives as many as its smallest category has)"
        size = getattr(request.spec(), "size", 0)
        print(f"note: no examples from {', '.join(built.left_out_relations)}"
              f"{reason if size is None else ''}", file=sys.stderr)  # fmt: skip
    return 0


# Request fields whose flag is not --<field with dashes>.
