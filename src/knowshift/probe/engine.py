"""The batched inference engine behind every estimator: teacher-forced scoring and sampling.

Both entry points take *groups* of requests whose prompts start with the same tokens (all
questions of a relation under one exemplar set). A group's common token prefix is run once, with
batch size 1, and its key/value cache is shared (as an expanded view, no copy) by every batch of
the group; only the short per-question suffix is computed per row. Within a group, rows are
sorted by suffix length and cut into batches by a token budget, so padding stays small.

Suffixes are left-padded *between* the shared prefix and the suffix: the attention mask hides
the pads and position ids skip them, so every row's last prompt token sits in the last column.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from knowshift.models import LoadedModel

MIN_SHARED_PREFIX = 4  # below this, a group's common prefix is not worth a separate pass


@dataclass(frozen=True)
class ScoreRequest:
    """Teacher-force each of `continuations` after `prompt` (token ids); score each as an answer.

    The continuations (a fact's gold aliases) share one row: the prompt is computed once and
    each continuation is a branch that sees the prompt and itself only (a 4D attention mask).
    """

    prompt: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]

    @property
    def n_tokens(self) -> int:
        return len(self.prompt) + sum(len(c) for c in self.continuations)


@dataclass(frozen=True)
class Score:
    """greedy_ok: greedy decoding produces exactly the continuation and then stops.
    logp_sample: log-probability that one sample (temperature, top-k) does the same."""

    greedy_ok: bool
    logp_sample: float


@dataclass(frozen=True)
class SampleRequest:
    """Generate `n_samples` continuations of `prompt` (plus a greedy one when asked).

    `seed` keys the random numbers of this prompt: sample j at step t uses a uniform drawn from
    (seed, j, t) alone, so results do not depend on batching, order or interruption.
    """

    prompt: tuple[int, ...]
    seed: int


@dataclass(frozen=True)
class SamplingPlan:
    """What `Engine.sample` generates per prompt: [greedy] + n_samples rows, each ending at a stop
    token (a newline when `stop_at_newline`, and end of sequence) or after max_new_tokens."""

    n_samples: int
    temperature: float
    top_k: int
    max_new_tokens: int
    greedy: bool = True
    stop_at_newline: bool = True

    @property
    def rows_per_prompt(self) -> int:
        return self.n_samples + int(self.greedy)


@dataclass(frozen=True)
class SharedPrefix:
    """A group's common prompt prefix, run once: its length and key/value cache (0 and None when
    it is too short to be worth a separate pass)."""

    length: int
    cache: object | None


# A request's generated rows: the greedy row first (when asked), then the samples; token ids,
# the stop token excluded.
Rows = list[list[int]]


class Engine:
    """Scoring and sampling for one loaded model."""

    def __init__(self, loaded: LoadedModel, token_budget: int = 2048, max_rows: int = 512):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.eos_ids = sorted(eos_ids(self.model.generation_config.eos_token_id, self.tokenizer))
        newline, clean = stop_tokens(self.tokenizer, self.vocab_size, self.eos_ids)
        self.newline_tokens, self.clean_stop_tokens = newline.to(self.device), clean.to(self.device)
        # transformers 5.2x renamed the decoder's key/value cache argument `past_key_values` to
        # `cache` (the old name warns, and goes in 5.40): pass the one this version takes.
        forward = inspect.signature(self.model.get_decoder().forward).parameters
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        self.tokens_processed = 0  # every real token that went through the model
        self.logit_rows = 0  # positions whose output-layer logits were computed

    # ----------------------------------------------------------------------------------------
    # Teacher-forced scoring (the exact estimator)

    @torch.inference_mode()
    def score(
        self, groups: Sequence[Sequence[ScoreRequest]], temperature: float, top_k: int
    ) -> list[list[list[Score]]]:
        """Per group, per request, per continuation: greedy verdict and sample probability."""
        results = []
        for group in groups:
            scores: list[list[Score] | None] = [None] * len(group)
            prefix_len, prefix_cache = self._shared_prefix([r.prompt for r in group])
            for batch in self._batches([r.n_tokens - prefix_len for r in group]):
                batch_scores = self._score_batch(
                    [group[i] for i in batch], prefix_len, prefix_cache, temperature, top_k
                )
                for i, request_scores in zip(batch, batch_scores, strict=True):
                    scores[i] = request_scores
            results.append(scores)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def next_token_logits(self, prompts: Sequence[tuple[int, ...]]) -> torch.Tensor:
        """The output-layer logits (float32, on the CPU) of the token after each prompt: a
        [len(prompts), vocab] tensor. Prompts sharing a prefix (one template) share its pass."""
        out = torch.empty(len(prompts), self.vocab_size)
        prefix_len, prefix_cache = self._shared_prefix(prompts)
        for batch in self._batches([len(p) - prefix_len for p in prompts]):
            mask, positions, input_ids = self._pack(
                [prompts[i][prefix_len:] for i in batch], prefix_len
            )
            cache = self._batch_cache(prefix_cache, len(batch))
            logits = self._logits(self._hidden(input_ids, mask, positions, cache)[:, -1])
            out[batch] = logits[:, : self.vocab_size].cpu()
        return out

    def _score_batch(self, requests, prefix_len, prefix_cache, temperature, top_k):
        rows = [_branch_row(r.prompt[prefix_len:], r.continuations) for r in requests]
        width = max(len(tokens) for tokens, _, _ in rows)
        input_ids, positions, mask = self._pack_branches(rows, width, prefix_len)
        cache = self._batch_cache(prefix_cache, len(rows))
        hidden = self._hidden(input_ids, mask, positions, cache, sum(len(t) for t, _, _ in rows))
        # Which hidden states predict what: per continuation, continuation[0] at the last prompt
        # token, each later token and the stop at the branch's own tokens.
        picks, gold, owner = (
            [],
            [],
            [],
        )  # position in `hidden`, token to score (-1: stop), continuation
        n_continuations = 0
        for row, request in enumerate(requests):
            last_prompt = width - 1 - sum(len(c) for c in request.continuations)
            offset = last_prompt + 1
            for continuation in request.continuations:
                for t, position in enumerate(
                    [last_prompt, *range(offset, offset + len(continuation))]
                ):
                    picks.append(row * width + position)
                    gold.append(continuation[t] if t < len(continuation) else -1)
                    owner.append(n_continuations)
                offset += len(continuation)
                n_continuations += 1
        logits = self._logits(
            hidden.reshape(-1, hidden.shape[-1])[torch.tensor(picks, device=self.device)]
        )
        logp, wrong = self._score_positions(
            logits, torch.tensor(gold, device=self.device), temperature, top_k
        )
        owner_ids = torch.tensor(owner, device=self.device)
        logp_total = torch.zeros(n_continuations, device=self.device).index_add_(0, owner_ids, logp)
        n_wrong = torch.zeros(n_continuations, device=self.device).index_add_(
            0, owner_ids, wrong.float()
        )
        scores = [
            Score(bool(w == 0), float(lp))
            for lp, w in zip(logp_total.tolist(), n_wrong.tolist(), strict=True)
        ]
        out, start = [], 0
        for request in requests:
            out.append(scores[start : start + len(request.continuations)])
            start += len(request.continuations)
        return out

    def _score_positions(self, logits, gold, temperature: float, top_k: int):
        top_values, top_ids = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
        gold_logits = logits.gather(1, gold.clamp(min=0)[:, None])[:, 0]
        return score_positions(
            top_values, top_ids, gold_logits, gold, self.clean_stop_tokens, temperature
        )

    def _pack_branches(self, rows, width: int, prefix_len: int):
        """Left-padded ids, positions and an additive 4D mask for branch-packed rows."""
        batch, total = len(rows), prefix_len + width
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        allowed = torch.zeros((batch, width, total), dtype=torch.bool)
        allowed[:, :, :prefix_len] = True
        for i, (tokens, row_positions, branch) in enumerate(rows):
            start = width - len(tokens)
            input_ids[i, start:] = torch.tensor(tokens)
            positions[i, start:] = prefix_len + torch.tensor(row_positions)
            ids = torch.tensor(branch)
            causal = torch.ones(len(tokens), len(tokens), dtype=torch.bool).tril()
            # A token sees the shared prompt part (branch 0) and its own branch, never a sibling.
            same = (ids[None, :] == 0) | (ids[None, :] == ids[:, None])
            allowed[i, start:, prefix_len + start :] = causal & same
        diagonal = torch.arange(width)
        allowed[:, diagonal, prefix_len + diagonal] = True  # pads see themselves: no empty rows
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return input_ids.to(self.device), positions.to(self.device), mask[:, None].to(self.device)

    # ----------------------------------------------------------------------------------------
    # Sampling (the sampling, greedy and mastery estimators)

    @torch.inference_mode()
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
    ) -> list[list[Rows]]:
        """Generate per request [greedy] + n_samples continuations (token ids, stop excluded).

        A row ends at a stop token (a newline when `stop_at_newline`, and end of sequence), after
        `max_new_tokens`, or when `is_done(request_index, tokens)` says its result is settled.
        """
        plan = SamplingPlan(n_samples, temperature, top_k, max_new_tokens, greedy, stop_at_newline)
        results = []
        for group in groups:
            outputs: list[Rows | None] = [None] * len(group)
            prefix = SharedPrefix(*self._shared_prefix([r.prompt for r in group]))
            suffixes = [r.prompt[prefix.length :] for r in group]
            step_budget = max(1, self.max_rows // plan.rows_per_prompt)
            for batch in self._batches([len(x) for x in suffixes], max_rows=step_budget):
                generated = self._generate_batch(
                    [group[i] for i in batch], batch, prefix, plan, is_done
                )
                for i, rows in zip(batch, generated, strict=True):
                    outputs[i] = rows
            results.append(outputs)
        return results  # type: ignore[return-value]

    def _generate_batch(
        self, requests: Sequence[SampleRequest], indices: Sequence[int], prefix: SharedPrefix,
        plan: SamplingPlan, is_done: Callable[[int, list[int]], bool] | None,
    ) -> list[Rows]:  # fmt: skip
        """The rows of `requests` (their request indices in the group: `indices`), generated
        after the group's shared `prefix` as `plan` says."""
        rows_per_prompt, greedy = plan.rows_per_prompt, plan.greedy
        stop_tokens = self.newline_tokens if plan.stop_at_newline else self._eos_mask()
        suffixes = [r.prompt[prefix.length :] for r in requests]
        cache = self._batch_cache(prefix.cache, len(requests))
        mask, positions, input_ids = self._pack(suffixes, prefix.length)
        logits = self._logits(self._hidden(input_ids, mask, positions, cache)[:, -1])
        # Each prompt now fans out into its rows: row 0 greedy (if asked), then the samples.
        cache.batch_repeat_interleave(rows_per_prompt)
        logits = logits.repeat_interleave(rows_per_prompt, dim=0)
        mask = mask.repeat_interleave(rows_per_prompt, dim=0)
        next_position = positions[:, -1:].repeat_interleave(rows_per_prompt, dim=0) + 1
        sample_index = torch.arange(rows_per_prompt).repeat(len(requests)) - int(greedy)
        row_seeds = np.repeat(
            np.array([r.seed for r in requests], dtype=np.uint64), rows_per_prompt
        )
        row_request = np.repeat(np.arange(len(requests)), rows_per_prompt)
        outputs: Rows = [[] for _ in range(len(row_seeds))]
        active = torch.arange(len(row_seeds))  # rows still generating, as indices into outputs
        for step in range(plan.max_new_tokens):
            uniforms = _uniforms(row_seeds[active.numpy()], sample_index[active].numpy(), step)
            tokens = _choose(
                logits, sample_index[active] < 0, uniforms, plan.temperature, plan.top_k
            )
            finished = stop_tokens[tokens].cpu()
            for slot, (row, token) in enumerate(zip(active.tolist(), tokens.tolist(), strict=True)):
                if finished[slot]:
                    continue
                outputs[row].append(token)
                if is_done is not None and is_done(indices[row_request[row]], outputs[row]):
                    finished[slot] = True
            keep = ~finished
            if not keep.any() or step == plan.max_new_tokens - 1:
                break
            if not keep.all():  # drop finished rows so later steps cost less
                keep_idx = keep.nonzero()[:, 0].to(self.device)
                cache.batch_select_indices(keep_idx)
                active, tokens = active[keep], tokens[keep_idx]
                mask, next_position = mask[keep_idx], next_position[keep_idx]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            logits = self._logits(self._hidden(tokens[:, None], mask, next_position, cache)[:, -1])
            next_position = next_position + 1
        return [
            outputs[i * rows_per_prompt : (i + 1) * rows_per_prompt] for i in range(len(requests))
        ]

    # ----------------------------------------------------------------------------------------
    # Shared mechanics

    def _shared_prefix(self, prompts: Sequence[tuple[int, ...]]):
        """The group's common prompt prefix, run once (batch 1): (length, cache) or (0, None).

        The last token of every prompt stays out of the prefix: its logits predict the answer.
        """
        prefix_len = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        if prefix_len < MIN_SHARED_PREFIX:
            return 0, None
        return prefix_len, self._prefill_prefix(prompts[0][:prefix_len])

    def _prefill_prefix(self, prefix: tuple[int, ...]):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prefix], device=self.device)
        self._hidden(
            ids, torch.ones_like(ids), torch.arange(len(prefix), device=self.device)[None], cache
        )
        return cache

    def _pack(self, suffixes, prefix_len: int):
        """Left-pad suffixes; mask covers prefix + suffix; positions continue after the prefix."""
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(suffixes), width), pad, dtype=torch.long)
        suffix_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix)
            suffix_mask[row, width - len(suffix) :] = 1
        positions = (prefix_len + suffix_mask.cumsum(1) - 1).clamp(min=0)
        mask = torch.cat(
            [torch.ones((len(suffixes), prefix_len), dtype=torch.long), suffix_mask], 1
        )
        return mask.to(self.device), positions.to(self.device), input_ids.to(self.device)

    def _batch_cache(self, prefix_cache, batch_size: int):
        """The cache a batch starts from: the shared prefix as a view, or an empty one."""
        if prefix_cache is not None:
            return _expand_cache(prefix_cache, batch_size)
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _hidden(self, input_ids, mask, positions, cache, n_real: int | None = None) -> torch.Tensor:
        """Final hidden states of every position (the output layer is applied to few of them).

        `n_real` counts the non-pad tokens; by default the last columns of a 2D mask.
        """
        if n_real is None:
            n_real = int(mask[:, -input_ids.shape[1] :].sum())
        self.tokens_processed += n_real
        out = self.model.get_decoder()(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_argument: cache},
        )
        return out.last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer on selected hidden states, as the model's own head would compute it."""
        self.logit_rows += hidden.shape[0]
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _batches(self, lengths: Sequence[int], max_rows: int | None = None) -> list[list[int]]:
        """Indices grouped into batches of similar length within the token budget."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        max_rows = max_rows or self.max_rows
        batches, current, width = [], [], 0
        for i in order:
            new_width = max(width, lengths[i])
            if current and (
                new_width * (len(current) + 1) > self.token_budget or len(current) >= max_rows
            ):
                batches.append(current)
                current, new_width = [], lengths[i]
            current.append(i)
            width = new_width
        if current:
            batches.append(current)
        return batches

    def _eos_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        mask[self.eos_ids] = True
        return mask


def score_positions(top_values, top_ids, gold_values, gold, clean_stop_tokens, temperature: float):
    """Per scored position: log q(gold) under top-k/temperature sampling (for the stop, gold < 0,
    the mass of all clean stop tokens), and whether greedy decoding would pick something else.

    `top_values` / `top_ids`: the top-k scores and token ids of each position, best first;
    `gold_values`: the gold token's score. Scores are logits or log-probabilities alike: a
    position's constant offset cancels in every comparison and in the renormalisation.
    """
    log_norm = torch.logsumexp(top_values / temperature, dim=-1)  # top-k renormalisation
    is_stop = gold < 0
    logp_token = torch.where(
        gold_values >= top_values[:, -1], gold_values / temperature - log_norm, -math.inf
    )
    stop_in_top = clean_stop_tokens[top_ids]
    logp_stop = (
        torch.logsumexp((top_values / temperature).masked_fill(~stop_in_top, -math.inf), dim=-1)
        - log_norm
    )
    logp = torch.where(is_stop, logp_stop, logp_token)
    greedy_ok = torch.where(is_stop, stop_in_top[:, 0], gold_values >= top_values[:, 0])
    return logp, ~greedy_ok


def stop_tokens(
    tokenizer, vocab_size: int, eos: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks over the vocabulary (on the CPU): tokens that end an answer (any newline,
    and end of sequence), and those that end it cleanly (nothing but punctuation or space
    before their newline), which the exact estimator counts as the stop after the gold."""
    texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoded = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in texts]
    newline = torch.zeros(vocab_size, dtype=torch.bool)
    clean = torch.zeros(vocab_size, dtype=torch.bool)
    for i, text in enumerate(decoded[:vocab_size]):
        if "\n" in text:
            newline[i] = True
            clean[i] = not text.split("\n", 1)[0].strip(" .,;:!?")
    ids = [i for i in eos if i < vocab_size]
    newline[ids] = True
    clean[ids] = True
    return newline, clean


