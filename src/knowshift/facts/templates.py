"""Question paraphrases and declarative completion templates per relation.

The table covers the 24 EntityQuestions relations the papers use (METHODS B and C). Each entry's
first question is the EntityQuestions template; the loader still puts the pattern recovered from
the data first, so a fact's own question is always template 0. Relations outside the table get
generic templates built from their question pattern (`generic_relation`), which are weaker: the
"paraphrases" only add a prefix and the "completions" are the question in a Q/A frame rather
than a declarative sentence, so mastery levels measured with them are less informative.
"""

from __future__ import annotations

from knowshift.types import Relation

# name: (description, question templates, completion templates)
EQ_TABLE: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "P17": ("country",
            ("Which country is {subject} located in?", "In which country is {subject}?",
             "{subject} is located in which country?", "What country is {subject} in?"),
            ("{subject} is located in the country of", "{subject} is in the country of",
             "{subject} can be found in the country of", "The country where {subject} is located is",
             "{subject} lies in the country of")),
    "P19": ("place of birth",
            ("Where was {subject} born?", "What is the birthplace of {subject}?",
             "In which place was {subject} born?"),
            ("{subject} was born in", "The birthplace of {subject} is",
             "{subject} was born in the city of", "{subject}'s place of birth is",
             "The place where {subject} was born is")),
    "P20": ("place of death",
            ("Where did {subject} die?", "What is the place of death of {subject}?",
             "In which place did {subject} die?"),
            ("{subject} died in", "The place of death of {subject} is", "{subject} passed away in",
             "{subject}'s place of death was", "The place where {subject} died is")),
    "P26": ("spouse",
            ("Who is {subject} married to?", "Who is the spouse of {subject}?",
             "Whom did {subject} marry?"),
            ("{subject} is married to", "The spouse of {subject} is", "{subject} married",
             "{subject}'s spouse is", "{subject} is the husband or wife of")),
    "P36": ("capital",
            ("What is the capital of {subject}?", "Which city is the capital of {subject}?",
             "What city serves as the capital of {subject}?"),
            ("The capital of {subject} is", "The capital city of {subject} is",
             "{subject}'s capital is", "{subject} has its capital in",
             "The seat of government of {subject} is")),
    "P40": ("child",
            ("Who is {subject}'s child?", "Who is a child of {subject}?",
             "Who is the son or daughter of {subject}?"),
            ("{subject}'s child is", "A child of {subject} is", "{subject} is the parent of",
             "{subject} has a child named", "The son or daughter of {subject} is")),
    "P50": ("author",
            ("Who is the author of {subject}?", "Who wrote {subject}?",
             "Who is {subject} written by?"),
            ("{subject} was written by", "The author of {subject} is", "{subject} is a book by",
             "{subject} was authored by", "The writer of {subject} is")),
    "P69": ("educated at",
            ("Where was {subject} educated?", "Which school did {subject} attend?",
             "Where did {subject} study?"),
            ("{subject} was educated at", "{subject} studied at", "{subject} attended",
             "{subject} is an alumnus of", "{subject} received an education at")),
    "P106": ("occupation",
             ("What kind of work does {subject} do?", "What is {subject}'s occupation?",
              "What does {subject} do for a living?"),
             ("{subject} works as a", "The occupation of {subject} is",
              "{subject} is by profession a", "{subject}'s profession is",
              "{subject} earns a living as a")),
    "P112": ("founded by",
             ("Who founded {subject}?", "Who is the founder of {subject}?",
              "Who established {subject}?"),
             ("{subject} was founded by", "The founder of {subject} is",
              "{subject} was established by", "{subject} was started by",
              "The person who founded {subject} is")),
    "P127": ("owned by",
             ("Who owns {subject}?", "Who is the owner of {subject}?",
              "Which company or person owns {subject}?"),
             ("{subject} is owned by", "The owner of {subject} is", "{subject} belongs to",
              "{subject} is the property of", "Ownership of {subject} lies with")),
    "P131": ("located in the administrative territorial entity",
             ("Where is {subject} located?", "In which administrative region is {subject}?",
              "Which region is {subject} in?"),
             ("{subject} is located in", "{subject} is a place in", "{subject} lies in",
              "{subject} is situated in", "{subject} is part of the region of")),
    "P136": ("genre",
             ("What type of music does {subject} play?", "What genre of music does {subject} play?",
              "What is {subject}'s musical genre?"),
             ("{subject} plays", "{subject} is known for playing",
              "The musical genre of {subject} is", "{subject} performs music in the genre of",
              "The music of {subject} is best described as")),
    "P159": ("headquarters location",
             ("Where is the headquarter of {subject}?", "Where is {subject} headquartered?",
              "In which city are the headquarters of {subject}?"),
             ("{subject} is headquartered in", "The headquarters of {subject} are in",
              "{subject} has its headquarters in", "{subject} is based in",
              "The head office of {subject} is located in")),
    "P170": ("creator",
             ("Who was {subject} created by?", "Who created {subject}?",
              "Who is the creator of {subject}?"),
             ("{subject} was created by", "The creator of {subject} is", "{subject} is a work by",
              "{subject} was made by", "The person who created {subject} is")),
    "P175": ("performer",
             ("Who performed {subject}?", "Who is the performer of {subject}?",
              "Which artist performed {subject}?"),
             ("{subject} was performed by", "The performer of {subject} is",
              "{subject} is a song by", "{subject} is performed by", "{subject} was recorded by")),
    "P176": ("manufacturer",
             ("Which company is {subject} produced by?", "Who manufactures {subject}?",
              "Which company makes {subject}?"),
             ("{subject} is produced by", "{subject} is manufactured by",
              "The manufacturer of {subject} is", "{subject} is made by",
              "The company that makes {subject} is")),
    "P264": ("record label",
             ("What music label is {subject} represented by?",
              "Which record label is {subject} signed to?", "What is {subject}'s record label?"),
             ("{subject} is signed to", "{subject} is represented by the label",
              "The record label of {subject} is", "{subject} releases music on",
              "{subject} records for the label")),
    "P276": ("location",
             ("Where is {subject} located?", "What is the location of {subject}?",
              "Where can {subject} be found?"),
             ("{subject} is located in", "The location of {subject} is", "{subject} can be found in",
              "{subject} is situated in", "{subject} stands in")),
    "P407": ("language of work or name",
             ("Which language was {subject} written in?", "In what language is {subject} written?",
              "What is the language of {subject}?"),
             ("{subject} was written in", "The language of {subject} is",
              "{subject} is written in the language", "The original language of {subject} is",
              "{subject} was composed in the language")),
    "P413": ("position played on team",
             ("What position does {subject} play?", "Which position does {subject} play in the team?",
              "What is {subject}'s playing position?"),
             ("{subject} plays as a", "{subject} plays in the position of",
              "The playing position of {subject} is", "{subject}'s position is",
              "On the team, {subject} plays")),
    "P495": ("country of origin",
             ("Which country was {subject} created in?", "What is the country of origin of {subject}?",
              "In which country did {subject} originate?"),
             ("{subject} was created in", "{subject} originates from",
              "The country of origin of {subject} is", "{subject} comes from the country of",
              "{subject} was made in the country of")),
    "P740": ("location of formation",
             ("Where was {subject} founded?", "In which city was {subject} formed?",
              "Where was {subject} formed?"),
             ("{subject} was founded in", "{subject} was formed in",
              "The place where {subject} was founded is", "{subject} originated in",
              "{subject} got its start in")),
    "P800": ("notable work",
             ("What is {subject} famous for?", "What is {subject}'s most notable work?",
              "What is {subject} best known for?"),
             ("{subject} is famous for", "{subject} is best known for",
              "The most notable work of {subject} is", "{subject}'s notable work is",
              "{subject} is remembered for")),
}  # fmt: skip

