"""`rait.score_answer`: the one public verdict, the four false results of audit finding 2, and
the properties that tie the match modes together."""

import string
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rait
from rait.certainty import answer_correctness
from rait.errors import RaitError
from rait.scoring import STRATEGIES, classify_oeqa, is_refusal, normalize, squad_normalize
from rait.stages.eval import classify_items

CHOICES = {"A": "Boyle's law", "B": "Paris", "C": "Dalton's law", "D": "Rome"}


# ------------------------------------------------------------------ the four false results

@pytest.mark.parametrize("answer, gold, before, after", [
    ("Vitamin B", "Vitamin A", "correct", "wrong"),     # the article rule dropped the letter "a"
    ("Who knows", "The Who", "correct", "wrong"),       # "The Who" was read as "who"
    ("USA", "U.S.A.", "wrong", "correct"),              # "U.S.A." was read as "u s a"
    ("not Mark Twain", "Mark Twain", "correct", "wrong"),
])
def test_audit_false_results_are_fixed(answer, gold, before, after):
    assert before != after
    assert rait.score_answer(answer, gold) == after
    assert rait.score_answer(answer, [gold], match="contains") == after


def test_other_negations_of_the_brief():
    assert rait.score_answer("it isn't Paris", "Paris") == "wrong"
    assert rait.score_answer("definitely not Paris", "Paris") == "wrong"
    assert rait.score_answer("It is Paris, not Lyon", ["Paris"]) == "correct"
    assert rait.score_answer("not Paris", "Paris", negation_guard=False) == "correct"


# ------------------------------------------------------------------ the function

def test_oeqa_verdicts():
    gold = ["Paris", "City of Light"]
    assert rait.score_answer("Paris, France", gold) == "correct"
    assert rait.score_answer("Paris, France", gold, match="exact") == "wrong"
    assert rait.score_answer("The city of light!", gold, match="squad") == "correct"
    assert rait.score_answer("Lyon", gold) == "wrong"
    assert rait.score_answer("", gold) == "wrong"
    assert rait.score_answer("I don\u2019t know.", gold) == "refused"
    assert rait.score_answer("pass", gold, refusal_phrases=["pass"]) == "refused"
    assert rait.score_answer("I don't know", gold, refusal_phrases=["pass"]) == "wrong"


@pytest.mark.parametrize("answer, expected", [
    ("B", "correct"), ("The answer is (B).", "correct"), ("Paris", "correct"),
    ("C", "wrong"), ("Rome", "wrong"),
    ("I don't know.", "refused"),
    ("According to Dalton", "wrong"), ("B or C", "wrong"), ("", "wrong"),   # unparsed is wrong
])
def test_mcqa_verdicts(answer, expected):
    assert rait.score_answer(answer, "B", "mcqa", choices=CHOICES) == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(answer="Paris", gold="Paris", task="qa"), "unknown task 'qa'"),
    (dict(answer="Paris", gold="Paris", match="fuzzy"), "unknown matching strategy 'fuzzy'"),
    (dict(answer=None, gold="Paris"), "answer must be a string"),
    (dict(answer="Paris", gold=[]), "non-empty list of aliases"),
    (dict(answer="Paris", gold=None), "non-empty list of aliases"),
    (dict(answer="Paris", gold=["Paris", 3]), "must be a string"),
    (dict(answer="Paris", gold="Paris", choices=CHOICES), "only for task 'mcqa'"),
    (dict(answer="Paris", gold="Paris", refusal_phrases="idk"), "list of strings"),
    (dict(answer="Paris", gold="Paris", refusal_phrases=["idk", None]), "list of strings"),
    (dict(answer="B", gold="B", task="mcqa"), "needs choices"),
    (dict(answer="B", gold="B", task="mcqa", choices={}), "needs choices"),
    (dict(answer="B", gold="B", task="mcqa", choices={"A": 1}), "string option texts"),
    (dict(answer="B", gold="E", task="mcqa", choices=CHOICES), "target 'E'"),
    (dict(answer="B", gold=["B"], task="mcqa", choices=CHOICES), "target label"),
])
def test_bad_input_is_one_rait_error(kwargs, message):
    with pytest.raises(RaitError, match=message):
        rait.score_answer(**kwargs)


