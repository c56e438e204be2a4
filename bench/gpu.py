"""One GPU benchmark in one go: probe, training and scale-out, each as ratios against a peer
measured in the same run, written to one JSON with a summary table (bench/gpu.sh runs it).

Sections (each in its own try: one that fails records its error and the others still run):
  device       the bf16 matmul peak measured here (the denominator of every "share of peak");
  agreement    on the planted model (trained here, its facts known by construction): categories of
               the exact and sampling estimators, the published procedure (HF generate, 10 prompts x
               (1 greedy + 16 samples) = 170 generations per fact) and vLLM where installed;
  probe        on the size model (random weights, real shape, e.g. 1b: Llama-3.2-1B's layers):
               facts/s and tokens/s of exact, sampling and the HF-generate procedure, vLLM with
               prefix caching where installed, each engine's share of the bf16 peak; the engine's
               token budget picked automatically (doubled while throughput rises and memory lasts);
  training     on the size model: knowshift full and LoRA (bf16) tokens/s against TRL's
               SFTTrainer on the same pairs, peak memory; the largest batch that fits, found by
               doubling until out of memory;
  distributed  accelerate launch (FSDP on CUDA, 2 gloo processes on CPU) against one process on
               the planted set: the largest weight difference;
  projection   the paper-scale plan: ~100k EntityQuestions facts of an 8B model on this device,
               exact and published sampling, from the measured tokens per fact and share of peak.

    python bench/gpu.py [--size 1b] [--out gpu.json]      # on a GPU: fits in ~10 min on one H100
    python bench/gpu.py --dry-run --out /tmp/gpu.json     # CPU, tiny sizes, planted model (the test)

Random weights make a real model's cost: the exact estimator's work does not depend on them;
sampled answers of a random model run to max_new_tokens, so sampling figures on the size model
are an upper bound (the agreement section samples a trained model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from planted import planted_facts, train_planted_model  # noqa: E402  (tests/planted.py)
from probe import naive_sampling  # noqa: E402  (bench/probe.py)

from knowshift.models.loader import LoadedModel, load_model, quiet_transformers  # noqa: E402
from knowshift.probe.engine import Engine  # noqa: E402
from knowshift.probe.estimators import ProbeConfig  # noqa: E402
from knowshift.probe.run import probe  # noqa: E402
from knowshift.store import Store  # noqa: E402
from knowshift.train.config import TrainConfig  # noqa: E402
from knowshift.train.loop import train  # noqa: E402

# Decoder shapes of the size model (Llama layout; the vocabulary is the tokenizer's).
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
}  # fmt: skip
PUBLISHED_GENERATIONS = 170  # per fact: 10 exemplar sets x (1 greedy + 16 samples)
PAPER_FACTS = 100_000  # EntityQuestions, all splits, roughly
PAPER_PARAMS = 8.0e9


@dataclass
class Sizes:
    """How much each section measures (GPU defaults; --dry-run shrinks them)."""

    shape: str = "1b"
    exact_facts: int = 1024
    sampling_facts: int = 128
    naive_facts: int = 8
    agreement_facts: int = 16  # planted + as many unseen
    train_pairs: int = 512
    batch_size: int = 16
    max_batch: int = 1024
    budgets: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768, 65536)


DRY = Sizes(shape="tiny", exact_facts=24, sampling_facts=8, naive_facts=2, agreement_facts=16,
            train_pairs=32, batch_size=4, max_batch=16, budgets=(512, 1024))  # fmt: skip


@dataclass
class Report:
    figures: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    def section(self, name: str, run: Callable[[], dict]) -> None:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            self.figures[name] = {**run(), "seconds": round(time.perf_counter() - started, 1)}
        except Exception as error:  # noqa: BLE001 - a section's failure is a result to report
            self.errors[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            print(f"!! {name} failed: {self.errors[name]}", flush=True)

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why
        print(f"-- skipped {what}: {why}", flush=True)


# --- the device ----------------------------------------------------------------------------------


def device_of(dry_run: bool) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU; float32 on a CPU (the dry run: most CPUs have no bf16 matmul units)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_peak(device: torch.device, n: int, seconds: float = 2.0) -> float:
    """Best matmul FLOP/s measured on `device` in its compute dtype (square n x n products)."""
    a = torch.randn(n, n, dtype=compute_dtype(device), device=device)
    b = torch.randn(n, n, dtype=compute_dtype(device), device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# --- the models ----------------------------------------------------------------------------------


def planted_model(folder: Path) -> Path:
    """The planted model (tests/planted.py), trained once into `folder` (reused when there)."""
    if not (folder / "config.json").is_file():
        train_planted_model(planted_facts(), folder)
    return folder


def size_model(shape: str, tokenizer_dir: Path, out: Path, device: torch.device) -> Path:
    """A randomly initialised Llama of `shape` with the tokenizer of `tokenizer_dir`, saved."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
                         **SHAPES[shape])  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(compute_dtype(device))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    return out


