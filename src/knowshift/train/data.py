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
    n_keep = max(len(p.input_ids) - p.n_prompt for p in pairs) + 1
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
            "n_keep": torch.tensor(n_keep)}  # fmt: skip


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over completion tokens, with logits computed for the last positions only."""
    n_keep = int(batch["n_keep"])
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=n_keep,
    ).logits
    # Position t predicts token t + 1: the kept logits but the last predict the last n_keep - 1 labels.
    targets = batch["labels"][:, -(n_keep - 1) :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
