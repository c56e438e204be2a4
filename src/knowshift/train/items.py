"""What to measure after every epoch: the training examples and held-out dev/test facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from knowshift.facts.normalize import surface_aliases
from knowshift.facts.select import select_facts
from knowshift.mixtures import format_example
from knowshift.train.measure import EvalItem
from knowshift.types import Category, Example, Fact, FactSet

DEV, TEST = "dev", "test"


def example_items(examples: Sequence[Example]) -> list[EvalItem]:
    """Each training example: is it fitted (greedy gives its own completion)? Grouped as Known
    (HighlyKnown, MaybeKnown, WeaklyKnown) or Unknown by its fact's category."""
    items = []
    for index, example in enumerate(examples):
        groups = ["train"]
        if example.category is not None:
            groups.append(
                "train/Unknown" if example.category == Category.UNKNOWN.value else "train/Known"
            )
        groups.append(f"train/kind/{example.kind}")
        items.append(
            EvalItem(
                f"{index}:{example.fact_id}",
                example.prompt,
                (example.completion.rstrip("\n"),),
                tuple(groups),
            )
        )
    return items


def heldout_items(
    facts: FactSet,
    categories: Mapping[str, Category | None],
    train_relations: set[str],
    template: str,
    n_dev: int | None,
    n_test: int | None,
) -> list[EvalItem]:
    """Dev facts of the trained relations (EARLY_STOP picks by them) and test facts of all
    relations, grouped by category and by in/out of distribution (trained relation or not)."""
    items = []
    dev_facts = select_facts(facts, sorted(train_relations), split=DEV, limit=n_dev)
    for fact in dev_facts:
        items.append(fact_item(fact, template, (DEV,)))
    for fact in select_facts(facts, split=TEST, limit=n_test):
        where = "in" if fact.relation in train_relations else "out"
        category = categories.get(fact.id)
        groups = [TEST, f"{TEST}/{where}"]
        if category is not None:
            groups += [f"{TEST}/{category.value}", f"{TEST}/{where}/{category.value}"]
        items.append(fact_item(fact, template, tuple(groups)))
    return items


def fact_item(fact: Fact, template: str, groups: tuple[str, ...]) -> EvalItem:
    """A fact's question in the set's prompt format; any alias of its answer counts."""
    prompt, completion = format_example(fact.question, fact.answer, template)
    return EvalItem(fact.id, prompt, _continuations(fact.answers, completion, fact.answer), groups)


def _continuations(answers: Sequence[str], completion: str, answer: str) -> tuple[str, ...]:
    """Every alias (with the alias table's) written the way the template writes the answer."""
    stem = completion.rstrip("\n")
    return tuple(dict.fromkeys(stem.replace(answer, alias) for alias in surface_aliases(answers)))
