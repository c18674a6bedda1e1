import json
import random
from pathlib import Path

import pytest

from rait.errors import RaitError
from rait.knowledge import rehearse as rh
from rait.knowledge.rehearse import RehearseConfig, select_rehearsal


def oeqa(i, correctness, certainty, samples):
    return {"id": f"o{i}", "task": "oeqa", "question": f"Who is number {i}?", "answers": ["Mark Twain", "Twain"],
            "correctness": correctness, "certainty": certainty, "samples": samples}


def mcqa(i, correctness):
    return {"id": f"m{i}", "task": "mcqa", "question": f"Pick {i}", "subject": "astronomy",
            "choices": {"A": "a", "B": "b", "C": "c", "D": "d"}, "target": "C", "correctness": correctness,
            "certainty": 0.9, "probs": {}, "entropy": 0.1}


def test_oeqa_selection_thresholds_and_majority_target():
    table = [oeqa(0, 1.0, 1.0, ["twain", "Mark Twain", "mark twain", "Hemingway"]),
             oeqa(1, 1.0, 0.99, ["Mark Twain"] * 4),  # certainty below 0.995
             oeqa(2, 0.99, 1.0, ["Mark Twain"] * 4),  # correctness below 0.995
             oeqa(3, 1.0, 0.996, ["Mark Twain"] * 4)]
    rows = select_rehearsal(table, RehearseConfig())
    assert {r["id"] for r in rows} == {"o0", "o3"}
    first = next(r for r in rows if r["id"] == "o0")
    assert first["completion"] == " Mark Twain"  # the most frequent correct answer, first spelling
    assert first["prompt"] == "Answer the following question: Who is number 0?\nAnswer:"
    assert "know" not in first["prompt"]


def test_oeqa_items_without_a_correct_sample_are_skipped():
    table = [oeqa(0, 0.0, 0.0, ["Hemingway"] * 3), oeqa(1, 0.5, 0.5, ["Hemingway", "Twain"])]
    rows = select_rehearsal(table, RehearseConfig(oeqa_min_correctness=0, oeqa_min_certainty=0))
    assert [(r["id"], r["completion"]) for r in rows] == [("o1", " Twain")]


def test_mcqa_selection_gold_letter_and_size_cap_is_seeded():
    table = [mcqa(i, 0.995 if i < 30 else 0.5) for i in range(40)]
    rows = select_rehearsal(table, RehearseConfig(size=10))
    assert len(rows) == 10 and all(int(r["id"][1:]) < 30 and r["completion"] == " C" for r in rows)
    assert "astronomy" in rows[0]["prompt"] and "I don't know" not in rows[0]["prompt"]
    shuffled = list(table)
    random.Random(5).shuffle(shuffled)
    assert select_rehearsal(shuffled, RehearseConfig(size=10)) == rows  # row order does not matter
    assert select_rehearsal(table, RehearseConfig(size=10, seed=1)) != rows
    assert len(select_rehearsal(table, RehearseConfig(size=1000))) == 30  # all that qualify


def test_chat_template_rows():
    rows = select_rehearsal([mcqa(0, 1.0)], RehearseConfig(template="chat"))
    assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["completion"] == [{"role": "assistant", "content": "C"}]


def test_nothing_qualifies_explains_thresholds():
    table = [oeqa(0, 0.6, 0.7, ["Mark Twain"]), mcqa(1, 0.8)]
    with pytest.raises(RaitError, match=r"--oeqa-min-correctness.*--mcqa-min-prob") as err:
        select_rehearsal(table, RehearseConfig())
    assert "correctness 0.800" in str(err.value)


def test_dataset_must_match_table(tmp_path):
    table = [mcqa(i, 0.5) for i in range(3)]
    rh.check_items_match(table, table, tmp_path / "k.jsonl")
    with pytest.raises(RaitError, match=r"k\.jsonl: the dataset does not match.*'m2' is in the table"):
        rh.check_items_match(table[:2], table, tmp_path / "k.jsonl")
    with pytest.raises(RaitError, match=r"'m9' is in the dataset but not in the table"):
        rh.check_items_match(table + [mcqa(9, 0.1)], table, tmp_path / "k.jsonl")


def test_table_without_probe_meta_is_refused(tmp_path):
    k = tmp_path / "k.jsonl"
    k.write_text(json.dumps(mcqa(0, 0.5)) + "\n")
    with pytest.raises(RaitError, match=r"no k\.jsonl\.meta\.json.*rait probe"):
        rh.rehearse([mcqa(0, 0.5)], k, tmp_path / "out", RehearseConfig(), None)


def test_steps_remove_stale_outputs_only_when_inputs_changed(tmp_path):
    out = tmp_path / "x.jsonl"
    steps = rh.Steps(tmp_path)
    out.write_text("partial\n")
    steps.start("probe", "aaa", out)
    assert out.exists()  # first start: an interrupted run with unknown inputs may resume
    steps.start("probe", "aaa", out)
    assert out.exists() and not steps.done("probe", "aaa", out)
    steps.finish("probe", "aaa")
    assert rh.Steps(tmp_path).done("probe", "aaa", out)
    assert not rh.Steps(tmp_path).done("probe", "bbb", out)
    rh.Steps(tmp_path).start("probe", "bbb", out)
    assert not out.exists()
