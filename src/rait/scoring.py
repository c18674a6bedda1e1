"""Answer scoring shared by probing and evaluation: normalise, match aliases, detect refusals,
extract multiple-choice letters, classify an answer as correct / wrong / refused (/ unparsed).

Everything here is a pure function of strings, so one scorer decides for every stage
(`rait.certainty.answer_correctness` for the probe, `rait.stages.eval.classify_items` for the
evaluation, `score_answer` for a user's own answers).
Where this deliberately differs from the reference scorer (raw lower-cased substrings, any
capital A-D anywhere), the docstrings of `matches`, `is_refusal` and `extract_choice` say how.
The `squad` strategy is the exception on purpose: it is the standard SQuAD / TriviaQA exact
match, for numbers comparable with published ones.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import Sequence

from rait.errors import RaitError

# Bumped whenever a verdict can change for the same answer: fingerprints of tables and results
# include it, so output scored by an older scorer is never taken as done.
SCORING_VERSION = 2

OEQA_OUTCOMES = ("correct", "wrong", "refused")
MCQA_OUTCOMES = ("correct", "wrong", "refused", "unparsed")
STRATEGIES = ("contains", "exact", "squad")

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
# Letters separated by dots are one token: "u.s.a." = "u.s.a" = "u. s. a." -> "usa",
# "j.r.r. tolkien" -> "jrr tolkien". With spaces every letter must carry its dot, so "plan a. b is"
# stays three words; digits are not letters, so "3.14" stays a decimal.
_LETTER = r"[^\W\d_]"
_ACRONYM = re.compile(rf"(?<!\w){_LETTER}\.(?:\s*{_LETTER}\.)+(?!\w)|(?<!\w){_LETTER}(?:\.{_LETTER})+(?!\w)")
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
       letters separated by dots joined ("U.S.A." and "U. S. A." -> "usa"; "3.14" is untouched);
    3. every character that is not a letter, digit or combining mark (of any script) becomes a
       space, so "Paris, France!" -> "paris france" and "don't" -> "don t";
    4. leading articles ("a", "an", "the") are dropped - "The Beatles" -> "beatles" - unless
       nothing else is left, so that "The The" (a band) or "A" (a letter) stay matchable.
       Articles elsewhere are part of the name and kept: "Vitamin A", "Alexander the Great";
    5. whitespace collapsed and stripped.
    Accents are kept ("café" != "cafe"): stripping them would merge distinct words in many
    languages. The function is idempotent.
    """
    return " ".join(_without_leading_articles(_tokens(text)))


def _without_leading_articles(tokens: list[str]) -> list[str]:
    """Drop the articles a phrase starts with, unless it is made of articles only."""
    start = 0
    while start < len(tokens) and tokens[start] in _ARTICLES:
        start += 1
    return tokens[start:] if start < len(tokens) else tokens


def _without_articles(text: str) -> str:
    """Every article dropped unless nothing else is left: the form refusal phrases are matched
    in ("I do not have an answer" is "I do not have the answer")."""
    tokens = _tokens(text)
    kept = [t for t in tokens if t not in _ARTICLES]
    return " ".join(kept or tokens)