def parameters(loaded: LoadedModel) -> tuple[int, int]:
    """(non-embedding parameters, output-layer parameters)."""
    model = loaded.model
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return body, model.get_output_embeddings().weight.numel()


def engine_flops(loaded: LoadedModel, engine: Engine) -> float:
    body, head = parameters(loaded)
    return 2 * body * engine.tokens_processed + 2 * head * engine.logit_rows


# --- probe -------------------------------------------------------------------------------------


def run_probe(loaded, facts, targets, estimator: str, engine=None):
    engine = engine or Engine(loaded)
    with tempfile.TemporaryDirectory() as workspace, Store.for_workspace(workspace) as store:
        synchronize(loaded.device)
        start = time.perf_counter()
        results = probe(loaded, facts, targets, ProbeConfig.for_estimator(estimator), store,
                        engine=engine)  # fmt: skip
        synchronize(loaded.device)
        return results, time.perf_counter() - start, engine


def agreement(a, b) -> float:
    return sum(x.category == y.category for x, y in zip(a, b, strict=True)) / len(a)


def vllm_present(report: Report) -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        report.skip("vllm", "vLLM is not installed here (no package index on the GPU machine; "
                    "its wheels exceed what a device call carries): no vLLM figures")  # fmt: skip
        return False
    return True


def agreement_section(report: Report, model_dir: Path, sizes: Sizes, device: torch.device) -> dict:
    """Categories of the planted facts by every procedure, against the exact estimator."""
    facts = planted_facts(n_planted=sizes.agreement_facts, n_unseen=sizes.agreement_facts)
    targets = [f for f in facts.facts if f.split.value == "test"]
    loaded = load_model(str(model_dir), device=device.type, dtype="float32")
    exact, _, _ = run_probe(loaded, facts, targets, "exact")
    sampled, _, _ = run_probe(loaded, facts, targets, "sampling")
    planted = {f.id for f in targets if f.id.startswith("planted:")}
    figures = {
        "facts": len(targets),
        "exact_vs_sampling": agreement(exact, sampled),
        "exact_categories": dict(Counter(r.category.value for r in exact)),
        "planted_highly_known": sum(
            r.category.value == "HighlyKnown" for r in exact if r.fact_id in planted
        )
        / len(planted),  # fmt: skip
        "unseen_unknown": sum(
            r.category.value == "Unknown" for r in exact if r.fact_id not in planted
        )
        / (len(targets) - len(planted)),  # fmt: skip
    }
    if vllm_present(report):
        from knowshift.probe.vllm_engine import load_vllm_model

        vllm_model = load_vllm_model(str(model_dir), dtype="float32")
        vllm_exact, _, _ = run_probe(vllm_model, facts, targets, "exact", engine=None)
        figures["exact_torch_vs_vllm"] = agreement(exact, vllm_exact)
    return figures


