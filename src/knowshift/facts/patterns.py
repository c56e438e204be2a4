"""Question patterns: recovering "{subject}" templates from question text.

A relation's questions are usually one template filled with different subjects ("What is the
capital of France?", "What is the capital of Peru?"). The template is the text that all of them
share: their longest common prefix and suffix, cut back to word boundaries so that a subject's
first or last letters are never taken for template text.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# A recovered pattern must keep at least this many words around the subject: "What {subject}?"
# is two free-form questions that happen to start alike, not a template.
MIN_PATTERN_WORDS = 2


@dataclass(frozen=True)
class Pattern:
    """The fixed text around the subject in a question."""

    prefix: str
    suffix: str

    @property
    def template(self) -> str:
        """The pattern as a `str.format` template with one `{subject}` field."""
        return f"{_escape(self.prefix)}{{subject}}{_escape(self.suffix)}"

    def fits(self, question: str) -> bool:
        """True when the question is this pattern around a non-empty subject."""
        return (
            len(question) > len(self.prefix) + len(self.suffix)
            and question.startswith(self.prefix)
            and question.endswith(self.suffix)
        )

    def subject(self, question: str) -> str:
        """The subject of a question that `fits` this pattern."""
        return question[len(self.prefix) : len(question) - len(self.suffix)]


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def from_template(template: str) -> Pattern:
    """The Pattern of a "... {subject} ..." template (the inverse of `Pattern.template`)."""
    prefix, suffix = template.split("{subject}", 1)
    unescape = lambda text: text.replace("{{", "{").replace("}}", "}")  # noqa: E731
    return Pattern(unescape(prefix), unescape(suffix))


def _ends_before_word(prefix: str) -> bool:
    """True when a subject may start right after `prefix`: after a space or an opening mark."""
    last = prefix[-1]
    if last.isspace():
        return True
    # An opening quote or bracket counts only after a space: 'wrote "' yes, "O'" (O'Brien) no.
    return not last.isalnum() and (len(prefix) == 1 or prefix[-2].isspace())


def _starts_after_word(suffix: str) -> bool:
    """True when a subject may end right before `suffix`: a space, punctuation or a clitic 's."""
    first = suffix[0]
    if first.isspace():
        return True
    if first in "'\u2019":
        # "'s child?" ends a subject; the apostrophe of "O'Neil's child?" does not.
        return suffix[1:2] == "s" and not suffix[2:3].isalnum()
    # A hyphen joins words ("Ann-Marie"), so it never starts the suffix.
    return not first.isalnum() and first != "-"


def common_pattern(questions: Sequence[str]) -> Pattern | None:
    """The pattern all questions share, or None when they share no usable one.

    Usable: at least two distinct questions, a non-empty subject left in each, and at least
    MIN_PATTERN_WORDS words of fixed text.
    """
    distinct = sorted(set(questions))
    if len(distinct) < 2:
        return None
    prefix = os.path.commonprefix(distinct)
    # "Where was Alan born?" / "Where was Albert born?" share "Where was Al": cut to "Where was ".
    while prefix and not _ends_before_word(prefix):
        prefix = prefix[:-1]
    rests = [question[len(prefix) :] for question in distinct]
    suffix = os.path.commonprefix([rest[::-1] for rest in rests])[::-1]
    while suffix and not _starts_after_word(suffix):
        suffix = suffix[1:]
    pattern = Pattern(prefix, suffix)
    if not all(pattern.fits(question) for question in distinct):
        return None
    n_words = sum(1 for word in (prefix + " " + suffix).split() if any(c.isalnum() for c in word))
    return pattern if n_words >= MIN_PATTERN_WORDS else None


def pattern_of(question: str, subject: str) -> Pattern | None:
    """The pattern of one question around its known subject (first occurrence), if present."""
    start = question.find(subject)
    if not subject or start < 0:
        return None
    return Pattern(question[:start], question[start + len(subject) :])


def majority_template(patterns: Sequence[Pattern | None]) -> str | None:
    """The most common template among per-question patterns (first seen wins ties)."""
    counts = Counter(pattern.template for pattern in patterns if pattern is not None)
    return counts.most_common(1)[0][0] if counts else None