def eos_ids(generation_eos, tokenizer) -> set[int]:
    """End-of-sequence ids: the model's generation config (`generation_eos`: an id, a list or
    None), the tokenizer's, and the end-of-turn tokens of common chat formats."""
    ids: set[int] = set()
    for source in (generation_eos, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    for name in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


def _branch_row(prompt: Sequence[int], continuations: Sequence[Sequence[int]]):
    """Tokens, positions and branch ids (0 = prompt) of a prompt followed by its branches."""
    tokens, positions, branch = list(prompt), list(range(len(prompt))), [0] * len(prompt)
    for index, continuation in enumerate(continuations, start=1):
        tokens += continuation
        positions += range(len(prompt), len(prompt) + len(continuation))
        branch += [index] * len(continuation)
    return tokens, positions, branch


def _common_prefix_len(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for sequence in sequences[1:]:
        i = 0
        while i < length and sequence[i] == first[i]:
            i += 1
        length = i
    return length


def _expand_cache(prefix_cache, batch_size: int):
    """A batch view of a batch-1 prefix cache (no copy until the model appends to it)."""
    cache = copy.copy(prefix_cache)
    cache.layers = [copy.copy(layer) for layer in prefix_cache.layers]
    for layer in cache.layers:
        layer.keys = layer.keys.expand(batch_size, *layer.keys.shape[1:])
        layer.values = layer.values.expand(batch_size, *layer.values.shape[1:])
    return cache


def _choose(logits, is_greedy, uniforms, temperature: float, top_k: int) -> torch.Tensor:
    """Greedy rows take the arg-max; the others sample from softmax(top-k logits / T).

    Sampling uses the inverse CDF with the given uniforms, so it is reproducible row by row.
    """
    top_values, top_ids = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(top_values / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.as_tensor(uniforms, dtype=cdf.dtype, device=cdf.device)[:, None] * cdf[:, -1:]
    picks = torch.searchsorted(cdf, u).clamp(max=top_ids.shape[1] - 1)
    picks = torch.where(is_greedy.to(picks.device)[:, None], 0, picks)
    return top_ids.gather(1, picks)[:, 0]


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def _uniforms(seeds: np.ndarray, sample_index: np.ndarray, step: int) -> np.ndarray:
    """Uniforms in [0, 1) that depend only on (seed, sample index, step): counter-based RNG."""
    with np.errstate(over="ignore"):
        key = _splitmix64(seeds ^ _splitmix64(sample_index.astype(np.uint64) + np.uint64(1 << 32)))
        key = _splitmix64(key ^ np.uint64(step + 1))
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
