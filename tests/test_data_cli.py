"""`rait data`: summary text and JSON, data flags, exit codes, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rait.cli import main


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def oeqa_file(tmp_path) -> Path:
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "answers": [f"A{i}", f"a{i}", "z"][: 1 + i % 3]}
            for i in range(20)]
    return write_jsonl(tmp_path / "qa.jsonl", rows)


@pytest.fixture
def mcqa_file(tmp_path) -> Path:
    rows = [{"id": f"m{i}", "question": f"Pick {i}?", "choices": dict(zip("ABCD", "wxyz"[: 3 + i % 2])),
             "target": "A" if i % 2 else "C", "subject": "law" if i < 4 else "math"} for i in range(10)]
    return write_jsonl(tmp_path / "mc.jsonl", rows)


def test_oeqa_summary(oeqa_file, capsys):
    assert main(["data", str(oeqa_file)]) == 0
    captured = capsys.readouterr()
    assert f"reading {oeqa_file} as generic" in captured.err
    out = captured.out
    assert "task         oeqa" in out and "items        20" in out
    assert "fields       answer_source, answers, id, question, task" in out
    # answers per item cycle 1, 2, 3: min 1, mean 1.95 (7x1 + 7x2 + 6x3 over 20), max 3
    assert "answers/item min 1, mean 1.95, median 2.0, max 3" in out
    assert "[q0] Question 0? -> A0" in out and "[q2] Question 2? -> A2 (+2 aliases)" in out
    assert "[q3]" not in out  # 3 examples by default


def test_mcqa_json_summary(mcqa_file, capsys):
    assert main(["data", str(mcqa_file), "--json", "--examples", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "mcqa" and summary["items"] == 10
    assert summary["subjects"] == {"math": 6, "law": 4}
    assert summary["option_counts"] == {"3": 5, "4": 5}
    assert summary["targets"] == {"A": 5, "C": 5}
    assert [e["id"] for e in summary["examples"]] == ["m0"]


def test_mcqa_text_lists_subjects_and_options(mcqa_file, capsys):
    assert main(["data", str(mcqa_file)]) == 0
    out = capsys.readouterr().out
    assert "options      3 choices: 5, 4 choices: 5" in out
    assert "subjects     2" in out and "  math 6, law 4" in out


def test_carving_flags(oeqa_file, capsys):
    assert main(["data", str(oeqa_file), "--part", "test", "--test-size", "0.25", "--split-seed", "3",
                 "--json"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert main(["data", str(oeqa_file), "--part", "pool", "--test-size", "5", "--split-seed", "3",
                 "--limit", "4", "--json"]) == 0
    pool = json.loads(capsys.readouterr().out)
    assert test["items"] == 5 and pool["items"] == 4
    assert test["notes"][-1] == "carved the test part: 5 of 20 items (test set 5, split_seed 3)"
    assert not {e["id"] for e in test["examples"]} & {e["id"] for e in pool["examples"]}


def test_lenient_reports_skipped_rows(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a?", "answers": ["b"]}, "{oops",
                                                {"question": "c?", "answers": []}])
    assert main(["data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rait data: error:" in err and "bad.jsonl, line 2: not valid JSON" in err
    assert main(["data", str(path), "--lenient"]) == 0
    out = capsys.readouterr().out
    assert "items        1  (2 rows skipped)" in out
    assert f"  {path}, line 3: field 'answers': is empty" in out


@pytest.mark.parametrize("argv, message", [
    (["missing.jsonl"], "no such file or folder"),
    (["{qa}", "--format", "csvv"], "unknown format 'csvv'"),
    (["{qa}", "--part", "test", "--test-size", "50"], "larger than the dataset"),
])
def test_bad_input_exits_non_zero(oeqa_file, capsys, argv, message):
    argv = [a.replace("{qa}", str(oeqa_file)) for a in argv]
    assert main(["data", *argv]) == 2
    assert message in capsys.readouterr().err


def test_shared_mmlu_summary(shared_data, capsys):
    assert main(["data", str(shared_data / "mmlu"), "--split", "val", "--json", "--examples", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 1531 and len(summary["subjects"]) == 57
    assert summary["subjects"]["professional_law"] == 170
    assert summary["examples"] == []


def test_rait_data_does_not_import_torch(oeqa_file):
    code = ("import sys; from rait.cli import main; main(['data', sys.argv[1]]); "
            "bad = [m for m in ('torch', 'transformers', 'datasets', 'sentence_transformers') if m in sys.modules]; "
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code, str(oeqa_file)], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out
