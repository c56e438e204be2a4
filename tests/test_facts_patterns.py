"""Recovering "{subject}" question templates from question text (knowshift.facts.patterns)."""

from __future__ import annotations

from knowshift.facts.patterns import Pattern, common_pattern, from_template, pattern_of


def test_common_prefix_is_cut_back_to_a_word_boundary():
    pattern = common_pattern(["Where was Alan born?", "Where was Albert born?"])
    assert pattern == Pattern("Where was ", " born?")
    assert pattern.subject("Where was Alan born?") == "Alan"


def test_common_suffix_is_cut_back_to_a_word_boundary():
    questions = ["Who is Ann's child?", "Who is John's child?", "Who is O'Neil's child?"]
    pattern = common_pattern(questions)
    assert pattern.template == "Who is {subject}'s child?"
    assert [pattern.subject(q) for q in questions] == ["Ann", "John", "O'Neil"]


def test_shared_letters_inside_names_stay_in_the_subject():
    questions = ["Who is O'Brien's child?", "Who is O'Neil's child?"]
    assert common_pattern(questions).subject(questions[0]) == "O'Brien"
    questions = ["Who is Ann-Marie's child?", "Who is Jo-Marie's child?"]
    assert common_pattern(questions).subject(questions[1]) == "Jo-Marie"


def test_quotes_around_the_subject_stay_in_the_template():
    questions = ['Who wrote "Hamlet"?', 'Who wrote "Macbeth"?']
    assert common_pattern(questions).template == 'Who wrote "{subject}"?'


def test_no_pattern_from_one_question_or_free_form_questions():
    assert common_pattern(["What is the capital of France?"]) is None
    assert common_pattern(["What is love?", "What year is it?"]) is None


def test_template_round_trip_escapes_braces():
    pattern = Pattern("What is {x} of ", "?")
    assert pattern.template.format(subject="Peru") == "What is {x} of Peru?"
    assert from_template(pattern.template) == pattern


def test_pattern_of_a_known_subject():
    assert pattern_of("Who wrote Dune?", "Dune") == Pattern("Who wrote ", "?")
    assert pattern_of("Who wrote Dune?", "Emma") is None
