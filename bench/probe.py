"""Probe speed, measured as ratios against peers in the same run (issue 2's targets).

On the same geo test facts with smollm2-135m, Nex=10 exemplar sets, 16 samples:
  1. exact vs sampling estimator, facts per second (target: exact >= 100x), and how often
     the two agree on the category (target: >= 90%, confusion matrix printed);
  2. the sampling engine vs the straightforward sampler a user would write: Hugging Face
     `generate` with `num_return_sequences`, one fact's prompt batch at a time, no shared prefix,
     stopping at a newline (target: >= 2x);
  3. the engine's processed tokens per second as a fraction of this machine's bf16
     matrix-multiply ceiling, measured here (target: >= 25%).

    python bench/probe.py [--n-facts 200] [--n-naive-facts 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter

import torch

from knowshift.facts import exact_match, load_facts
from knowshift.facts.select import select_facts
from knowshift.models import load_model
from knowshift.models.loader import quiet_transformers
from knowshift.probe.engine import Engine
from knowshift.probe.estimators import ProbeConfig
from knowshift.probe.prompts import exemplar_sets, few_shot_prompt, prompt_format
from knowshift.probe.run import probe
from knowshift.store import Store
from knowshift.types import CATEGORIES


def matmul_ceiling(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best FLOP/s of dense matmuls in `dtype` over square and model-shaped problems."""
    shapes = [(2048, 2048, 2048), (4096, 576, 1536), (4096, 1536, 576), (1024, 4096, 4096)]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b  # warm-up: oneDNN picks and caches a kernel per shape
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            a @ b
            count += 1
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def engine_flops(engine: Engine) -> float:
    """FLOPs of the work the engine did: 2 x (non-embedding params) per token, plus the output
    layer for each logit row it computed (attention scores ignored: small at these lengths)."""
    model = engine.model
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embedding.numel()
    head = model.get_output_embeddings().weight.numel()
    return 2 * body * engine.tokens_processed + 2 * head * engine.logit_rows


def timed_probe(loaded, facts, targets, config, workspace):
    engine = Engine(loaded)
    store = Store.for_workspace(workspace)
    start = time.perf_counter()
    results = probe(loaded, facts, targets, config, store, engine=engine)
    return results, time.perf_counter() - start, engine


def naive_sampling(loaded, facts, targets, config) -> float:
    """The straightforward sampler: per fact, its Nex prompts as one left-padded batch through
    `generate` (greedy, then num_return_sequences samples), no prefix sharing. Returns seconds."""
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    fmt = prompt_format("plain", tokenizer)
    newline_ids = [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]
    start = time.perf_counter()
    correct = 0
    for fact in targets:
        sets = exemplar_sets(
            facts, fact.relation, config.n_exemplar_sets, config.k_shot, config.seed
        )
        prompts = [few_shot_prompt(fmt, e.for_fact(fact, config.k_shot), fact) for e in sets]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(loaded.device)
        common = dict(
            max_new_tokens=config.max_new_tokens,
            eos_token_id=newline_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            greedy = model.generate(**batch, do_sample=False, **common)
            sampled = model.generate(
                **batch, do_sample=True, temperature=config.temperature, top_k=config.top_k,
                num_return_sequences=config.n_samples, **common,
            )  # fmt: skip
        for output in [*greedy, *sampled]:
            text = tokenizer.decode(output[batch.input_ids.shape[1] :], skip_special_tokens=True)
            correct += exact_match(text.split("\n", 1)[0].strip(), fact.answers)
    return time.perf_counter() - start


def confusion(exact, sampled) -> str:
    counts = Counter((e.category, s.category) for e, s in zip(exact, sampled, strict=True))
    names = [c.value for c in CATEGORIES]
    lines = ["exact \\ sampling  " + "  ".join(f"{n:>11}" for n in names)]
    for row in CATEGORIES:
        lines.append(
            f"{row.value:<16}  " + "  ".join(f"{counts[(row, col)]:>11}" for col in CATEGORIES)
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-facts", type=int, default=200)
    parser.add_argument("--n-naive-facts", type=int, default=20)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    quiet_transformers()
    loaded = load_model(args.model, dtype=args.dtype)
    facts = load_facts("geo")
    targets = select_facts(facts, split="test", limit=args.n_facts)
    print(f"model {args.model} ({loaded.dtype}, {loaded.device}), {len(targets)} geo test facts, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    ceiling = matmul_ceiling(loaded.dtype)
    print(f"matmul ceiling ({loaded.dtype}): {ceiling / 1e9:.0f} GFLOP/s", flush=True)

    with tempfile.TemporaryDirectory() as workspace:
        exact, t_exact, e_exact = timed_probe(
            loaded, facts, targets, ProbeConfig.for_estimator("exact"), workspace
        )
        print(f"exact:    {len(targets) / t_exact:8.2f} facts/s ({t_exact:.1f} s)", flush=True)
        sampled, t_sampled, e_sampled = timed_probe(
            loaded, facts, targets, ProbeConfig.for_estimator("sampling"), workspace
        )
        print(f"sampling: {len(targets) / t_sampled:8.2f} facts/s ({t_sampled:.1f} s)", flush=True)
    naive_targets = targets[: args.n_naive_facts]
    t_naive = naive_sampling(loaded, facts, naive_targets, ProbeConfig.for_estimator("sampling"))
    naive_rate = len(naive_targets) / t_naive
    print(
        f"naive HF generate sampler: {naive_rate:8.3f} facts/s ({t_naive:.1f} s on {len(naive_targets)} facts)"
    )

    agree = sum(e.category == s.category for e, s in zip(exact, sampled, strict=True)) / len(
        targets
    )
    print("\n" + confusion(exact, sampled))
    print(
        "\ndisagreements (fact: exact category [its probability] P(T=0) | sampling category P(T=0) P(T>0)):"
    )
    for e, s in zip(exact, sampled, strict=True):
        if e.category != s.category:
            print(f"  {e.fact_id}: {e.category.value} [{e.category_prob:.2f}] {e.p_greedy:.1f} | "
                  f"{s.category.value} {s.p_greedy:.1f} {s.p_sampled:.3f}")  # fmt: skip
    expected = sum(e.category_prob for e in exact) / len(exact)
    print(f"\ncategory agreement exact vs sampling: {100 * agree:.1f}%  (target >= 90%)")
    print(f"agreement expected from exact's category probabilities: {100 * expected:.1f}%")
    print(f"exact / naive sampler speed:      {(len(targets) / t_exact) / naive_rate:8.1f}x")
    print(f"exact / sampling speed:           {t_sampled / t_exact:8.1f}x  (target >= 100x)")
    print(
        f"sampling engine / naive sampler:  {(len(targets) / t_sampled) / naive_rate:8.1f}x  (target >= 2x)"
    )
    for name, engine, seconds in (("exact", e_exact, t_exact), ("sampling", e_sampled, t_sampled)):
        fraction = engine_flops(engine) / seconds / ceiling
        print(f"{name} engine: {engine.tokens_processed / seconds:7.0f} tokens/s, "
              f"{100 * fraction:5.1f}% of the matmul ceiling  (target >= 25%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