_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(text: str) -> str:
    """`normalize_answer` of the official SQuAD v1.1 evaluation script, re-implemented: lower
    case, delete ASCII punctuation, replace the whole words a / an / the by a space, collapse
    whitespace. So "U.S.A." -> "usa", "O'Brien" -> "obrien", "Vitamin A" -> "vitamin"."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


_SIGNED = re.compile(r"(?:^|(?<=\s))-(?=\d)")
# Punctuation that ends a clause; a "." does so only before a space or the end, and not after an
# initial or a common abbreviation ("Dr. Watson", "St. Petersburg" stay one clause).
_CLAUSE_MARKS = frozenset(",;:!?()[]{}")
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "mt", "jr", "sr", "prof", "gen", "col",
                            "capt", "lt", "sgt", "rev", "fr", "vs"})


def _tokens(text: str) -> list[str]:
    """Steps 1-3 of `normalize`: the lower-cased words, articles still in."""
    return [token for token, _ in _words_with_clauses(text)]


def _words_with_clauses(text: str) -> list[tuple[str, int]]:
    """Steps 1-3 of `normalize`, each word with the number of the clause it is in."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
    text = _THOUSANDS.sub("", to_ascii_punctuation(text))
    text = _ACRONYM.sub(lambda m: " " + re.sub(r"[.\s]", "", m.group()) + " ", text)
    # a minus sign in front of a number is part of it: "-40" must not match "40"
    signs = {m.end() - 1 for m in _SIGNED.finditer(text)}
    words: list[tuple[str, int]] = []
    current, clause = [], 0
    for i, char in enumerate(text):
        if i in signs or unicodedata.category(char)[0] in "LNM":
            current.append(char)
            continue
        if current:
            words.append(("".join(current), clause))
            current = []
        if _ends_clause(text, i, words):
            clause += 1
    if current:
        words.append(("".join(current), clause))
    return words


def _ends_clause(text: str, i: int, words: list[tuple[str, int]]) -> bool:
    """Does the character at `i` (not part of a word) close a clause?"""
    char = text[i]
    if char in _CLAUSE_MARKS:
        return True
    after_space = i + 1 == len(text) or text[i + 1].isspace()
    if char == "-":  # a dash between spaces: "not Lyon - Paris"
        return after_space and i > 0 and text[i - 1].isspace()
    if char == "." and after_space and words:
        previous = words[-1][0]
        return len(previous) > 1 and previous not in _ABBREVIATIONS
    return False


