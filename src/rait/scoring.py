"""Answer scoring shared by probing and evaluation: normalise, match aliases, detect refusals,
extract multiple-choice letters, classify an answer as correct / wrong / refused (/ unparsed).

Everything here is a pure function of strings, so one scorer decides for every stage.
Where this deliberately differs from the reference scorer (raw lower-cased substrings, any
capital A-D anywhere), the docstrings of `is_refusal` and `extract_choice` say how.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Sequence

from rait.errors import RaitError

OEQA_OUTCOMES = ("correct", "wrong", "refused")
MCQA_OUTCOMES = ("correct", "wrong", "refused", "unparsed")
STRATEGIES = ("contains", "exact")

# Phrases are matched after `normalize` (so case, apostrophes and punctuation do not matter) on
# word boundaries. A phrase written "^...$" counts only when it is the whole answer: "unknown"
# alone is a refusal, "the unknown soldier" is not.
DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    "I don't know", "I do not know", "I dont know", "I don't know.", "I don't really know",
    "I really don't know", "I'm not sure", "I am not sure", "Im not sure", "I'm unsure",
    "I am unsure", "I'm not certain", "I am not certain", "I cannot answer", "I can't answer",
    "I cant answer", "I can not answer", "I am unable to answer", "I'm unable to answer",
    "I'm not able to answer", "I am not able to answer", "I have no idea", "I've no idea",
    "I do not have the answer", "I don't have the answer", "I don't have enough information",
    "I do not have enough information", "I cannot say", "I can't say", "I cannot be sure",
    "I can't be sure", "idk",
    "^unknown$", "^no idea$", "^not sure$", "^don't know$", "^dunno$", "^no answer$",
    "^not known$", "^unsure$",
)

# Words that split an answer into clauses: "I don't know for sure, but it's Paris".
_CONTRAST = frozenset({"but", "however", "nevertheless", "nonetheless"})
# Words that carry no answer: "Sorry, but I don't know" is still a refusal.
_FILLER = frozenset({"sorry", "unfortunately", "honestly", "well", "hmm", "um", "uh", "oh", "ok",
                     "okay", "i", "im", "m", "am", "afraid", "really", "so"})
_ARTICLES = frozenset({"a", "an", "the"})

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u02bc": "'", "\u2032": "'",
    "\u00b4": "'", "`": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-",
})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Scripts written without spaces between words: word boundaries cannot be seen, so an alias in
# one of them matches as a plain substring (Han, kana, Thai, Lao, Khmer, Myanmar).
_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                       "\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]")


def to_ascii_punctuation(text: str) -> str:
    """Curly quotes, primes and unicode dashes to their ASCII forms."""
    return text.translate(_QUOTES)


def normalize(text: str) -> str:
    """Canonical form of an answer for matching.

    Steps, in order:
    1. Unicode NFKC (full-width letters, ligatures and compatibility digits fold to plain ones),
       lower case, NFKC again (lower-casing can un-normalise a few characters);
    2. curly quotes and unicode dashes to ASCII; thousands separators dropped ("1,000" -> "1000");
    3. every character that is not a letter, digit or combining mark (of any script) becomes a
       space, so "Paris, France!" -> "paris france" and "don't" -> "don t";
    4. the English articles "a", "an", "the" are dropped as whole words - unless nothing else is
       left, so that "The The" (a band) or "A" (a letter) stay matchable;
    5. whitespace collapsed and stripped.
    Accents are kept ("café" != "cafe"): stripping them would merge distinct words in many
    languages. The function is idempotent.
    """
    tokens = _tokens(text)
    kept = [t for t in tokens if t not in _ARTICLES]
    return " ".join(kept or tokens)


_SIGNED = re.compile(r"(?:^|(?<=\s))-(?=\d)")


def _tokens(text: str) -> list[str]:
    """Steps 1-3 of `normalize`: the lower-cased words, articles still in."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
    text = _THOUSANDS.sub("", to_ascii_punctuation(text))
    # a minus sign in front of a number is part of it: "-40" must not match "40"
    signs = {m.end() - 1 for m in _SIGNED.finditer(text)}
    return "".join(c if i in signs or unicodedata.category(c)[0] in "LNM" else " "
                   for i, c in enumerate(text)).split()


