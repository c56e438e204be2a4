"""Prompt/completion pairs as token batches with the loss on the completion only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (IGNORE_INDEX outside completions)."""
    width = max(len(p.input_ids) for p in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        ids = torch.tensor(pair.input_ids)
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
        labels[row, pair.n_prompt : len(ids)] = ids[pair.n_prompt :]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
