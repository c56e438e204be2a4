"""Answer normalisation and matching, shared by every estimator and metric.

`normalize_answer` is SQuAD-style (lower case, no punctuation, no articles, single spaces) with
two additions: accents are stripped, so "São Paulo" matches "Sao Paulo", and hyphens and other
separators become spaces (so "Guinea-Bissau" matches "Guinea Bissau") while apostrophes and
periods are deleted (so "U.S." matches "US" and "Côte d'Ivoire" matches "Cote dIvoire").

The alias table holds only safe equivalences: other names of the same country, city, currency or
language ("USA" / "United States of America"), never broader or narrower terms ("dollar" for
"US dollar", "America" for the United States, "England" for the United Kingdom).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

_DELETED = re.compile(r"['\u2018\u2019\u02bc`.]")
_SEPARATORS = re.compile(r"[^\w\s]|_")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Letters that NFKD does not decompose into a base letter plus an accent.
_UNDECOMPOSED = str.maketrans(
    {"ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)

ALIAS_GROUPS: tuple[tuple[str, ...], ...] = (
    # Countries
    ("United States", "United States of America", "USA", "US", "U.S.", "U.S.A."),
    ("United Kingdom", "UK", "U.K.", "Great Britain", "Britain",
     "United Kingdom of Great Britain and Northern Ireland"),
    ("Russia", "Russian Federation"),
    ("South Korea", "Republic of Korea", "Korea, Republic of"),
    ("North Korea", "Democratic People's Republic of Korea", "DPRK",
     "Korea, Democratic People's Republic of"),
    ("Czechia", "Czech Republic"),
    ("Ivory Coast", "Côte d'Ivoire"),
    ("Netherlands", "Holland", "Kingdom of the Netherlands"),
    ("Myanmar", "Burma"),
    ("Eswatini", "Swaziland"),
    ("North Macedonia", "Macedonia", "Republic of North Macedonia"),
    ("Cabo Verde", "Cape Verde"),
    ("Timor-Leste", "East Timor"),
    ("Iran", "Islamic Republic of Iran"),
    ("Syria", "Syrian Arab Republic"),
    ("Vietnam", "Viet Nam"),
    ("Laos", "Lao People's Democratic Republic", "Lao PDR"),
    ("Tanzania", "United Republic of Tanzania"),
    ("Moldova", "Republic of Moldova"),
    ("Democratic Republic of the Congo", "DR Congo", "DRC", "Congo-Kinshasa"),
    ("Republic of the Congo", "Congo-Brazzaville"),
    ("Vatican City", "Holy See", "Vatican"),
    ("Turkey", "Türkiye"),
    ("China", "People's Republic of China", "PRC"),
    ("Brunei", "Brunei Darussalam"),
    ("Micronesia", "Federated States of Micronesia"),
    ("Palestine", "State of Palestine"),
    ("United Arab Emirates", "UAE"),
    # Cities that are better known by another name or spelling
    ("Washington, D.C.", "District of Columbia"),
    ("Kyiv", "Kiev"),
    ("Astana", "Nur-Sultan"),
    ("Naypyidaw", "Nay Pyi Taw"),
    ("Mumbai", "Bombay"),
    ("Chennai", "Madras"),
    ("Kolkata", "Calcutta"),
    # Currencies
    ("US Dollar", "United States dollar", "U.S. dollar", "American dollar"),
    ("Pound Sterling", "British pound", "British pound sterling"),
    ("Yuan Renminbi", "Renminbi", "Chinese yuan"),
    ("Yen", "Japanese yen"),
    # Languages
    ("Persian", "Farsi"),
    ("Spanish", "Castilian"),
    ("Indonesian", "Bahasa Indonesia"),
    ("Swahili", "Kiswahili"),
    ("Greek", "Modern Greek"),
)  # fmt: skip


@lru_cache(maxsize=1 << 18)
def normalize_answer(text: str) -> str:
    """Lower case, strip accents, punctuation and articles, collapse whitespace."""
    text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSED))
        # Compatibility forms can decompose to capitals ("ℌ" -> "H"), hence the second lower().
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _DELETED.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


@lru_cache(maxsize=1)
def _alias_index() -> dict[str, tuple[str, ...]]:
    """Normalised surface form -> every surface form of its alias group."""
    index: dict[str, tuple[str, ...]] = {}
    for group in ALIAS_GROUPS:
        for form in group:
            index[normalize_answer(form)] = group
    return index


@lru_cache(maxsize=1 << 16)
def _surface_aliases(answers: tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    index = _alias_index()
    for answer in answers:
        for form in (answer, *index.get(normalize_answer(answer), ())):
            seen.setdefault(normalize_answer(form), form)
    return tuple(form for norm, form in seen.items() if norm)


def surface_aliases(answers: Sequence[str]) -> tuple[str, ...]:
    """The answers plus their alias-table forms, one per normalised form, the answers first."""
    return _surface_aliases(tuple(answers))


@lru_cache(maxsize=1 << 16)
def _normalised_aliases(answers: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalize_answer(form) for form in _surface_aliases(answers))


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """True when the normalised prediction equals the normalised form of any gold alias."""
    return normalize_answer(prediction) in _normalised_aliases(tuple(answers))


_ACRONYM = re.compile(r"[A-Z]{2,5}")


@lru_cache(maxsize=1 << 16)
def _containment_keys(answers: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(whole-word keys on normalised text, acronyms to find case-sensitively on raw text)."""
    words, acronyms = [], []
    for form in _surface_aliases(answers):
        bare = form.replace(".", "")
        # "US" normalises to the pronoun "us"; acronyms are only trusted in capitals.
        if _ACRONYM.fullmatch(bare):
            acronyms.append(bare)
        else:
            words.append(f" {normalize_answer(form)} ")
    return tuple(words), tuple(acronyms)


def contains_match(text: str, answers: Sequence[str]) -> bool:
    """True when any gold alias occurs in the text as whole words, after normalisation.

    Acronym aliases (2-5 capital letters, periods ignored: "US", "U.K.", "DRC") are matched
    case-sensitively on the raw text, so "tell us" does not count as "US".
    """
    words, acronyms = _containment_keys(tuple(answers))
    padded = f" {normalize_answer(text)} "
    if any(word in padded for word in words):
        return True
    if acronyms:
        bare = text.replace(".", "")
        return any(re.search(rf"\b{acronym}\b", bare) for acronym in acronyms)
    return False
