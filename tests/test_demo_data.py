"""The bundled demo sets: sizes, unique and disjoint questions, valid labels, balanced targets.

Read with plain json (not the loaders) so that a loader bug cannot hide a data bug.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

import pytest

from rait.data.schema import make_mcqa_item, make_oeqa_item
from rait.scoring import normalize
from rait.prompts import BUILTIN_MCQA_SHOTS, BUILTIN_OEQA_SHOTS

DEMO = resources.files("rait.data") / "demo"
LETTERS = ("A", "B", "C", "D")
SUBJECTS = {"geography", "biology", "chemistry", "physics", "history", "literature", "mathematics",
            "computer_science"}


def read(name: str) -> list[dict]:
    lines = (DEMO / name).read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), f"{name} has a blank line"
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def oeqa():
    return read("oeqa.jsonl")


@pytest.fixture(scope="module")
def oeqa_shots():
    return read("oeqa_shots.jsonl")


@pytest.fixture(scope="module")
def mcqa():
    return read("mcqa.jsonl")


@pytest.fixture(scope="module")
def mcqa_dev():
    return read("mcqa_dev.jsonl")


def norm(question: str) -> str:
    """Case- and spacing-insensitive form of a question, for duplicate checks."""
    return " ".join(question.lower().split())


def test_sizes(oeqa, oeqa_shots, mcqa, mcqa_dev):
    assert len(oeqa) >= 450
    assert len(oeqa_shots) == 8
    assert len(mcqa) >= 320
    assert len(mcqa_dev) == 5 * len(SUBJECTS)


def test_mcqa_subjects(mcqa, mcqa_dev):
    pool = Counter(row["subject"] for row in mcqa)
    dev = Counter(row["subject"] for row in mcqa_dev)
    assert set(pool) == SUBJECTS
    assert min(pool.values()) >= 40, pool
    assert dev == {subject: 5 for subject in SUBJECTS}


def test_ids_follow_the_documented_patterns(oeqa, oeqa_shots, mcqa, mcqa_dev):
    assert [row["id"] for row in oeqa] == [f"oeqa-{i:04d}" for i in range(1, len(oeqa) + 1)]
    assert [row["id"] for row in oeqa_shots] == [f"oeqa-shot-{i}" for i in range(1, 9)]
    assert [row["id"] for row in mcqa] == [f"mcqa-{i:04d}" for i in range(1, len(mcqa) + 1)]
    for row in mcqa_dev:
        assert re.fullmatch(rf"mcqa-dev-{row['subject']}-[1-5]", row["id"]), row["id"]
    all_ids = [row["id"] for rows in (oeqa, oeqa_shots, mcqa, mcqa_dev) for row in rows]
    assert len(all_ids) == len(set(all_ids))


def test_questions_unique_and_disjoint(oeqa, oeqa_shots, mcqa, mcqa_dev):
    sets = {name: [norm(row["question"]) for row in rows]
            for name, rows in (("oeqa", oeqa), ("shots", oeqa_shots), ("mcqa", mcqa), ("dev", mcqa_dev))}
    for name, questions in sets.items():
        repeated = [q for q, n in Counter(questions).items() if n > 1]
        assert not repeated, f"{name} repeats {repeated}"
    builtin = {norm(shot["question"]) for shot in BUILTIN_OEQA_SHOTS + BUILTIN_MCQA_SHOTS}
    everything = [q for questions in sets.values() for q in questions]
    assert len(everything) == len(set(everything)), "a question appears in two demo files"
    assert not builtin & set(everything), "a demo question duplicates a built-in shot"


def test_oeqa_answers(oeqa, oeqa_shots):
    for row in oeqa + oeqa_shots:
        answers = row["answers"]
        assert set(row) == {"id", "question", "answers"}
        assert isinstance(answers, list) and answers, row["id"]
        assert all(isinstance(a, str) and a == a.strip() and a for a in answers), row["id"]
        assert len({a for a in answers}) == len(answers), f"{row['id']} repeats an alias"
        assert 1 <= len(answers[0].split()) <= 4, f"{row['id']}: target {answers[0]!r} is not short"
        assert row["question"].endswith("?"), row["id"]
        assert all(normalize(a) for a in answers), f"{row['id']}: an alias the scorer reads as empty"


def test_mcqa_labels(mcqa, mcqa_dev):
    for row in mcqa + mcqa_dev:
        assert set(row) == {"id", "question", "choices", "target", "subject"}
        assert tuple(row["choices"]) == LETTERS, row["id"]
        assert row["target"] in LETTERS, row["id"]
        texts = [text.strip().lower() for text in row["choices"].values()]
        assert all(texts) and len(set(texts)) == 4, f"{row['id']} has empty or repeated options"
        # an answer given as option text is matched after `normalize` (which drops signs and
        # operators): two options that normalise alike would make such an answer ambiguous
        scored = [normalize(text) for text in row["choices"].values() if normalize(text)]
        assert len(set(scored)) == len(scored), f"{row['id']}: options the scorer cannot tell apart"


def test_target_letters_are_balanced(mcqa, mcqa_dev):
    counts = Counter(row["target"] for row in mcqa)
    for letter in LETTERS:
        assert 0.20 <= counts[letter] / len(mcqa) <= 0.30, counts
    assert set(Counter(row["target"] for row in mcqa_dev)) == set(LETTERS)


def test_schema_accepts_every_row(oeqa, oeqa_shots, mcqa, mcqa_dev):
    for line, row in enumerate(oeqa + oeqa_shots, 1):
        item = make_oeqa_item(row["question"], row["answers"], id=row["id"], line=line)
        assert (item["id"], item["question"], item["answers"]) == (row["id"], row["question"], row["answers"])
    for line, row in enumerate(mcqa + mcqa_dev, 1):
        item = make_mcqa_item(row["question"], row["choices"], row["target"], subject=row["subject"],
                              id=row["id"], line=line)
        assert {k: item[k] for k in row} == row


def test_readme_counts_match_the_files(oeqa, oeqa_shots, mcqa, mcqa_dev):
    readme = (DEMO / "README.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in readme
    for name, rows in (("oeqa.jsonl", oeqa), ("oeqa_shots.jsonl", oeqa_shots), ("mcqa.jsonl", mcqa),
                       ("mcqa_dev.jsonl", mcqa_dev)):
        assert re.search(rf"`{re.escape(name)}`\s*\|\s*{len(rows)}\b", readme), f"README count for {name}"
    for subject, n in Counter(row["subject"] for row in mcqa).items():
        assert re.search(rf"\|\s*{subject}\s*\|\s*{n}\s*\|", readme), f"README count for {subject}"
