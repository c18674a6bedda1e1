import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.errors import RaitError
from rait.data import choose_target
from rait.scoring import (DEFAULT_REFUSAL_PHRASES, STRATEGIES, classify_mcqa, classify_oeqa,
                          extract_choice, is_refusal, matches, normalize, squad_normalize)


# ------------------------------------------------------------------ normalize

@pytest.mark.parametrize("text, expected", [
    ("Paris", "paris"),
    ("  The   Eiffel Tower!  ", "eiffel tower"),
    ("An apple a day", "apple a day"),                   # only the leading article goes
    ("Vitamin A", "vitamin a"),                          # a trailing "a" is part of the name
    ("Alexander the Great", "alexander the great"),
    ("The Who", "who"),
    ("the the Beatles", "beatles"),                      # every leading article, so idempotent
    ("U.S.A.", "usa"), ("U.S.A", "usa"), ("U. S. A.", "usa"), ("u.s.a.", "usa"),
    ("J.R.R. Tolkien", "jrr tolkien"), ("J. R. R. Tolkien", "jrr tolkien"),
    ("George W. Bush", "george w bush"),                 # a single initial stays a word
    ("Plan A. B is next", "plan a b is next"),           # spaced letters join only if all dotted
    ("Washington, D.C.", "washington dc"),
    ("2.5 m.p.h.", "2 5 mph"),
    ("Mark Twain.", "mark twain"),
    ("\u201cHamlet\u201d", "hamlet"),
    ("O\u2019Brien", "o brien"),
    ("O'Brien", "o brien"),
    ("Jean\u2013Paul Sartre", "jean paul sartre"),
    ("1,000,000 dollars", "1000000 dollars"),
    ("3.14", "3 14"),
    ("\uff30\uff41\uff52\uff49\uff53", "paris"),          # full-width letters fold (NFKC)
    ("\ufb01nance", "finance"),                          # the "fi" ligature
    ("Caf\u00e9", "caf\u00e9"),                          # accents kept
    ("M\u00fcnchen", "m\u00fcnchen"),
    ("\u6771\u4eac\u3002", "\u6771\u4eac"),              # CJK kept, ideographic full stop dropped
    ("\u041c\u043e\u0441\u043a\u0432\u0430!", "\u043c\u043e\u0441\u043a\u0432\u0430"),
    ("\u0928\u092e\u0938\u094d\u0924\u0947", "\u0928\u092e\u0938\u094d\u0924\u0947"),  # marks kept
    ("The The", "the the"),                              # only articles: kept, still matchable
    ("A", "a"),
    ("the", "the"),
    ("theatre", "theatre"),                              # articles only as whole words
    ("", ""),
    ("?!...", ""),
    ("snake_case", "snake case"),
])
def test_normalize_table(text, expected):
    assert normalize(text) == expected


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_normalize_has_no_outer_or_double_spaces(text):
    out = normalize(text)
    assert out == out.strip() and "  " not in out


# ------------------------------------------------------------------ matches

@pytest.mark.parametrize("answer, aliases, strategy, expected", [
    ("Paris, France", ["Paris"], "contains", True),
    ("Parisian", ["Paris"], "contains", False),
    ("It was in 1914.", ["1914"], "contains", True),
    ("19145", ["1914"], "contains", False),
    ("the eiffel tower", ["Eiffel Tower"], "contains", True),
    ("Eiffel", ["Eiffel Tower"], "contains", False),
    ("Mark Twain", ["Samuel Clemens", "Mark Twain"], "contains", True),
    ("O\u2019Brien", ["O'Brien"], "exact", True),
    ("Paris, France", ["Paris"], "exact", False),
    ("  PARIS!! ", ["paris"], "exact", True),
    ("The Beatles", ["Beatles"], "exact", True),
    ("anything", ["", "   ", "?!"], "contains", False),
    ("", [""], "exact", False),
    ("", ["Paris"], "contains", False),
    ("Paris", [], "contains", False),
    ("The The", ["The The"], "exact", True),
    ("I like the band The The", ["The The"], "contains", True),
    ("\u7b54\u6848\u662f\u4e1c\u4eac", ["\u4e1c\u4eac"], "contains", True),  # no spaces in Chinese
    ("\u0432 \u041c\u043e\u0441\u043a\u0432\u0435", ["\u041c\u043e\u0441\u043a\u0432\u0430"], "contains", False),
    ("1,000 metres", ["1000 metres"], "contains", True),
    ("Saint-Tropez", ["Saint Tropez"], "exact", True),
])
def test_matches_table(answer, aliases, strategy, expected):
    assert matches(answer, aliases, strategy) is expected


