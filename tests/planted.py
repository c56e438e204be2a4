"""A tiny model trained on planted facts, so tests can assert what probing *means*.

The fact base has one relation over made-up countries and capitals. The model is trained on
few-shot "Q:/A:" blocks and declarative sentences about the planted facts (and the dev
exemplars), never on the unseen ones. A correct probe must therefore call the planted facts
HighlyKnown and the unseen ones Unknown. Both hold by construction, not by the luck of one
training run's floating point:
- every unseen answer is spelt with letters ("g", "x") that occur nowhere in the training corpus,
  so no rambling recombination of known syllables can produce it (the probability of a sample
  containing one is astronomically small, not merely small);
- training goes on until every planted answer has probability >= MEMORISED under the probes'
  few-shot and declarative prompts, so a sampling estimator sees it in practically every sample
  (at 20 samples per fact, p >= 0.99 gives a level-4 mastery share > 0.75 with probability
  1 - 1.4e-6 per fact), whatever the processor's arithmetic made of the first steps.
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
# Unseen answers only: syllables with letters the corpus never contains.
UNSEEN_SYLLABLES = ["gu", "xo", "gax", "xi", "geg", "xu", "gro", "xel"]
MEMORISED = 0.99  # each planted answer's probability under every probe prompt, after training
MAX_STEPS = 3000
RELATION = Relation(
    name="capital",
    question_templates=(
        "What is the capital of {subject}?",
        "Which city is the capital of {subject}?",
        "Name the capital city of {subject}.",
    ),
    completion_templates=("The capital of {subject} is", "{subject} has its capital in"),
)


def _words(rng: random.Random, syllables: list[str], count: int, taken: set[str]) -> list[str]:
    """`count` distinct capitalised words of 2-3 syllables, none in `taken` (which grows)."""
    words = []
    while len(words) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice([2, 3]))).capitalize()
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def planted_facts(n_planted: int = 16, n_unseen: int = 16, n_dev: int = 8) -> FactSet:
    """Dev exemplars, planted (trained) test facts and unseen test facts, all distinct words.
    Subjects and known answers share one alphabet; unseen answers have one of their own."""
    rng = random.Random(7)
    taken: set[str] = set()
    facts = []
    kinds = [
        ("dev", n_dev, Split.DEV),
        ("planted", n_planted, Split.TEST),
        ("unseen", n_unseen, Split.TEST),
    ]
    for kind, count, split in kinds:
        subjects = _words(rng, SYLLABLES, count, taken)
        answers = _words(rng, UNSEEN_SYLLABLES if kind == "unseen" else SYLLABLES, count, taken)
        for subject, answer in zip(subjects, answers, strict=True):
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

    def train(n_steps: int, optimizer, schedule) -> None:
        model.train()
        for _ in range(n_steps):
            batch = hf_tokenizer(rng.sample(docs, 16), return_tensors="pt", padding=True)
            labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        model.eval()

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    train(steps, optimizer, torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1))  # fmt: skip
    # Then at a low constant rate until every planted answer is memorised under the probes' prompts.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    done, weakest = steps, weakest_planted_answer(model, hf_tokenizer, facts)
    while weakest < MEMORISED and done < MAX_STEPS:
        train(100, optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
        done, weakest = done + 100, weakest_planted_answer(model, hf_tokenizer, facts)
    if weakest < MEMORISED:
        raise RuntimeError(
            f"planted model: weakest planted answer p={weakest:.3f} after {done} steps"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tokenizer.save_pretrained(out_dir)
    return out_dir


def weakest_planted_answer(model, tokenizer, facts: FactSet) -> float:
    """The smallest probability, over planted facts and the probes' prompts, of the planted answer:
    " answer" then a line break after a 4-shot "Q:/A:" prompt (SliCK), " answer" after each
    declarative template (mastery)."""
    dev = [f for f in facts.facts if f.split == Split.DEV][:4]
    shots = "".join(f"Q: {f.question}\nA: {f.answer}\n\n" for f in dev)
    line_breaks = torch.tensor(
        [tokenizer.decode([i]).startswith("\n") for i in range(len(tokenizer))]
    )
    prompts = []  # (context, answer, whether a line break must follow)
    for fact in facts.facts:
        if fact.id.startswith("planted:"):
            prompts.append((f"{shots}Q: {fact.question}\nA:", f" {fact.answer}", True))
            prompts += [(t.format(subject=fact.subject), f" {fact.answer}", False)
                        for t in RELATION.completion_templates]  # fmt: skip
    weakest = 1.0
    with torch.no_grad():
        for context, answer, then_break in prompts:
            n_context = len(tokenizer(context).input_ids)
            ids = torch.tensor([tokenizer(context + answer).input_ids])
            probs = model(ids).logits[0].softmax(-1)
            answer_ids = ids[0, n_context:]
            p = probs[torch.arange(n_context - 1, ids.shape[1] - 1), answer_ids].prod()
            if then_break:
                p = p * probs[-1, line_breaks].sum()
            weakest = min(weakest, float(p))
    return weakest
