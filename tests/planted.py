"""A tiny model trained on planted facts, so tests can assert what probing *means*.

The fact base has one relation over made-up countries and capitals. The model is trained on
few-shot "Q:/A:" blocks and declarative sentences about the planted facts (and the dev
exemplars), never on the unseen ones, whose answers are strings it has never produced. A correct
probe must therefore call the planted facts HighlyKnown and the unseen ones Unknown.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from knowshift.types import Fact, FactSet, Relation, Split

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "to",
    "va",
    "zi",
    "pe",
    "sho",
    "dra",
    "qui",
    "bel",
    "mor",
]
RELATION = Relation(
    name="capital",
    question_templates=(
        "What is the capital of {subject}?",
        "Which city is the capital of {subject}?",
        "Name the capital city of {subject}.",
    ),
    completion_templates=("The capital of {subject} is", "{subject} has its capital in"),
)


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()


def planted_facts(n_planted: int = 16, n_unseen: int = 16, n_dev: int = 8) -> FactSet:
    """Dev exemplars, planted (trained) test facts and unseen test facts, all distinct words."""
    rng = random.Random(7)
    words: list[str] = []
    while len(words) < 2 * (n_planted + n_unseen + n_dev):
        word = _word(rng, rng.choice([2, 3]))
        if word not in words:
            words.append(word)
    facts = []
    kinds = [
        ("dev", n_dev, Split.DEV),
        ("planted", n_planted, Split.TEST),
        ("unseen", n_unseen, Split.TEST),
    ]
    for kind, count, split in kinds:
        for _ in range(count):
            subject, answer = words.pop(), words.pop()
            question = RELATION.question(subject)
            facts.append(Fact(f"{kind}:{subject}", "capital", subject, (answer,), question, split))
    return FactSet("planted", {"capital": RELATION}, tuple(facts))


def _corpus(facts: FactSet, rng: random.Random, n_docs: int) -> list[str]:
    known = [f for f in facts.facts if not f.id.startswith("unseen:")]
    docs = []
    for _ in range(n_docs):
        shots = rng.sample(known, 5)
        docs.append("".join(f"Q: {f.question}\nA: {f.answer}\n\n" for f in shots))
        fact = rng.choice(known)
        docs.append(
            f"{rng.choice(RELATION.completion_templates).format(subject=fact.subject)} {fact.answer}.\n"
        )
    return docs


def train_planted_model(facts: FactSet, out_dir: Path, steps: int = 500, seed: int = 0) -> Path:
    """Train a 2-layer Llama on the planted corpus; save model + tokenizer to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    rng = random.Random(seed)
    docs = _corpus(facts, rng, 600)
    # Byte-level BPE, so unseen answers still tokenise (into pieces the model never produced).
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(docs, trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>"
    )
    config = LlamaConfig(
        vocab_size=len(hf_tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1
    )
    model.train()
    for _ in range(steps):
        batch = hf_tokenizer(rng.sample(docs, 16), return_tensors="pt", padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tokenizer.save_pretrained(out_dir)
    return out_dir