def test_matches_unknown_strategy_lists_squad():
    assert STRATEGIES == ("contains", "exact", "squad")
    with pytest.raises(RaitError, match="choose one of contains, exact, squad"):
        matches("Paris", ["Paris"], "fuzzy")


def test_matches_unknown_strategy():
    with pytest.raises(RaitError, match="unknown matching strategy 'fuzzy'"):
        matches("Paris", ["Paris"], "fuzzy")


words = st.text(alphabet=string.ascii_letters + string.digits + "\u00e9\u00fc\u0436\u03bb", min_size=1,
                max_size=8).filter(lambda w: w.lower() not in {"a", "an", "the"})
aliases_st = st.lists(words, min_size=1, max_size=4).map(" ".join)


@given(aliases_st)
def test_answer_equal_to_alias_always_matches(alias):
    assert matches(alias, [alias], "contains")
    assert matches(alias, [alias], "exact")


@given(aliases_st, st.sampled_from(["", "the ", "The ", "A ", "an ", "\"", "(", "**", "  "]),
       st.sampled_from(["", ".", "!", "?", ")", "\"", " .", "...", "**"]),
       st.sampled_from([str.lower, str.upper, str.title, lambda s: s]))
def test_decoration_changes_nothing(alias, prefix, suffix, case):
    decorated = prefix + case(alias) + suffix
    assert matches(decorated, [alias], "exact")
    assert matches(decorated, [alias], "contains")


@given(st.text(alphabet=string.ascii_letters + string.digits + " .,!", min_size=1),
       st.text(alphabet=string.ascii_letters + string.digits + " .,!", min_size=1))
def test_no_shared_characters_never_matches(answer, alias):
    alias_chars = {c.lower() for c in alias if c.isalnum()}
    answer = "".join(c for c in answer if c.lower() not in alias_chars)
    assert not matches(answer, [alias], "contains")
    assert not matches(answer, [alias], "exact")


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("text, expected", [
    ("I don't know", True),
    ("I don't know.", True),
    ("I don\u2019t know", True),          # curly apostrophe (the reference misses it)
    ("I don\u02bct know", True),
    ("i DONT know", True),
    ("I do not know the answer to this question.", True),
    ("I'm not sure.", True),
    ("I am not sure", True),
    ("I cannot answer that.", True),
    ("I can't answer this question", True),
    ("I have no idea", True),
    ("Sorry, but I don't know.", True),    # filler before "but" is no answer
    ("I don't know, but", True),
    ("I'm not sure, but I don't know", True),
    ("Unknown", True),
    ("unknown.", True),
    ("No idea", True),
    ("idk", True),
    ("I don't know for sure, but it's Paris", False),   # a hedge followed by an answer
    ("I'm not sure, however I think it is Paris", False),
    ("Paris, but I'm not sure", False),                 # an answer followed by a hedge
    ("The Unknown Soldier", False),                     # "unknown" only as the whole answer
    ("An unknown painter", False),
    ("Paris", False),
    ("", False),
    ("I know it: Paris", False),
    ("I don't knowingly lie", False),                   # word boundaries
    ("Nobody knows", False),
])
def test_is_refusal_table(text, expected):
    assert is_refusal(text) is expected


def test_is_refusal_custom_phrases():
    assert is_refusal("Pass.", ["pass"])
    assert not is_refusal("I don't know", ["pass"])
    assert is_refusal("n/a", ["^n/a$"])
    assert not is_refusal("n/a today", ["^n a$"])


def test_default_phrases_all_refuse_and_cover_the_brief():
    for phrase in DEFAULT_REFUSAL_PHRASES:
        plain = phrase[1:-1] if phrase.startswith("^") else phrase
        assert is_refusal(plain), phrase
    for required in ["I don't know", "I do not know", "I dont know", "I'm not sure", "I am not sure",
                     "I cannot answer", "I can't answer", "I have no idea"]:
        assert required in DEFAULT_REFUSAL_PHRASES


# ------------------------------------------------------------------ classify_oeqa

@pytest.mark.parametrize("answer, expected", [
    ("Paris", "correct"),
    ("It is Paris, France.", "correct"),
    ("Lyon", "wrong"),
    ("Parisian", "wrong"),
    ("", "wrong"),
    ("   ", "wrong"),
    ("I don't know", "refused"),
    ("I don't know, Paris maybe", "refused"),           # refusal is checked first
    ("I don't know for sure, but it's Paris", "correct"),
    ("I'm not sure, but maybe Lyon", "wrong"),
])
def test_classify_oeqa_table(answer, expected):
    assert classify_oeqa(answer, ["Paris", "City of Light"]) == expected


