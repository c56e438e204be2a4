"""Which examples are short-answer questions that SliCK can probe, and why the others are not.

SliCK (METHODS A) asks a closed-book question and checks the model's answer, up to the first
newline, against the gold answer by exact match. That measures knowledge only for a short answer
such as an entity, a date or a number. An example is probed when its question is one line (after
taking it out of a "Q: ...\\nA:" or "<|question|> ... <|answer|>" template) and its answer is one
line, one sentence, not code, and at most `max_answer_words` words. Every other example gets a
reason, written "kind (detail)", and is reported, never scored.
"""

from __future__ import annotations

import re
from dataclasses import replace

from knowshift.audit.data import SftExample

MAX_ANSWER_WORDS = 8
MAX_QUESTION_WORDS = 80  # longer prompts carry a passage or instructions, not one question
# Characters too, for text without spaces (a pasted blob, a URL list): a 10 MB "word" would
# otherwise pass the word counts and be fed to the tokenizer and the model whole.
MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 200

# Prompt templates whose question is taken out: knowshift's own `plain` and `tagged` formats and
# their usual spellings ("Question: ... Answer:").
_PROMPT_TEMPLATES = (
    re.compile(r"(?:Q|Question)\s*:\s*(?P<question>.+?)\s*(?:A|Answer)\s*:", re.S | re.I),
    re.compile(r"<\|question\|>\s*(?P<question>.+?)\s*<\|answer\|>", re.S),
)
_CODE = re.compile(
    r"```|^\s*(?:def|class|import|from \S+ import|return|function|const|let|var|#include)\b"
    r"|[{}]\s*$|\)\s*;\s*$|=>|</?[a-zA-Z][\w-]*>|\b\w+\([^)]*\)\s*[:{]",
    re.M,
)
# A sentence end: a word of 2+ lower-case letters (not "St." or "U.S.") and . ! ?, then a new
# sentence; abbreviations and initials do not split.
_SENTENCE_BREAK = re.compile(r"(?<=[a-z\d]{2}[.!?])\s+(?=[A-Z\d\"'(])")


def question_of(prompt: str) -> str:
    """The question a prompt asks: the prompt itself, or the question inside a QA template."""
    text = prompt.strip()
    for template in _PROMPT_TEMPLATES:
        match = template.fullmatch(text)
        if match:
            return match["question"].strip()
    return text


def screen(example: SftExample, max_answer_words: int = MAX_ANSWER_WORDS) -> SftExample:
    """The example with its question taken out of a template and, when it cannot be probed,
    `problem` set to the reason."""
    question = question_of(example.question)
    answers = tuple(a.strip() for a in example.answers)
    problem = example.problem or _question_problem(question)
    problem = problem or _answer_problem(answers[0], max_answer_words)
    return replace(example, question=question, answers=answers, problem=problem)


def reason_kind(problem: str) -> str:
    """The kind of a reason ("long answer" of "long answer (12 words; ...)"), for counting."""
    return problem.split(" (", 1)[0]


def _question_problem(question: str) -> str | None:
    if not question:
        return "no question (empty prompt)"
    if len(question) > MAX_QUESTION_CHARS:
        return f"long prompt ({len(question):,} characters; a passage or data, not one question)"
    if "\n" in question:
        return "prompt of several lines (context or instructions, not one question)"
    n_words = len(question.split())
    if n_words > MAX_QUESTION_WORDS:
        return f"long prompt ({n_words} words; a passage or instructions, not one question)"
    return None


def _answer_problem(answer: str, max_words: int) -> str | None:
    if not answer:
        return "empty answer"
    if len(answer) > MAX_ANSWER_CHARS:
        return f"long answer ({len(answer):,} characters; short answers have at most {MAX_ANSWER_CHARS})"
    if _CODE.search(answer):
        return "code (the answer looks like program text)"
    if "\n" in answer:
        return "long-form answer (several lines)"
    n_sentences = len(_SENTENCE_BREAK.split(answer))
    if n_sentences > 1:
        return f"long-form answer ({n_sentences} sentences)"
    n_words = len(answer.split())
    if n_words > max_words:
        return f"long answer ({n_words} words; short answers have at most {max_words}, --max-answer-words)"
    return None