def _contains_words(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` as whole words (both already normalised)."""
    if _UNSPACED.search(needle):
        return needle in haystack
    return f" {needle} " in f" {haystack} "


def matches(answer: str, aliases: Sequence[str], strategy: str = "contains") -> bool:
    """Does the answer name one of the gold aliases?

    `contains`: some normalised alias occurs in the normalised answer on word boundaries
    ("Paris, France" matches "Paris"; "Parisian" does not; "1914" is not in "19145").
    `exact`: the normalised answer equals a normalised alias.
    Aliases that normalise to nothing never match.
    """
    if strategy not in STRATEGIES:
        raise RaitError(f"unknown matching strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    norm_answer = normalize(answer)
    answer_with_articles = " ".join(_tokens(answer))
    for alias in aliases:
        norm_alias = normalize(alias)
        if not norm_alias:
            continue
        if all(t in _ARTICLES for t in norm_alias.split()):
            # an alias made only of articles ("The The") is compared with the articles kept
            if strategy == "contains" and _contains_words(answer_with_articles, norm_alias):
                return True
        if strategy == "exact" and norm_answer == norm_alias:
            return True
        if strategy == "contains" and _contains_words(norm_answer, norm_alias):
            return True
    return False


@functools.lru_cache(maxsize=32)
def _compile_phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(phrases matched anywhere, phrases matched only as the whole answer), normalised."""
    anywhere, whole = [], set()
    for phrase in phrases:
        if phrase.startswith("^") and phrase.endswith("$"):
            norm = normalize(phrase[1:-1])
            if norm:
                whole.add(norm)
        elif normalize(phrase):
            anywhere.append(normalize(phrase))
    return tuple(anywhere), frozenset(whole)


def _clauses(norm_text: str) -> list[list[str]]:
    """Split normalised text into token lists at contrast words ("but", "however", ...)."""
    clauses: list[list[str]] = [[]]
    for token in norm_text.split():
        if token in _CONTRAST:
            clauses.append([])
        else:
            clauses[-1].append(token)
    return clauses


def is_refusal(text: str, phrases: Sequence[str] | None = None) -> bool:
    """Does the answer decline to answer?

    Rule: the text is split into clauses at contrast words ("but", "however", "nevertheless",
    "nonetheless"). It is a refusal when some clause contains a refusal phrase (normalised, word
    boundaries) and no other clause carries an answer - i.e. every clause without a refusal
    phrase consists of filler words only ("sorry", "well", ...). So
    "I don't know." and "Sorry, but I'm not sure" are refusals, while a hedge next to an answer -
    "I don't know for sure, but it's Paris" or "Paris, but I'm not sure" - is an answer and is
    scored as correct or wrong (the reference scorer counts the first one as a refusal).
    Phrases written "^...$" must be the whole answer ("unknown").
    Known limit: a hedge and an answer in one clause ("Although I'm not sure, it is Paris") is a
    refusal.
    """
    anywhere, whole = _compile_phrases(tuple(DEFAULT_REFUSAL_PHRASES if phrases is None else phrases))
    norm = normalize(text)
    if not norm:
        return False
    if norm in whole:
        return True
    refusing = answering = False
    for clause in _clauses(norm):
        joined = " ".join(clause)
        if any(_contains_words(joined, phrase) for phrase in anywhere):
            refusing = True
        elif any(token not in _FILLER for token in clause):
            answering = True
    return refusing and not answering


def classify_oeqa(answer: str, aliases: Sequence[str], *, strategy: str = "contains",
                  refusal_phrases: Sequence[str] | None = None) -> str:
    """"correct", "wrong" or "refused" for an open-ended answer. Refusal is checked first; an
    empty answer is "wrong" (the model said nothing, which is not declining)."""
    if not answer.strip():
        return "wrong"
    if is_refusal(answer, refusal_phrases):
        return "refused"
    return "correct" if matches(answer, aliases, strategy) else "wrong"


# ---------------------------------------------------------------- multiple choice

_ANSWER_VERB = r"(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be)"


@functools.lru_cache(maxsize=32)
def _choice_patterns(labels: tuple[str, ...]) -> dict[str, re.Pattern]:
    """Regexes for the ways a label is asserted. Every captured label is a group named
    `l<n>`. `any_case` accepts any case; `own_case` only the label's own case (so the article
    "a" or the pronoun "I" in prose is not read as a letter)."""
    alt = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    counter = iter(range(1000))

    def group() -> str:
        return f"(?P<l{next(counter)}>{alt})"

    def any_case() -> str:
        return group()

    def own_case() -> str:
        return f"(?-i:{group()})(?![\\w'])"

    def token() -> str:  # "(B)", "[B]" in any case, or a bare label in its own case
        return rf"(?:\(\s*{group()}\s*\)|\[\s*{group()}\s*\]|{own_case()})"

    flags = re.IGNORECASE
    return {
        # "B", "b", "(B)", "B.", "B)", "[b]:"
        "alone": re.compile(rf"^\s*[\(\[]?\s*{any_case()}\s*[\)\]]?\s*[.:]?\s*$", flags),
        # "B: Paris", "(B) Paris", "b) Paris", "B - Paris"
        "lead": re.compile(rf"^\s*(?:\(\s*{any_case()}\s*\)|\[\s*{any_case()}\s*\]"
                           rf"|{any_case()}\s*[\).:\]]|{any_case()}\s+-)(?=\s|$)", flags),
        # "B\nbecause ...", "B is correct", "Option B", "Choice (B)"
        "lead_word": re.compile(rf"^\s*(?:(?-i:{group()})[ \t]*\n"
                                rf"|(?-i:{group()})\s+is\s+(?:the\s+)?(?:correct|right|answer|best)\b"
                                rf"|(?:option|choice|letter)\s+{token()})", flags),
        # "The answer is B", "Answer: (B)", "the correct option is B", "answer - B"
        "answer": re.compile(rf"(?:\banswers?\s*{_ANSWER_VERB}?|\b(?:option|choice)\s+{_ANSWER_VERB})"
                             rf"\s*[:=\-]?\s*(?:(?:option|choice|letter)\s+)?{token()}", flags),
        # "I think it is B", "It's (B)", "I'd say B", "I choose option B"
        "verb": re.compile(r"\b(?:it\s+is|it's|it\s+must\s+be|it\s+should\s+be|it\s+would\s+be|"
                           r"i\s+would\s+say|i'd\s+say|i(?:\s+would|'d|\s+will|'ll)?\s+(?:choose|pick|select)|"
                           r"i'll\s+go\s+with|i\s+will\s+go\s+with|go\s+with)\s+"
                           rf"(?:(?:option|choice|letter)\s+)?{token()}", flags),
        # "I think B." - only when the label ends the sentence ("I think A lot ..." is prose)
        "think": re.compile(rf"\bi\s+think\s+(?:(?:option|choice|letter)\s+)?{token()}"
                            r"(?=\s*(?:$|[.,;!?)]))", flags),
        # "\\boxed{B}"
        "boxed": re.compile(rf"\\boxed\{{\s*{any_case()}\s*\}}", flags),
        # what makes an assertion ambiguous: "B or C", "(A) and (B)", "B/C"
        "alternative": re.compile(rf"^\s*(?:or|and|/|,|&)\s*(?:\(\s*(?:{alt})\s*\)|(?-i:{alt})(?![\w']))",
                                  flags),
        # an answer phrase before option text: "The answer is Paris"
        "preamble": re.compile(r"^\s*(?:(?:the\s+)?(?:correct\s+)?answer\s*(?:is|:)|i\s+think\s+it\s+is|"
                               r"it\s+is|it's)\s*:?\s*", flags),
    }


def _found_label(match: re.Match) -> str | None:
    """The label captured by whichever `l<n>` group matched."""
    return next((value for name, value in match.groupdict().items()
                 if name.startswith("l") and value), None)


def _clean_markup(text: str) -> str:
    """Drop Markdown emphasis and code marks: "**B**" -> "B"."""
    return to_ascii_punctuation(re.sub(r"\*\*|__|`", "", text)).strip()


def extract_choice(text: str, labels: Sequence[str], choices: dict | None = None) -> str | None:
    """The option label an MCQA answer asserts, or None when it asserts none or several.

    Strict on purpose (the reference takes any capital A-D anywhere, so almost any prose parses
    to some letter). Accepted: a label alone in any case ("B", "b", "(B)", "B.", "**B**"), a label
    leading the answer with a delimiter ("B: Paris", "(B) Paris", "B) Paris"), a label on its own
    first line, "Option B", "B is correct", and a label after an answer phrase ("The answer is
    B", "Answer: B", "I think it is B", "I'd say (B)", "\\boxed{B}") - there in the label's own
    case, so "the answer is a fish" asserts nothing. With `choices`, an answer whose text equals
    exactly one option's text (after `normalize`, also after "The answer is" or a leading label)
    asserts that label. Two different labels asserted ("B: Paris. The answer is C", "B or C",
    "A: <text of option C>") give None.
    """
    labels = tuple(str(label) for label in labels)
    if not labels:
        raise RaitError("extract_choice needs at least one option label")
    patterns = _choice_patterns(labels)
    by_upper = {label.upper(): label for label in labels}
    text = _clean_markup(text)
    asserted: set[str] = set()
    rests = [text]

    def assert_label(found: str | None, end: int) -> bool:
        """Record a label; False when an alternative follows it ("B or C")."""
        if found is None:
            return True
        asserted.add(by_upper.get(found.upper(), found))
        return not patterns["alternative"].match(text[end:])

    whole = patterns["alone"].match(text)
    if whole:
        return by_upper.get(_found_label(whole).upper())
    for name in ("lead", "lead_word"):
        match = patterns[name].match(text)
        if match:
            if not assert_label(_found_label(match), match.end()):
                return None
            rests.append(text[match.end():])
    for name in ("answer", "verb", "think", "boxed"):
        for match in patterns[name].finditer(text):
            if not assert_label(_found_label(match), match.end()):
                return None
    preamble = patterns["preamble"].match(text)
    if preamble:
        rests.append(text[preamble.end():])
    if choices:
        asserted |= _labels_by_text(rests, choices)
    return asserted.pop() if len(asserted) == 1 else None


def _labels_by_text(candidates: Sequence[str], choices: dict) -> set[str]:
    """Labels whose option text equals one of the candidate strings (normalised)."""
    wanted = {normalize(c) for c in candidates} - {""}
    found = {str(label) for label, option in choices.items() if normalize(str(option)) in wanted}
    return found


def classify_mcqa(answer: str, choices: dict, target: str, *,
                  refusal_phrases: Sequence[str] | None = None) -> str:
    """"correct", "wrong", "refused" or "unparsed" for a multiple-choice answer. Refusal is
    checked first; an answer asserting no single option (including an empty one) is
    "unparsed" - evaluation decides whether that counts as wrong or refused."""
    if str(target) not in {str(label) for label in choices}:
        raise RaitError(f"target {target!r} is not one of the option labels {', '.join(map(str, choices))}")
    if is_refusal(answer, refusal_phrases):
        return "refused"
    label = extract_choice(answer, list(choices), choices)
    if label is None:
        return "unparsed"
    return "correct" if label == str(target) else "wrong"