def test_classify_oeqa_strategy_and_phrases():
    assert classify_oeqa("Paris, France", ["Paris"], strategy="exact") == "wrong"
    assert classify_oeqa("pass", ["Paris"], refusal_phrases=["pass"]) == "refused"


# ------------------------------------------------------------------ extract_choice

CHOICES = {"A": "Boyle's law", "B": "Paris", "C": "Dalton's law", "D": "Rome"}
LABELS = list(CHOICES)
CORPUS = [
    ("B", "B"), ("B.", "B"), ("(B)", "B"), ("B)", "B"), ("[B]", "B"), ("b", "B"), ("(b)", "B"),
    ("  B  ", "B"), ("**B**", "B"), ("`B`", "B"), ("B:", "B"),
    ("B: Paris", "B"), ("B. Paris", "B"), ("(B) Paris", "B"), ("B) Paris", "B"), ("B - Paris", "B"),
    ("The answer is B", "B"), ("The answer is B.", "B"), ("The answer is (B).", "B"),
    ("Answer: B", "B"), ("The correct answer is: D", "D"),
    ("The correct option is C", "C"), ("I think it is B", "B"), ("I think it's B because...", "B"),
    ("I think B.", "B"), ("I'd say D", "D"), ("I would choose option C", "C"),
    ("I choose option C", "C"), ("Option A", "A"), ("Choice (d)", "D"),
    ("C is correct", "C"), ("A is the correct answer", "A"), ("D\nBecause Rome is the capital", "D"),
    ("The answer is **B**", "B"), ("\\boxed{C}", "C"),
    ("Paris", "B"), ("paris.", "B"), ("The answer is Paris", "B"), ("Dalton's law", "C"),
    ("B: Paris. So the answer is B.", "B"),
    # prose with incidental capitals or articles
    ("According to the law of partial pressures, the total is the sum.", None),
    ("A lot of people think so.", None),
    ("It depends on Dalton's law and more", None),
    ("I", None), ("I am not certain of this", None), ("It is a hard question", None),
    ("Because Boyle studied gases", None), ("Definitely Rome or Paris", None),
    ("the answer is a fish", None), ("I think A lot of it is luck", None),
    ("Dalton's law, Boyle's law and Charles's law all apply", None),
    ("In Asia, Bangkok is big.", None), ("", None), ("   ", None),
    # several different letters asserted
    ("The answer is B or C", None), ("A or B", None), ("A, B", None), ("(A) and (C)", None),
    ("B: Paris. The answer is C", None), ("A: Paris", None), ("The answer is B/C", None),
    ("Answer: A. Wait, the answer is D.", None),
    ("E", None),                                   # not one of the labels
]


@pytest.mark.parametrize("text, expected", CORPUS)
def test_extract_choice_corpus(text, expected):
    assert extract_choice(text, LABELS, CHOICES) == expected


def test_corpus_is_large_and_balanced():
    assert len(CORPUS) >= 40
    assert sum(expected is None for _, expected in CORPUS) >= 15


def test_extract_choice_without_choices_ignores_option_text():
    assert extract_choice("Paris", LABELS) is None
    assert extract_choice("B: Paris", LABELS) == "B"


def test_extract_choice_other_label_sets():
    labels = list("ABCDEFGHIJ")
    assert extract_choice("I", labels) == "I"
    assert extract_choice("I think so", labels) is None
    assert extract_choice("The answer is J", labels) == "J"
    assert extract_choice("2", ["1", "2", "3", "4"]) == "2"
    assert extract_choice("The answer is 3", ["1", "2", "3", "4"]) == "3"


def test_extract_choice_duplicate_option_texts_are_ambiguous():
    assert extract_choice("Paris", ["A", "B"], {"A": "Paris", "B": "paris"}) is None


@given(st.sampled_from(LABELS), st.sampled_from(["{}", "({})", "{}.", "The answer is {}", "Answer: {}",
                                                 "**{}**", "{}: text", "I think it is {}"]))
def test_extract_choice_finds_every_label_in_every_form(label, form):
    assert extract_choice(form.format(label), LABELS) == label


# ------------------------------------------------------------------ classify_mcqa