# PopQA property names whose meaning matches a table entry.
TABLE_ALIASES: dict[str, str] = {
    "country": "P17",
    "place of birth": "P19",
    "capital": "P36",
    "author": "P50",
    "occupation": "P106",
}


def build_relation(name: str, canonical: str) -> Relation:
    """The relation `name` with `canonical` as question template 0.

    Uses the table's paraphrases and completions where `name` (or its alias) is in the table,
    else the generic ones.
    """
    entry = EQ_TABLE.get(TABLE_ALIASES.get(name, name))
    if entry is None:
        return generic_relation(name, canonical)
    description, questions, completions = entry
    paraphrases = tuple(q for q in questions if q != canonical)
    return Relation(name, (canonical, *paraphrases), completions, description)


def generic_relation(name: str, canonical: str) -> Relation:
    """A relation with paraphrases and completions derived from its question template only.

    These are weaker than written ones: the paraphrases differ only by a prefix and the
    completion templates frame the question as Q/A instead of stating a declarative sentence.
    """
    questions = (canonical, f"Question: {canonical}", f"Answer briefly: {canonical}")
    completions = (
        f"Question: {canonical}\nAnswer:",
        f"Q: {canonical}\nA:",
        f"{canonical} The answer is",
        f"{canonical} Answer:",
        f"Here is the answer to the question '{canonical}':",
    )
    return Relation(name, questions, completions, f"{name} (generic templates)")
