"""bench/gpu.sh --dry-run: the GPU benchmark's every section on the CPU, tiny sizes, the planted
model, so the script cannot rot while no GPU is lent. It measures nothing worth reading; it
checks that every figure is produced and that the ones the planted model fixes come out so."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_dry_on_the_cpu(planted_model_dir, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(planted_model_dir, work / "planted")  # the script trains it when absent
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(out),
                           "--work", str(work)], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert report["errors"] == {}
    assert set(figures) == {"device", "agreement", "probe", "training", "distributed", "projection"}
    assert figures["device"]["dry_run"] is True and figures["device"]["device"] == "cpu"
    # The planted model knows its planted facts and none of the unseen ones, by construction.
    agreement = figures["agreement"]
    assert agreement["planted_highly_known"] == 1.0 and agreement["unseen_unknown"] == 1.0
    assert agreement["exact_vs_sampling"] >= 0.9
    probe = figures["probe"]
    for estimator in ("exact", "sampling"):
        assert probe[estimator]["facts_per_s"] > 0 and probe[estimator]["tokens_per_fact"] > 0
    assert probe["token_budget"] in (512, 1024)
    assert set(probe["ratios"]) >= {"exact_over_sampling", "exact_over_hf_generate"}
    training = figures["training"]
    assert training["full"]["tokens_per_s"] > 0 and training["lora"]["tokens_per_s"] > 0
    assert training["largest_batch"] == 16  # the dry run's cap
    assert training["ratios"]["knowshift_over_trl"] > 0  # TRL is in the dev extra
    # Two gloo processes train what one does (float rounding only), as tests/test_distributed.py.
    assert figures["distributed"]["processes"] == 2
    assert figures["distributed"]["max_weight_difference"] < 5e-5
    for estimator in ("exact", "sampling"):
        minutes = figures["projection"][estimator]["minutes_at_measured_share"]
        assert math.isfinite(minutes) and minutes > 0
    assert "vllm" in report["skipped"] or "exact_torch_over_vllm" in probe["ratios"]
    assert "summary:" in done.stdout and f"wrote {out}" in done.stdout