@pytest.mark.parametrize("answer, expected", [
    ("B", "correct"), ("Paris", "correct"), ("The answer is (B).", "correct"),
    ("C", "wrong"), ("Rome", "wrong"),
    ("I don't know.", "refused"), ("I don\u2019t know", "refused"),
    ("I don't know. But I think it is B", "correct"),
    ("According to Dalton", "unparsed"), ("", "unparsed"), ("B or C", "unparsed"),
])
def test_classify_mcqa_table(answer, expected):
    assert classify_mcqa(answer, CHOICES, "B") == expected


def test_classify_mcqa_bad_target():
    with pytest.raises(RaitError, match="target 'E'"):
        classify_mcqa("B", CHOICES, "E")


# ------------------------------------------------------------------ choose_target

@pytest.mark.parametrize("aliases, expected", [
    (["paris", "Paris", "City of Light"], "Paris"),
    (["Paris (disambiguation)", "paris", "Paris"], "Paris"),
    (["paris", "lutetia"], "paris"),
    (["  Mark Twain ", "mark twain"], "Mark Twain"),
    (["", "1914"], "1914"),                       # digits only: no case at all, keep order
    (["1914", "World War One"], "1914"),
])
def test_choose_target(aliases, expected):
    assert choose_target(aliases) == expected


def test_choose_target_nothing_usable():
    # one rule (rait.data.choose_target): a disambiguation entry is the last resort, not an error
    assert choose_target(["X (disambiguation)", " "]) == "X (disambiguation)"
    with pytest.raises(RaitError):
        choose_target(["", " "])


def test_negative_numbers_keep_their_sign():
    assert normalize("-40 degrees") == "-40 degrees"
    assert not matches("-40", ["40"])
    assert not matches("40", ["-40"])
    assert matches("It was -40.", ["-40"])
    assert normalize("1914-1918") == "1914 1918"  # a range dash is not a sign


# ------------------------------------------------------------------ articles (audit finding 2)

@pytest.mark.parametrize("answer, aliases, expected", [
    # before: True - "a" was dropped everywhere, so the alias read "vitamin"
    ("Vitamin B", ["Vitamin A"], False),
    ("Hepatitis B", ["Hepatitis A"], False),
    ("Vitamin", ["Vitamin A"], False),
    ("It is vitamin A.", ["Vitamin A"], True),
    # before: True - "The Who" read "who"
    ("Who knows", ["The Who"], False),
    ("It's who you know", ["The Who"], False),
    ("The Who", ["The Who"], True),
    ("I think it was The Who.", ["The Who"], True),
    ("Who", ["The Who"], True),                          # the bare name, as in exact mode
    ("Sun Yat-sen", ["The Sun"], False),
    # a leading article of a longer name still goes, on both sides
    ("Beatles", ["The Beatles"], True),
    ("It was the Beatles", ["Beatles"], True),
    ("Eiffel Tower", ["The Eiffel Tower"], True),
    ("It is the Eiffel Tower.", ["The Eiffel Tower"], True),
    ("Tale of Two Cities", ["A Tale of Two Cities"], True),
    ("Alexander the Great", ["Alexander the Great"], True),
    ("Alexander Great", ["Alexander the Great"], False),
])
def test_contains_keeps_articles_that_name(answer, aliases, expected):
    assert matches(answer, aliases, "contains") is expected


def test_exact_keeps_inner_articles():
    assert not matches("Vitamin", ["Vitamin A"], "exact")      # before: True
    assert matches("the Beatles", ["Beatles"], "exact")
    assert matches("Beatles", ["The Beatles"], "exact")


# ------------------------------------------------------------------ acronym dots

@pytest.mark.parametrize("answer, alias", [
    ("USA", "U.S.A."), ("U.S.A.", "USA"), ("U. S. A.", "U.S.A."), ("u.s.a", "USA"),
    ("JRR Tolkien", "J. R. R. Tolkien"), ("T.S. Eliot", "TS Eliot"), ("Washington DC", "Washington, D.C."),
])
def test_acronym_dots_do_not_matter(answer, alias):
    for strategy in ("contains", "exact"):
        assert matches(answer, [alias], strategy), strategy


@pytest.mark.parametrize("answer, alias", [
    ("314", "3.14"), ("3.15", "3.14"),                       # decimals stay decimals
    ("J Tolkien", "J. R. R. Tolkien"),                       # initials are not dropped
    ("USA", "U.S."),
])
def test_acronym_dots_make_no_false_positives(answer, alias):
    assert not matches(answer, [alias], "contains")
    assert not matches(answer, [alias], "exact")


# ------------------------------------------------------------------ negation guard

