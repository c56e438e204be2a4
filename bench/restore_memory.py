"""Parameter restoration: peak memory and time of writing a restored model (issue target:
peak RSS <= 3x the model's safetensors size), against the straightforward way as a peer.

Each measurement runs in a fresh subprocess; its peak RSS (ru_maxrss) minus the RSS after the
imports is what the work itself held. Measured:
  1. knowshift: `delta_stats` (the histogram pass, timed alone), then `restore_model` top 20%
     with those stats (the boundary pass and the streamed, sharded write);
  2. with --naive, the peer: both state dicts loaded whole, every r sorted for the threshold,
     the restored state dict saved with save_file.
Then the concentration curve and where the top-20% restoration sits (module type, layer).

    python bench/restore_memory.py [--tuned DIR] [--base smollm2-135m] [--fraction 0.2]
        [--threads N] [--naive]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# A full fine-tune of smollm2-135m in the dev workspace (knowshift train --out workspace/runs/u50).
DEFAULT_TUNED = str(Path(__file__).resolve().parents[1] / "workspace/runs/u50/checkpoints/last")

# The child's code: measure the baseline after imports, do the work, print one JSON line.
CHILD = r"""
import json, resource, sys, time
import torch
from knowshift.analysis.deltas import delta_stats
from knowshift.analysis.restore import restore_model
from knowshift.models.loader import model_directory

args = json.loads(sys.argv[1])
if args["threads"]:
    torch.set_num_threads(args["threads"])
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = model_directory(args["base"])
baseline = peak_mb()
result = {}
start = time.perf_counter()
if args["naive"]:
    from safetensors.torch import load_file, save_file
    pre = load_file(base / "model.safetensors")
    ft = load_file(args["tuned"] + "/model.safetensors")
    names = sorted(n for n in ft if ".layers." in n and "norm" not in n)
    change = torch.cat([((ft[n] - pre[n]).abs() / (pre[n].abs() + 1e-8)).reshape(-1) for n in names])
    k = round(args["fraction"] * len(change))
    threshold = torch.sort(change, descending=True).values[k - 1]
    for n in names:
        r = (ft[n] - pre[n]).abs() / (pre[n].abs() + 1e-8)
        ft[n] = torch.where(r >= threshold, pre[n], ft[n])
    save_file(ft, args["out"] + "/model.safetensors")
else:
    stats = delta_stats(base, args["tuned"])
    result["stats_s"] = time.perf_counter() - start
    result["stats"] = {"n_scalars": stats.n_scalars, "n_unchanged": stats.n_unchanged,
                       "total_change": stats.total_change, "concentration": stats.concentration}
    start = time.perf_counter()
    report = restore_model(base, args["tuned"], args["out"], args["fraction"], stats=stats)
    result["report"] = {k: v for k, v in vars(report).items() if k not in ("by_module", "by_layer")}
    result["by_module"] = {k: vars(v) for k, v in report.by_module.items()}
    result["by_layer"] = {k: vars(v) for k, v in report.by_layer.items()}
result["seconds"] = time.perf_counter() - start
result["peak_mb"] = peak_mb() - baseline
print(json.dumps(result))
"""


def run_child(args, naive: bool) -> dict:
    with tempfile.TemporaryDirectory(dir=args.scratch) as out:
        child_args = {
            "base": args.base, "tuned": args.tuned, "out": out, "fraction": args.fraction,
            "threads": args.threads, "naive": naive,
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(child_args)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_mb(directory: str) -> float:
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors")) / 2**20


def print_breakdown(result: dict) -> None:
    print("\nconcentration: share of the sum of r carried by the top fraction")
    for fraction, share in result["stats"]["concentration"]:
        print(f"  top {100 * fraction:6.1f}%  {100 * share:7.3f}%")
    print(f"\ntop {100 * result['report']['fraction']:.0f}% restored, by module type")
    print("  module              restored  share(count)  share(sum r)")
    rows = sorted(result["by_module"].items(), key=lambda kv: -kv[1]["share_of_restored"])
    for module, row in rows:
        print(
            f"  {module:18s} {row['n_restored']:9d}  {100 * row['share_of_restored']:11.1f}%"
            f"  {100 * row['share_of_restored_change']:11.1f}%"
        )
    print("\nby layer: share of restored scalars (share of restored sum of r)")
    layers = sorted(result["by_layer"].items(), key=lambda kv: int(kv[0]))
    print(
        "  "
        + "  ".join(
            f"{k}:{100 * v['share_of_restored']:.1f}({100 * v['share_of_restored_change']:.1f})"
            for k, v in layers
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", default=DEFAULT_TUNED)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--naive", action="store_true", help="also measure the peer")
    parser.add_argument("--scratch", default=None, help="folder for the written models")
    args = parser.parse_args()

    size_mb = model_mb(args.tuned)
    result = run_child(args, naive=False)
    print(
        f"model {args.tuned}: {size_mb:.0f} MB of safetensors; torch threads {args.threads or 'default'}"
    )
    print(f"delta_stats (histogram pass):  {result['stats_s']:6.1f} s")
    print(
        f"restore_model top {100 * args.fraction:.0f}%:        {result['seconds']:6.1f} s, "
        f"peak RSS {result['peak_mb']:.0f} MB = {result['peak_mb'] / size_mb:.2f}x the model "
        "(target <= 3x; peak includes the histogram pass)"
    )
    if args.naive:
        naive = run_child(args, naive=True)
        print(
            f"naive (load both, sort all r):  {naive['seconds']:6.1f} s, peak RSS "
            f"{naive['peak_mb']:.0f} MB = {naive['peak_mb'] / size_mb:.2f}x the model; "
            f"knowshift is {naive['seconds'] / (result['stats_s'] + result['seconds']):.1f}x faster, "
            f"{naive['peak_mb'] / result['peak_mb']:.1f}x less memory"
        )
    print_breakdown(result)


if __name__ == "__main__":
    main()