def autotuned_engine(loaded, facts, targets, sizes: Sizes) -> tuple[Engine, dict]:
    """The token budget with the best exact throughput, doubling while it rises and fits."""
    tried, best = {}, None
    for budget in sizes.budgets:
        engine = Engine(loaded, token_budget=budget, max_rows=max(512, budget // 4))
        try:
            _, seconds, _ = run_probe(loaded, facts, targets, "exact", engine=engine)
        except Exception as error:
            if not out_of_memory(error):
                raise
            tried[budget] = "out of memory"
            reset_peak(loaded.device)
            break
        tried[budget] = round(len(targets) / seconds, 2)
        if best is not None and tried[budget] <= tried[best] * 1.02:
            break
        best = budget if best is None or tried[budget] > tried[best] else best
    return Engine(loaded, token_budget=best, max_rows=max(512, best // 4)), {"token_budget": best, "facts_per_s_by_budget": tried}  # fmt: skip


def probe_section(report: Report, model_dir: Path, sizes: Sizes, device: torch.device, peak: float) -> dict:  # fmt: skip
    facts = planted_facts(n_planted=sizes.exact_facts // 2, n_unseen=sizes.exact_facts // 2)
    targets = [f for f in facts.facts if f.split.value == "test"]
    loaded = load_model(
        str(model_dir), device=device.type, dtype=str(compute_dtype(device)).removeprefix("torch.")
    )
    # Tune on a slice, measure on all.
    engine, tuning = autotuned_engine(loaded, facts, targets[: max(8, len(targets) // 4)], sizes)
    figures = {"shape": sizes.shape, "parameters": sum(parameters(loaded)), **tuning}
    reset_peak(device)
    rates = {}
    for estimator, n in (("exact", len(targets)), ("sampling", sizes.sampling_facts)):
        fresh = Engine(loaded, token_budget=engine.token_budget, max_rows=engine.max_rows)
        _, seconds, used = run_probe(loaded, facts, targets[:n], estimator, engine=fresh)
        rates[estimator] = n / seconds
        figures[estimator] = {
            "facts": n, "facts_per_s": round(n / seconds, 3),
            "tokens_per_s": round(used.tokens_processed / seconds, 1),
            "tokens_per_fact": round(used.tokens_processed / n, 1),
            "share_of_peak": engine_flops(loaded, used) / seconds / peak,
        }  # fmt: skip
    figures["peak_memory_gib"] = peak_memory(device)
    naive = targets[: sizes.naive_facts]
    synchronize(device)
    seconds = naive_sampling(loaded, facts, naive, ProbeConfig.for_estimator("sampling"))
    rates["hf_generate"] = len(naive) / seconds
    figures["hf_generate_published"] = {"facts": len(naive), "facts_per_s": round(len(naive) / seconds, 4),
                                        "generations_per_fact": PUBLISHED_GENERATIONS}  # fmt: skip
    figures["ratios"] = {
        "exact_over_sampling": rates["exact"] / rates["sampling"],
        "exact_over_hf_generate": rates["exact"] / rates["hf_generate"],
        "sampling_over_hf_generate": rates["sampling"] / rates["hf_generate"],
    }
    if vllm_present(report):
        from knowshift.probe.vllm_engine import load_vllm_model

        vllm_model = load_vllm_model(
            str(model_dir), dtype="bfloat16", options={"enable_prefix_caching": True}
        )
        _, seconds, _ = run_probe(vllm_model, facts, targets, "exact", engine=None)
        figures["ratios"]["exact_torch_over_vllm"] = rates["exact"] / (len(targets) / seconds)
    return figures


# --- training ---------------------------------------------------------------------------------


def qa_pairs(n: int) -> list[tuple[str, str]]:
    facts = planted_facts(n_planted=n // 2, n_unseen=n - n // 2)
    return [(f"Q: {f.question}\nA:", f" {f.answer}\n") for f in facts.facts if f.split.value == "test"][:n]  # fmt: skip


def knowshift_tokens_per_s(model_dir: Path, pairs, config: TrainConfig, device) -> tuple[float, float | None]:  # fmt: skip
    from knowshift.train.data import tokenize_pairs

    loaded = load_model(str(model_dir), device=device.type, dtype="float32")
    tokens = sum(len(p.input_ids) for p in tokenize_pairs(loaded.tokenizer, pairs))
    reset_peak(device)
    with tempfile.TemporaryDirectory() as out:
        result = train(loaded, pairs, [], config, out)
    return tokens / result.records[-1].train_seconds, peak_memory(device)


def trl_tokens_per_s(model_dir: Path, pairs, batch_size: int, device) -> float:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    loaded = load_model(str(model_dir), device=device.type, dtype="float32")
    dataset = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out, num_train_epochs=1, per_device_train_batch_size=batch_size,
            learning_rate=1e-5, lr_scheduler_type="constant", bf16=device.type == "cuda",
            use_cpu=device.type == "cpu", completion_only_loss=True, packing=False,
            save_strategy="no", report_to="none", logging_steps=10_000, dataloader_num_workers=0,
            max_length=None, seed=0,
        )  # fmt: skip
        trainer = SFTTrainer(model=loaded.model, args=config, train_dataset=dataset,
                             processing_class=loaded.tokenizer)  # fmt: skip
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        synchronize(device)
        start = time.perf_counter()
        trainer.train()
        synchronize(device)
        return tokens / (time.perf_counter() - start)


def largest_batch(model_dir: Path, pairs, sizes: Sizes, device) -> int:
    """The largest power-of-two batch one full bf16 step fits in (capped at max_batch)."""
    best, batch = None, sizes.batch_size
    while batch <= sizes.max_batch:
        many = (pairs * (batch // len(pairs) + 1))[:batch]
        config = TrainConfig(epochs=1, batch_size=batch, lr=1e-5, precision=_precision(device))
        try:
            knowshift_tokens_per_s(model_dir, many, config, device)
        except Exception as error:
            if not out_of_memory(error):
                raise
            reset_peak(device)
            break
        best, batch = batch, batch * 2
    return best or 0


def _precision(device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def training_section(report: Report, model_dir: Path, sizes: Sizes, device, peak: float) -> dict:
    pairs = qa_pairs(sizes.train_pairs)
    loaded = load_model(str(model_dir), device="cpu", dtype="float32")
    n_params = sum(p.numel() for p in loaded.model.parameters())
    del loaded
    figures: dict = {
        "pairs": len(pairs),
        "batch_size": sizes.batch_size,
        "precision": _precision(device),
    }
    common = dict(epochs=1, batch_size=sizes.batch_size, lr=1e-5, precision=_precision(device))
    full, full_memory = knowshift_tokens_per_s(model_dir, pairs, TrainConfig(**common), device)
    lora, lora_memory = knowshift_tokens_per_s(model_dir, pairs, TrainConfig(method="lora", lora_rank=8, lora_alpha=16, **common), device)  # fmt: skip
    figures["full"] = {"tokens_per_s": round(full, 1), "peak_memory_gib": full_memory,
                       "share_of_peak": 6 * n_params * full / peak}  # fmt: skip
    figures["lora"] = {"tokens_per_s": round(lora, 1), "peak_memory_gib": lora_memory}
    try:
        import trl  # noqa: F401
    except ImportError:
        report.skip("trl", "TRL is not installed (pip install trl, or carry its wheels): no TRL ratio")  # fmt: skip
    else:
        figures["trl_full_tokens_per_s"] = round(trl_tokens_per_s(model_dir, pairs, sizes.batch_size, device), 1)  # fmt: skip
        figures["ratios"] = {"knowshift_over_trl": full / figures["trl_full_tokens_per_s"]}
    figures["largest_batch"] = largest_batch(model_dir, pairs, sizes, device)
    return figures


# --- distributed --------------------------------------------------------------------------------


def distributed_section(report: Report, model_dir: Path, device, work: Path) -> dict:
    """`knowshift train` on the planted set by one process and by an accelerate launch; the
    largest weight difference between their last checkpoints."""
    from safetensors.torch import load_file

    work.mkdir(parents=True, exist_ok=True)
    facts_file = work / "planted.jsonl"
    facts = planted_facts()
    facts_file.write_text("".join(json.dumps({"id": f.id, "relation": f.relation, "subject": f.subject,
                          "question": f.question, "answers": list(f.answers), "split": f.split.value}) + "\n"
                          for f in facts.facts))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    if device.type == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    knowshift = [sys.executable, "-m", "knowshift"]
    where = ["--device", device.type]

    def run(command: list[str]) -> None:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:6])} ... failed: {done.stderr[-1500:]}")

    ws, data = work / "ws", work / "set"
    run([*knowshift, "probe", "--model", str(model_dir), "--facts", f"jsonl:{facts_file}", "--dtype",
         "float32", "--split", "all", "--workspace", str(ws), *where])  # fmt: skip
    run([*knowshift, "build", "--recipe", "unknown-ratio", "--facts", f"jsonl:{facts_file}", "--model",
         str(model_dir), "--workspace", str(ws), "--out", str(data), "--split", "test", "--size", "8",
         "--frac-unknown", "0.5"])  # fmt: skip
    args = ["train", "--data", str(data), "--model", str(model_dir), "--epochs", "2", "--lr", "2e-3",
            "--batch-size", "4", "--precision", "fp32", "--n-dev", "8", "--n-test", "16",
            "--workspace", str(ws), *where]  # fmt: skip
    config = ROOT / "configs" / "accelerate" / ("fsdp.yaml" if device.type == "cuda" else "cpu-2proc.yaml")  # fmt: skip
    processes = str(max(1, torch.cuda.device_count())) if device.type == "cuda" else "2"
    start = time.perf_counter()
    run([*knowshift, *args, "--out", str(work / "one")])
    one_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
         "--num_processes", processes, "-m", "knowshift", *args, "--out", str(work / "launched")])  # fmt: skip
    launched_seconds = time.perf_counter() - start
    weights = [load_file(work / run / "checkpoints" / "last" / "model.safetensors") for run in ("one", "launched")]  # fmt: skip
    difference = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    return {"launcher": config.stem, "processes": int(processes), "max_weight_difference": difference,
            "one_process_s": round(one_seconds, 1), "launched_s": round(launched_seconds, 1)}  # fmt: skip


# --- the paper-scale plan -------------------------------------------------------------------------


def projection(probe_figures: dict, peak: float) -> dict:
    """Hours to probe ~100k facts of an 8B model here: tokens per fact x facts x 2 x 8e9 FLOPs
    over (the share of the bf16 peak the engine reached x the peak)."""
    plan = {"facts": PAPER_FACTS, "parameters": PAPER_PARAMS, "peak_flops": peak}
    for estimator in ("exact", "sampling"):
        measured = probe_figures.get(estimator)
        if not measured:
            continue
        flops = measured["tokens_per_fact"] * PAPER_FACTS * 2 * PAPER_PARAMS
        share = measured["share_of_peak"]
        plan[estimator] = {"tokens": measured["tokens_per_fact"] * PAPER_FACTS,
                           "minutes_at_measured_share": flops / (share * peak) / 60 if share > 0 else math.inf,
                           "minutes_at_half_peak": flops / (0.5 * peak) / 60}  # fmt: skip
    return plan


# --- main -------------------------------------------------------------------------------------


def summary(report: Report) -> str:
    rows = []

    def add(name, value, unit=""):
        if value is not None:
            rows.append(f"  {name:<46} {value:>12.4g} {unit}" if isinstance(value, float | int) else f"  {name:<46} {value:>12} {unit}")  # fmt: skip

    f = report.figures
    add(
        "matmul peak (bf16 on GPU; fp32 on CPU)",
        f.get("device", {}).get("matmul_peak_tflops"),
        "TFLOP/s",
    )
    a = f.get("agreement", {})
    add("agreement exact vs sampling (planted)", a.get("exact_vs_sampling"))
    add("agreement exact torch vs vLLM (planted)", a.get("exact_torch_vs_vllm"))
    p = f.get("probe", {})
    for estimator in ("exact", "sampling"):
        e = p.get(estimator, {})
        add(f"probe {estimator} facts/s", e.get("facts_per_s"))
        add(f"probe {estimator} share of peak", e.get("share_of_peak"))
    for name, value in p.get("ratios", {}).items():
        add(f"probe ratio {name}", value, "x")
    t = f.get("training", {})
    add("train full tokens/s", t.get("full", {}).get("tokens_per_s"))
    add("train LoRA tokens/s", t.get("lora", {}).get("tokens_per_s"))
    add("train ratio knowshift / TRL", t.get("ratios", {}).get("knowshift_over_trl"), "x")
    add("largest training batch", t.get("largest_batch"))
    d = f.get("distributed", {})
    add(
        f"{d.get('launcher', 'launch')} vs one process: max weight diff",
        d.get("max_weight_difference"),
    )
    for estimator in ("exact", "sampling"):
        add(f"8B x 100k facts, {estimator}, minutes", f.get("projection", {}).get(estimator, {}).get("minutes_at_measured_share"))  # fmt: skip
    lines = ["summary:", *rows]
    lines += [f"  skipped {k}: {v}" for k, v in report.skipped.items()]
    lines += [f"  FAILED {k}: {v}" for k, v in report.errors.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, measures nothing")  # fmt: skip
    parser.add_argument("--size", choices=sorted(SHAPES), help="the size model's shape (default 1b; dry run: tiny)")  # fmt: skip
    parser.add_argument("--out", default="gpu-bench.json", help="the JSON of all figures")
    parser.add_argument("--work", help="a folder to keep the models in (default: a temporary one)")
    parser.add_argument("--skip", action="append", default=[], choices=["agreement", "probe", "training", "distributed"])  # fmt: skip
    args = parser.parse_args(argv)

    quiet_transformers()
    sizes = DRY if args.dry_run else Sizes()
    if args.size:
        sizes.shape = args.size
    device = device_of(args.dry_run)
    report = Report()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
              f"torch {torch.__version__}, size model {sizes.shape}", flush=True)  # fmt: skip
        on_gpu = device.type == "cuda"
        peak = matmul_peak(device, 8192 if on_gpu else 512, 2.0 if on_gpu else 0.5)
        report.figures["device"] = {
            "device": str(device), "name": torch.cuda.get_device_name() if on_gpu else "cpu",
            "torch": torch.__version__, "dtype": str(compute_dtype(device)),
            "matmul_peak_tflops": peak / 1e12, "dry_run": args.dry_run,
        }  # fmt: skip
        planted = planted_model(work / "planted")
        if "agreement" not in args.skip:
            report.section("agreement", lambda: agreement_section(report, planted, sizes, device))
        sized = work / f"size-{sizes.shape}"
        if not (sized / "config.json").is_file():
            size_model(sizes.shape, planted, sized, device)
        if "probe" not in args.skip:
            report.section("probe", lambda: probe_section(report, sized, sizes, device, peak))
        if "training" not in args.skip:
            report.section("training", lambda: training_section(report, sized, sizes, device, peak))
        if "distributed" not in args.skip:
            report.section("distributed", lambda: distributed_section(report, planted, device, work / "distributed"))  # fmt: skip
        if "probe" in report.figures:
            report.figures["projection"] = projection(report.figures["probe"], peak)
    document = {"figures": report.figures, "skipped": report.skipped, "errors": report.errors}
    Path(args.out).write_text(json.dumps(document, indent=1, sort_keys=True, default=str) + "\n")
    print(summary(report))
    print(f"wrote {args.out}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