@pytest.mark.parametrize("answer, expected", [
    ("not Mark Twain", False),                   # before: True
    ("Not Mark Twain.", False),
    ("It is not Mark Twain", False),
    ("it isn't Mark Twain", False),
    ("It isn\u2019t Mark Twain", False),
    ("It isnt Mark Twain", False),
    ("definitely not Mark Twain", False),
    ("I don't think it's Mark Twain", False),
    ("Certainly not the author Mark Twain", False),
    ("Neither Mark Twain nor Poe", False),
    ("It was never Mark Twain", False),
    ("Mark Twain", True),
    ("Mark Twain, not Poe", True),               # the negation is after the alias
    ("Not Poe but Mark Twain", True),            # a contrast word starts a new clause
    ("Not Poe, Mark Twain", True),               # so does punctuation
    ("Not Poe. Mark Twain.", True),
    ("Not Poe - Mark Twain", True),
    ("Not Poe; it is Mark Twain", True),
    ("Not Poe, not Melville: Mark Twain", True),
    ("not Mark Twain... wait, yes, Mark Twain", True),   # one unnegated occurrence is enough
    ("Nobody but Mark Twain", True),
    ("Knot Mark Twain", True),                   # whole words only
    ("It is not that far, Mark Twain", True),
    ("Not Poe or Melville or Hawthorne or Mark Twain", True),   # beyond the window
])
def test_negation_guard(answer, expected):
    assert matches(answer, ["Mark Twain", "Samuel Clemens"], "contains") is expected


def test_negation_guard_abbreviations_and_initials_do_not_end_a_clause():
    assert not matches("Not Dr. Watson", ["Watson"])
    assert not matches("not St. Petersburg", ["Petersburg"])
    assert matches("Dr. Watson", ["Watson"])


def test_negation_guard_can_be_switched_off():
    assert matches("not Mark Twain", ["Mark Twain"], negation_guard=False)
    assert matches("it isn't Paris", ["Paris"], "contains", negation_guard=False)
    assert classify_oeqa("not Paris", ["Paris"]) == "wrong"
    assert classify_oeqa("not Paris", ["Paris"], negation_guard=False) == "correct"


def test_negation_guard_leaves_refusals_alone():
    # refusal detection is unchanged: a refusal phrase is a refusal, not a negated answer
    assert classify_oeqa("I don't know", ["Paris"]) == "refused"
    assert classify_oeqa("I'm not sure, but it is Paris", ["Paris"]) == "correct"
    assert classify_oeqa("I do not have an answer", ["Paris"]) == "refused"


# ------------------------------------------------------------------ squad

def official_squad_normalize(s):
    """normalize_answer of the SQuAD v1.1 evaluation script (the oracle for `squad_normalize`)."""
    import re as regex

    def remove_articles(text):
        return regex.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


@pytest.mark.parametrize("text, expected", [
    ("The Cat", "cat"),
    ("  A  cat in the hat! ", "cat in hat"),
    ("Denver Broncos.", "denver broncos"),
    ("U.S.A.", "usa"),
    ("O'Brien", "obrien"),                 # punctuation is deleted, not spaced
    ("Saint-Tropez", "sainttropez"),
    ("1,000", "1000"),
    ("3.14", "314"),
    ("-40", "40"),
    ("Vitamin A", "vitamin"),              # every article goes, wherever it is
    ("The The", ""),
    ("the.", ""),
    ("theatre", "theatre"),
    ("Thea and an", "thea and"),
    ("Caf\u00e9", "caf\u00e9"),
    ("\u201cHamlet\u201d", "\u201chamlet\u201d"),   # only ASCII punctuation is removed
    ("snake_case", "snakecase"),
    ("Super Bowl 50", "super bowl 50"),
    ("Paris\tFrance\n", "paris france"),
])
def test_squad_normalize_table(text, expected):
    assert squad_normalize(text) == expected
    assert official_squad_normalize(text) == expected


@given(st.text())
def test_squad_normalize_is_the_official_one(text):
    assert squad_normalize(text) == official_squad_normalize(text)


@pytest.mark.parametrize("answer, alias, expected", [
    ("The Denver Broncos", "Denver Broncos", True),
    ("Denver Broncos!", "denver broncos", True),
    ("USA", "U.S.A.", True),
    ("Paris, France", "Paris", False),     # equality, not containment
    ("not Paris", "Paris", False),
    ("Vitamin", "Vitamin A", True),        # SQuAD's own quirks, kept for comparability
    ("40", "-40", True),
])
def test_squad_matching(answer, alias, expected):
    assert matches(answer, [alias], "squad") is expected


def test_squad_skips_aliases_that_normalise_to_nothing():
    assert not matches("the", ["The The"], "squad")
    assert not matches("?!", ["..."], "squad")
