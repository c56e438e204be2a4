"""Prompt/completion pairs as token batches with the loss on the completion only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

IGNORE_INDEX = -100  # labels the loss skips: prompt tokens and padding


@dataclass(frozen=True)
class TokenizedPair:
    input_ids: tuple[int, ...]
    n_prompt: int  # the first n_prompt tokens carry no loss


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[TokenizedPair]:
    """Tokenise prompt and completion separately (as the probe does) and join them.

    Joining token ids rather than strings keeps the prompt's tokens identical to those the model
    sees at evaluation, so the loss is on exactly the tokens it must generate (plus the stop).
    """
    prompts = tokenizer([p for p, _ in pairs]).input_ids
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False).input_ids
    # End every completion with end-of-sequence, so a model learns to stop after the answer
    # even in templates without a newline after it.
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [
        TokenizedPair(tuple(p + c + eos), len(p)) for p, c in zip(prompts, completions, strict=True)
    ]


def batch_loader(
    tokenized: Sequence[TokenizedPair],
    batch_size: int,
    pad_id: int,
    generator: torch.Generator,
    n_processes: int = 1,
) -> torch.utils.data.DataLoader:
    """Batches of `batch_size` pairs in an order `generator` shuffles (the last one may be
    smaller), collated for the loss.

    Split over `n_processes` (accelerate's `split_batches`: every process takes its slice of
    each batch), the last batch is topped up to the full size with filler rows that carry no
    loss, so that it splits evenly and the processes together see exactly the batches one
    process would. (accelerate would top it up with the first examples again, training them
    twice.)
    """
    collate_fn = partial(collate, pad_id=pad_id)
    if n_processes == 1:
        return torch.utils.data.DataLoader(tokenized, batch_size=batch_size, shuffle=True,
                                           generator=generator, collate_fn=collate_fn)  # fmt: skip
    n_filler = -len(tokenized) % batch_size
    filler = [TokenizedPair(tokenized[0].input_ids, len(tokenized[0].input_ids))] * n_filler
    shuffled = torch.utils.data.RandomSampler(tokenized, generator=generator)
    # The loader draws from `generator` too (a seed for its workers): as the one above does.
    return torch.utils.data.DataLoader(
        [*tokenized, *filler], batch_size=batch_size, collate_fn=collate_fn,
        sampler=_ShuffledThenFiller(shuffled, n_filler), generator=generator,
    )  # fmt: skip


class _ShuffledThenFiller(torch.utils.data.Sampler):
    """The examples' indices in shuffled order, then those of the filler rows (after them)."""

    def __init__(self, shuffled: torch.utils.data.RandomSampler, n_filler: int):
        self.shuffled, self.n_filler = shuffled, n_filler
        self.generator = shuffled.generator  # accelerate keeps it in step across processes

    def __iter__(self):
        yield from self.shuffled
        yield from range(len(self.shuffled), len(self.shuffled) + self.n_filler)

    def __len__(self) -> int:
        return len(self.shuffled) + self.n_filler


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ids, mask, positions and labels (IGNORE_INDEX outside completions).

    Left padding lines the completions up at the end of the batch, so the output layer and the
    loss need only the last `n_keep` positions (the longest completion + 1), not the prompts.
    """
    width = max(len(p.input_ids) for p in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        ids = torch.tensor(pair.input_ids)
        start = width - len(ids)
        input_ids[row, start:] = ids
        mask[row, start:] = 1
        labels[row, start + pair.n_prompt :] = ids[pair.n_prompt :]
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    # At least 2: a batch of filler rows only (see batch_loader) has no completion at all.
    n_keep = max(max(len(p.input_ids) - p.n_prompt for p in pairs), 1) + 1
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
            "n_keep": torch.tensor(n_keep)}  # fmt: skip


def completion_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """How many tokens of `batch` carry loss (its completions' tokens)."""
    return (batch["labels"] != IGNORE_INDEX).sum()


def completion_loss(
    model, batch: dict[str, torch.Tensor], n_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over completion tokens, with logits computed for the last positions only:
    their mean, or with `n_tokens` their sum divided by it (a process's share of the mean over
    a batch split across processes, whose tokens are counted over all of them)."""
    n_keep = int(batch["n_keep"])
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=n_keep,
    ).logits
    # Position t predicts token t + 1: the kept logits but the last predict the last n_keep - 1 labels.
    targets = batch["labels"][:, -(n_keep - 1) :]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="mean" if n_tokens is None else "sum",
    )
    return loss if n_tokens is None else loss / n_tokens