def _contains_words(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` as whole words (both already normalised)."""
    if _UNSPACED.search(needle):
        return needle in haystack
    return f" {needle} " in f" {haystack} "


# ---------------------------------------------------------------- negation

# A negator at most this many words before an alias, in its clause, negates it: "not Paris",
# "it isn't Paris", "I don't think it's Paris", "not the Eiffel Tower".
NEGATION_WINDOW = 3
_NEGATORS = frozenset({"not", "never", "neither", "nor", "cannot", "isnt", "arent", "wasnt",
                       "werent", "dont", "doesnt", "didnt", "cant", "couldnt", "wouldnt",
                       "shouldnt", "wont", "aint", "hasnt", "havent", "hadnt", "mustnt", "neednt"})
# What is left of a contraction after normalising ("it's" -> "it s"): not counted as a word.
_CLITICS = frozenset({"s", "d", "ll", "re", "ve", "m", "t"})


def _is_negator(words: list[tuple[str, int]], j: int) -> bool:
    """Is word `j` a negator? "n't" arrives as a "t" after a word ending in "n" ("isn t")."""
    token = words[j][0]
    if token == "t":
        return j > 0 and words[j - 1][0].endswith("n")
    return token in _NEGATORS


def _is_negated(words: list[tuple[str, int]], start: int) -> bool:
    """Is the phrase starting at word `start` negated by a negator shortly before it, in the same
    clause? A clause ends at , ; : ! ? ( ) a sentence's full stop, a spaced dash, or a contrast
    word ("Not Lyon but Paris": Paris stands)."""
    clause = words[start][1]
    between = 0
    for j in range(start - 1, -1, -1):
        token, where = words[j]
        if where != clause or token in _CONTRAST:
            return False
        if _is_negator(words, j):
            return True
        if token not in _CLITICS:
            between += 1
            if between > NEGATION_WINDOW:
                return False
    return False


# ---------------------------------------------------------------- matching aliases

@functools.lru_cache(maxsize=4096)
def _alias_needle(alias: str) -> tuple[str, ...]:
    """The words an alias must occur as in `contains` mode.

    Leading articles are dropped when at least two words remain ("The Eiffel Tower" -> "eiffel
    tower"). When only one would remain the article stays, because there it is part of the name:
    "The Who" must not be found in "Who knows", "The Sun" not in "Sun Yat-sen". (The answer "Who"
    alone still matches "The Who": `contains` also accepts `exact` equality.)
    """
    tokens = _tokens(alias)
    stripped = _without_leading_articles(tokens)
    return tuple(stripped if len(stripped) >= 2 else tokens)


def _occurrences(words: list[tuple[str, int]], needle: tuple[str, ...]) -> list[int]:
    """Start indices where the needle occurs as consecutive words."""
    size = len(needle)
    return [i for i in range(len(words) - size + 1)
            if all(words[i + k][0] == needle[k] for k in range(size))]


def _contains_alias(words: list[tuple[str, int]], alias: str, negation_guard: bool) -> bool:
    """`contains` mode for one alias: the alias occurs in the answer's words, and (with the guard)
    at least one occurrence is not negated."""
    needle = _alias_needle(alias)
    if not needle:
        return False
    if _UNSPACED.search(" ".join(needle)):
        return _contains_words(" ".join(token for token, _ in words), " ".join(needle))
    starts = _occurrences(words, needle)
    if not negation_guard:
        return bool(starts)
    return any(not _is_negated(words, start) for start in starts)


def matches(answer: str, aliases: Sequence[str], strategy: str = "contains", *,
            negation_guard: bool = True) -> bool:
    """Does the answer name one of the gold aliases?

    `contains` (default): the answer equals an alias after `normalize` (as in `exact`), or an
    alias occurs in the answer on word boundaries ("Paris, France" matches "Paris"; "Parisian"
    does not; "1914" is not in "19145"). Articles inside an alias are part of it ("Vitamin B"
    does not contain "Vitamin A"); see `_alias_needle` for leading ones. With `negation_guard`
    (the default) an occurrence right after a negator in its clause does not count: "not Mark
    Twain", "it isn't Paris" and "definitely not Paris" are not answers, "Paris, not Lyon" is
    (for Paris). Known limits: a negation after the alias ("Paris is wrong") is not seen, and
    "It wasn't until 1914" reads as negated. Aliases in unspaced scripts match as substrings,
    without the guard.
    `exact`: the normalised answer equals a normalised alias.
    `squad`: the standard SQuAD v1.1 / TriviaQA exact match - `squad_normalize` of the answer
    equals that of an alias. Scores in this mode are comparable with published TriviaQA EM
    (the official TriviaQA script replaces punctuation by a space where SQuAD's deletes it, which
    only matters for punctuation inside a word, "O'Brien" vs "O Brien"); note that it drops
    every article ("Vitamin" matches "Vitamin A") and sign ("40" matches "-40").
    Aliases that normalise to nothing never match, in every mode.
    """
    if strategy not in STRATEGIES:
        raise RaitError(f"unknown matching strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "squad":
        norm_answer = squad_normalize(answer)
        return any(norm_answer == norm for norm in map(squad_normalize, aliases) if norm)
    norm_answer = normalize(answer)
    if any(norm_answer == norm for norm in map(normalize, aliases) if norm):
        return True
    if strategy == "exact":
        return False
    words = _words_with_clauses(answer)
    return any(_contains_alias(words, alias, negation_guard) for alias in aliases)


@functools.lru_cache(maxsize=32)
def _compile_phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(phrases matched anywhere, phrases matched only as the whole answer), normalised."""
    anywhere, whole = [], set()
    for phrase in phrases:
        if phrase.startswith("^") and phrase.endswith("$"):
            norm = _without_articles(phrase[1:-1])
            if norm:
                whole.add(norm)
        elif _without_articles(phrase):
            anywhere.append(_without_articles(phrase))
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
    "nonetheless"). It is a refusal when some clause contains a refusal phrase (normalised with
    every article dropped, word boundaries) and no other clause carries an answer - i.e. every
    clause without a refusal phrase consists of filler words only ("sorry", "well", ...). So
    "I don't know." and "Sorry, but I'm not sure" are refusals, while a hedge next to an answer -
    "I don't know for sure, but it's Paris" or "Paris, but I'm not sure" - is an answer and is
    scored as correct or wrong (the reference scorer counts the first one as a refusal).
    Phrases written "^...$" must be the whole answer ("unknown").
    Known limit: a hedge and an answer in one clause ("Although I'm not sure, it is Paris") is a
    refusal.
    """
    anywhere, whole = _compile_phrases(tuple(DEFAULT_REFUSAL_PHRASES if phrases is None else phrases))
    norm = _without_articles(text)
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
                  refusal_phrases: Sequence[str] | None = None, negation_guard: bool = True) -> str:
    """"correct", "wrong" or "refused" for an open-ended answer. Refusal is checked first; an
    empty answer is "wrong" (the model said nothing, which is not declining). See `matches` for
    `strategy` and `negation_guard`."""
    if not answer.strip():
        return "wrong"
    if is_refusal(answer, refusal_phrases):
        return "refused"
    return "correct" if matches(answer, aliases, strategy, negation_guard=negation_guard) else "wrong"


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


# ---------------------------------------------------------------- one answer

def score_answer(answer: str, gold, task: str = "oeqa", *, match: str = "contains",
                 refusal_phrases: Sequence[str] | None = None, choices: dict | None = None,
                 negation_guard: bool = True) -> str:
    """"correct", "wrong" or "refused" for one answer, decided exactly as the probe and the
    evaluation decide (through `classify_oeqa` / `classify_mcqa`).

    OEQA: `gold` is one alias or a list of aliases; `match` is one of `STRATEGIES`.
    MCQA: `gold` is the target label and `choices` the {label: option text} options; an answer
    that asserts no single option is "wrong" (`classify_mcqa` calls it "unparsed").
    """
    if not isinstance(answer, str):
        raise RaitError(f"the answer must be a string, got {type(answer).__name__}")
    if match not in STRATEGIES:
        raise RaitError(f"unknown matching strategy {match!r}; choose one of {', '.join(STRATEGIES)}")
    phrases = _checked_phrases(refusal_phrases)
    if task == "oeqa":
        if choices is not None:
            raise RaitError("choices are only for task 'mcqa'")
        return classify_oeqa(answer, _checked_aliases(gold), strategy=match, refusal_phrases=phrases,
                             negation_guard=negation_guard)
    if task == "mcqa":
        outcome = classify_mcqa(answer, _checked_choices(choices), _checked_label(gold),
                                refusal_phrases=phrases)
        return "wrong" if outcome == "unparsed" else outcome
    raise RaitError(f"unknown task {task!r}; choose one of oeqa, mcqa")


def _checked_aliases(gold) -> list[str]:
    """OEQA gold: one string or a non-empty list of strings."""
    aliases = [gold] if isinstance(gold, str) else gold
    if not isinstance(aliases, (list, tuple)) or not aliases:
        raise RaitError("OEQA gold must be an alias or a non-empty list of aliases")
    if not all(isinstance(alias, str) for alias in aliases):
        raise RaitError("every OEQA gold alias must be a string")
    return list(aliases)


def _checked_choices(choices) -> dict:
    """MCQA options: a non-empty {label: text} dict of strings."""
    if not isinstance(choices, dict) or not choices:
        raise RaitError("task 'mcqa' needs choices, a non-empty {label: option text} dict")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in choices.items()):
        raise RaitError("MCQA choices must map string labels to string option texts")
    return choices


def _checked_label(gold) -> str:
    if not isinstance(gold, str):
        raise RaitError(f"MCQA gold must be the target label, a string, got {type(gold).__name__}")
    return gold


def _checked_phrases(phrases) -> Sequence[str] | None:
    """None (the defaults) or a list of strings - a lone string would be read letter by letter."""
    if phrases is None:
        return None
    if isinstance(phrases, str) or not isinstance(phrases, (list, tuple)) \
            or not all(isinstance(p, str) for p in phrases):
        raise RaitError("refusal_phrases must be a list of strings")
    return tuple(phrases)