def test_import_rait_stays_light():
    code = ("import sys, rait; assert 'rait.scoring' not in sys.modules; "
            "rait.score_answer('Paris', 'Paris'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "score_answer" in rait.__all__
    with pytest.raises(AttributeError):
        rait.no_such_name


# ------------------------------------------------------------------ one scorer for every stage

answers_st = st.text(alphabet=string.ascii_letters + " .,'!-", max_size=30)
gold_st = st.lists(st.text(alphabet=string.ascii_letters + " .'", min_size=1, max_size=15),
                   min_size=1, max_size=3)


@settings(max_examples=150)
@given(answers_st, gold_st, st.sampled_from(STRATEGIES))
def test_probe_eval_and_score_answer_agree(answer, aliases, strategy):
    verdict = rait.score_answer(answer, aliases, match=strategy)
    assert verdict == classify_oeqa(answer, aliases, strategy=strategy)
    assert answer_correctness([answer], aliases, strategy) == (verdict == "correct")
    cfg = SimpleNamespace(match=strategy, refusal_phrases=None, negation_guard=True)
    item = {"id": "q", "task": "oeqa", "answers": aliases}
    assert classify_items([item], ["prompt"], [answer], cfg)[0]["outcome"] == verdict


# ------------------------------------------------------------------ properties of the modes

@settings(max_examples=300)
@given(st.text(min_size=1))
def test_answer_equal_to_an_alias_is_correct_in_every_mode(alias):
    assume(normalize(alias) and squad_normalize(alias) and not is_refusal(alias))
    for strategy in STRATEGIES:
        assert rait.score_answer(alias, ["something else", alias], match=strategy) == "correct", strategy


# single letters are left out: "B. B." is read as the initials "BB" by contains and as two words
# by squad (pinned in test_where_squad_and_contains_deliberately_differ)
plain_word = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=7).filter(
    lambda w: w.lower() not in {"a", "an", "the", "not", "never", "nor", "neither", "t"}
    and not (len(w) == 1 and w.isalpha()))
plain_alias = st.lists(plain_word, min_size=1, max_size=4).filter(
    lambda words: not is_refusal(" ".join(words))).map(" ".join)
separator = st.sampled_from([" ", "  ", "\t", " (", ") ", "! ", ", ", ". ", " - "])
edge = st.sampled_from(["", " ", "\"", "(", ")", "!", "?", ".", "**", "...", "'"])


@st.composite
def squad_variant(draw):
    """An alias and an answer written from the same words, differently decorated."""
    alias = draw(plain_alias)
    article = draw(st.sampled_from(["", "the ", "The ", "a ", "An "]))
    case = draw(st.sampled_from([str.lower, str.upper, str.title, lambda s: s]))
    words = alias.split()
    body = words[0] + "".join(draw(separator) + word for word in words[1:])
    return alias, draw(edge) + article + case(body) + draw(edge)


@settings(max_examples=300)
@given(squad_variant())
def test_squad_correct_implies_contains_correct(pair):
    alias, answer = pair
    if rait.score_answer(answer, alias, match="squad") == "correct":
        assert rait.score_answer(answer, alias, match="contains") == "correct"


def test_where_squad_and_contains_deliberately_differ():
    # SQuAD drops every article and deletes punctuation inside words; contains does neither
    for answer, alias in [("Vitamin", "Vitamin A"), ("40", "-40"), ("314", "3.14"), ("OBrien", "O'Brien"),
                          ("B. B. King", "B B King")]:  # contains reads dotted initials as one acronym
        assert rait.score_answer(answer, alias, match="squad") == "correct"
        assert rait.score_answer(answer, alias, match="contains") == "wrong"


negation = st.sampled_from(["not ", "Not ", "definitely not ", "It is not ", "it isn't ", "It isn\u2019t ",
                            "never ", "I don't think it's ", "certainly not the ", "NOT "])


@settings(max_examples=300)
@given(plain_alias, negation, st.sampled_from(["", ".", "!", " ?"]))
def test_negated_alias_is_never_correct_in_contains_mode(alias, negator, end):
    assert rait.score_answer(alias, alias) == "correct"
    assert rait.score_answer(negator + alias + end, alias) != "correct"
    assert rait.score_answer(negator + alias + end, alias, negation_guard=False) == "correct"
