"""Bad input for `rait eval` and `rait conflict`: a baseline result, a RAIT set and numeric options
that are wrong in any way end in one RaitError before a model loads or a file is written."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rait import backends, config
from rait.backends import hf
from rait.cli import main
from rait.errors import RaitError
from rait.stages.conflict import ConflictConfig, read_rait_set
from rait.stages import eval as evaluation
from rait.stages.eval import EvalConfig, evaluate

MCQA = [{"id": f"m{i}", "task": "mcqa", "question": f"Test question number {i}?",
         "choices": {"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"}, "target": "ABCD"[i % 4],
         "subject": "high_school_biology" if i <= 5 else "philosophy"} for i in range(1, 11)]
FAKE = (None, None, {"path": "fake-model", "model": "fake-model", "train_info": None})
# baseline: 5 correct, 4 wrong, 1 unparsed; the evaluated model: its own mix
BASELINE_SAYS = {it["question"]: (it["target"] if i < 5 else ("B" if it["target"] != "B" else "C") if i < 9
                                  else "Hmm") for i, it in enumerate(MCQA)}
MODEL_SAYS = {it["question"]: (it["target"] if i % 2 else "I don't know.") for i, it in enumerate(MCQA)}


@contextmanager
def scripted(plan: dict[str, str]):
    """Canned greedy answers; yields the list of calls made (none: the model was never asked)."""
    calls: list[int] = []

    def fake_greedy(model, tok, prompts, *, max_new_tokens, batch_size=8, stop_at_newline=True, progress=None):
        calls.append(len(prompts))
        return [" " + next(plan[q] for q in plan if q in prompt) for prompt in prompts]

    with mock.patch.object(hf, "greedy", fake_greedy):
        yield calls


@pytest.fixture(scope="module")
def baseline_files(tmp_path_factory) -> tuple[dict, list[dict]]:
    """A real baseline result and its item rows, to be damaged by the tests."""
    folder = tmp_path_factory.mktemp("baseline")
    with scripted(BASELINE_SAYS):
        result = evaluate(MCQA, folder / "base.json", EvalConfig(name="init", bootstrap=0), loaded=FAKE)
    rows = [json.loads(line) for line in (folder / "base.items.jsonl").read_text().splitlines()]
    return result, rows


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("out"))


def write_baseline(folder: Path, result, rows) -> Path:
    path = folder / "base.json"
    path.write_text(json.dumps(result))  # json.dumps writes NaN / Infinity literals as they come
    if rows is not None:
        (folder / "base.items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def evaluate_against(folder: Path, baseline: Path, **cfg):
    """(result or RaitError, model calls) of an evaluation against `baseline`, with a loader that
    must never be reached when the baseline is bad."""
    with scripted(MODEL_SAYS) as calls:
        try:
            return evaluate(MCQA, folder / "out.json", EvalConfig(baseline=str(baseline), **cfg),
                            loaded=FAKE), calls
        except RaitError as exc:
            return exc, calls


# ---- the drift bug: a bad baseline failed only after the whole evaluation ran ----------------

@pytest.mark.parametrize("damage, message", [
    (lambda r: r.update(Pw="0.5"), "field 'Pw': must be a number in [0, 1], got '0.5'"),
    (lambda r: r.update(Pc=[0.5]), "field 'Pc': must be a number"),
    (lambda r: r.update(Pw=1.5), "field 'Pw': must be a fraction in [0, 1], got 1.5"),
    (lambda r: r.update(Pc=-0.1), "field 'Pc'"),
    (lambda r: r.update(Pw=float("nan")), "NaN is not a number JSON allows"),
    (lambda r: r.update(Pc=float("inf")), "Infinity is not a number JSON allows"),
    (lambda r: r.pop("Pc"), "field 'Pc': missing; an eval result"),
    (lambda r: r.update(items_file=7), "field 'items_file'"),
    (lambda r: r.update(dataset_info="toy"), "field 'dataset_info': must be an object"),
    (lambda r: r["by_subject"]["philosophy"].update(Pw="high"), "field 'by_subject.philosophy.Pw'"),
    (lambda r: r.update(by_group=[1, 2]), "field 'by_group'"),
    (lambda r: r.update(macro="x"), "field 'macro'"),
])
def test_a_bad_baseline_result_fails_before_any_model_runs(tmp_path, baseline_files, damage, message):
    result, rows = copy.deepcopy(baseline_files)
    damage(result)
    baseline = write_baseline(tmp_path, result, rows)
    with mock.patch.object(backends, "load_for", side_effect=AssertionError("a model was loaded")):
        error, calls = evaluate_against(tmp_path, baseline)
    assert isinstance(error, RaitError) and message in str(error), error
    assert str(error).startswith(str(baseline)) and calls == [] and written(tmp_path) == []


@pytest.mark.parametrize("damage, message", [
    (lambda rows: rows[3].update(outcome="maybe"), "line 4, field 'outcome'"),
    (lambda rows: rows[2].pop("id"), "line 3, field 'id'"),
    (lambda rows: rows[5].update(id=rows[4]["id"]), "line 6, field 'id': duplicate"),
    (lambda rows: rows.pop(), "different test set"),
])
def test_a_bad_baseline_items_file_fails_before_any_model_runs(tmp_path, baseline_files, damage, message):
    result, rows = copy.deepcopy(baseline_files)
    damage(rows)
    error, calls = evaluate_against(tmp_path, write_baseline(tmp_path, result, rows))
    assert isinstance(error, RaitError) and message in str(error), error
    assert calls == [] and written(tmp_path) == []


def test_unpaired_baseline_counts_must_fit_the_test_set(tmp_path, baseline_files):
    result, _ = copy.deepcopy(baseline_files)
    for damage, message in ((dict(wrong="4"), "field 'wrong': must be a whole number"),
                            (dict(correct=50), "add up to 55 but this test set has 10"),
                            (dict(wrong=0, unparsed=0, refused=5), "the counts contradict Pw")):
        error, calls = evaluate_against(tmp_path, write_baseline(tmp_path, {**result, **damage}, None))
        assert isinstance(error, RaitError) and message in str(error), error
        assert calls == [] and written(tmp_path) == []


def test_a_baseline_whose_items_say_no_wrong_answer_fails_up_front(tmp_path, baseline_files):
    """Pw = 0.5 in the result, but its items (unparsed counted as refused) hold no wrong answer."""
    result, rows = copy.deepcopy(baseline_files)
    rows = [{**row, "outcome": "unparsed" if row["outcome"] == "wrong" else row["outcome"]} for row in rows]
    error, calls = evaluate_against(tmp_path, write_baseline(tmp_path, result, rows), unparsed_as="refused")
    assert isinstance(error, RaitError) and "never answered wrongly" in str(error)
    assert calls == [] and written(tmp_path) == []


# ---- generated baselines -------------------------------------------------------------------

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.floats(allow_nan=True),
                      st.floats(0, 1), st.floats(0, 1e-300), st.text(max_size=5),
                      st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from(["Pc", "Pw", "n"]),
                                                                               st.floats(0, 1), max_size=3))
BASELINE_KEYS = ["Pc", "Pw", "n", "correct", "wrong", "refused", "unparsed", "items_file", "dataset_info",
                 "by_subject", "by_group", "macro"]
ROW_DAMAGE = st.sampled_from(["keep", "drop file", "bad outcome", "drop row", "number id"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(BASELINE_KEYS), st.one_of(st.just("<delete>"), ANY_VALUE),
                               max_size=4),
       subject_pw=st.one_of(st.none(), ANY_VALUE), row_damage=ROW_DAMAGE,
       unparsed_as=st.sampled_from(["wrong", "refused"]), bootstrap=st.sampled_from([0, 30]))
def test_generated_baselines_are_accepted_with_finite_ths_or_refused_up_front(
        baseline_files, changes, subject_pw, row_damage, unparsed_as, bootstrap):
    result, rows = copy.deepcopy(baseline_files)
    for key, value in changes.items():
        if value == "<delete>":
            result.pop(key, None)
        else:
            result[key] = value
    if subject_pw is not None and isinstance(result.get("by_subject"), dict):
        result["by_subject"]["philosophy"] = {**result["by_subject"].get("philosophy", {}), "Pw": subject_pw}
    rows = {"keep": rows, "drop file": None, "bad outcome": rows[:3] + [{**rows[3], "outcome": 2}] + rows[4:],
            "drop row": rows[1:], "number id": [{**rows[0], "id": 1}] + rows[1:]}[row_damage]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        outcome, calls = evaluate_against(folder, write_baseline(folder, result, rows),
                                          unparsed_as=unparsed_as, bootstrap=bootstrap)
        event("refused" if isinstance(outcome, RaitError) else "accepted")
        if isinstance(outcome, RaitError):
            assert "\n" not in str(outcome) and str(outcome).startswith(str(folder))
            assert calls == [] and written(folder) == []
            return
        assert math.isfinite(outcome["THS"])
        assert outcome["THS_ci"] is None or all(math.isfinite(x) for x in outcome["THS_ci"])
        for table in (outcome["by_subject"], outcome["by_group"]):
            assert all(row.get("THS") is None or math.isfinite(row["THS"]) for row in table.values())
        assert written(folder) == ["out.items.jsonl", "out.json"]


# ---- output paths ------------------------------------------------------------------------------

def test_outputs_that_are_inputs_folders_or_under_files_are_refused(tmp_path, baseline_files):
    result, rows = baseline_files
    baseline = write_baseline(tmp_path, result, rows)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "notes.json").write_text("my own notes, not JSON")
    cases = {baseline: "is also an input",
             tmp_path / "base": "is also an input",  # its items file would be the baseline's
             tmp_path / "folder": "is a directory", tmp_path / "file" / "r.json": "is a file, not a folder",
             tmp_path / "notes.json": "is not a rait eval result"}
    for out, message in cases.items():
        with scripted(MODEL_SAYS) as calls, pytest.raises(RaitError, match=message):
            evaluate(MCQA, out, EvalConfig(baseline=str(baseline)), loaded=FAKE)
        assert calls == []
    assert (tmp_path / "notes.json").read_text() == "my own notes, not JSON"


def test_cli_out_equal_to_the_test_set_is_refused(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Q?", "answers": ["a"]}) + "\n")
    assert main(["eval", str(data), "--out", str(data)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert data.read_text() == json.dumps({"question": "Q?", "answers": ["a"]}) + "\n"


@pytest.mark.parametrize("flag, value, message", [
    ("--bootstrap", "-5", "eval.bootstrap: must be >= 0, got -5"),
    ("--max-new-tokens", "0", "eval.max_new_tokens: must be >= 1, got 0"),
    ("--shots", "-1", "eval.shots: must be >= 0"),
    ("--batch-size", "0", "eval.batch_size: must be >= 1"),
    ("--bootstrap", "nan", "--bootstrap"),
    ("--max-new-tokens", "inf", "--max-new-tokens"),
    ("--seed", "nan", "--seed"),
])
def test_cli_numeric_flags_are_checked_up_front(tmp_path, capsys, flag, value, message):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Q?", "answers": ["a"]}) + "\n")
    assert exit_status(["eval", str(data), "--out", str(tmp_path / "r.json"), flag, value]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qa.jsonl"]


def exit_status(argv: list[str]) -> int:
    """main's status, or argparse's when it rejects a flag's value itself."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


# ---- generated numeric options -------------------------------------------------------------

NUMBER_LIKE = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from(["nan", "inf", "-inf", "7", "1e3", "-2", "x", ""]))
EVAL_BOUNDS = {"shots": (0, None), "max_new_tokens": (1, None), "bootstrap": (0, 1_000_000),
               "batch_size": (1, None), "seed": (0, None)}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(EVAL_BOUNDS)), NUMBER_LIKE, min_size=1, max_size=3))
def test_generated_numeric_eval_options_are_valid_or_one_clean_error(section):
    try:
        cfg = config.build(EvalConfig, section, where="eval")
    except RaitError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith(tuple(f"eval.{key}:" for key in section)) for line in lines)
        return
    for key in section:
        value = getattr(cfg, key)
        if value is None:
            continue
        low, high = EVAL_BOUNDS[key]
        assert isinstance(value, int) and not isinstance(value, bool)
        assert value >= low and (high is None or value <= high)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
                 st.text(alphabet="0123456789.,-naif ", max_size=12)))
def test_generated_conflict_thresholds_are_valid_or_one_clean_error(thresholds):
    try:
        cfg = config.build(ConflictConfig, {"thresholds": thresholds}, where="conflict")
    except RaitError as exc:
        assert all(line.startswith("conflict.thresholds:") for line in str(exc).splitlines())
        return
    assert cfg.thresholds and all(math.isfinite(t) and -1 <= t <= 1 for t in cfg.thresholds)


# ---- generated RAIT sets -------------------------------------------------------------------

JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=6))
PROMPT = st.one_of(JSON_SCALAR, st.just("a prompt"), st.just("   "),
                   st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", 1]),
                                                   "content": st.one_of(st.text(max_size=4), st.none())}),
                            max_size=2))
RAIT_ROW = st.dictionaries(st.sampled_from(["prompt", "label", "completion", "messages", "correctness", "id"]),
                           st.one_of(PROMPT, st.sampled_from(["vanilla", "idk", "IDK", ""])), max_size=5)
GOOD_LINE = st.fixed_dictionaries({"prompt": st.sampled_from(["a prompt", [{"role": "user", "content": "q"}]]),
                                   "label": st.sampled_from(["vanilla", "idk"])}).map(json.dumps)
BAD_LINE = st.one_of(RAIT_ROW.map(json.dumps),
                     st.sampled_from(["[1, 2]", "{not json", '"text"', "", "NaN", '{"prompt": NaN}']))


@settings(max_examples=200, deadline=None)
@given(st.lists(GOOD_LINE, max_size=5), st.one_of(st.none(), BAD_LINE), st.integers(0, 5),
       st.sampled_from([False, False, False, True]))
def test_generated_rait_sets_are_read_or_refused_with_file_and_line(lines, bad_line, where, bad_byte):
    from rait.prompts import is_conversation

    if bad_line is not None:
        lines.insert(where, bad_line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.jsonl"
        data = "\n".join(lines).encode() + b"\n"
        path.write_bytes(data + (b'{"prompt": "\xff", "label": "idk"}\n' if bad_byte else b""))
        try:
            rows = read_rait_set(path)
            event("accepted")
        except RaitError as exc:
            event("refused")
            message = str(exc)
            assert message.startswith(str(path)) and "\n" not in message
            assert ", line " in message or "empty" in message
            return
    assert rows and not bad_byte
    for row in rows:
        assert row["label"] in ("vanilla", "idk")
        assert (isinstance(row["prompt"], str) and row["prompt"].strip()) or is_conversation(row["prompt"])


def test_a_damaged_partial_file_is_one_error_and_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "out.json"
    with scripted(MODEL_SAYS):
        evaluate(MCQA, out, EvalConfig(bootstrap=0), loaded=FAKE)
    first_line = {"run_fingerprint": json.loads(out.read_text())["fingerprint"]}
    out.unlink()
    partial = tmp_path / "out.partial.jsonl"
    partial.write_text(json.dumps(first_line) + "\n" + json.dumps({"id": "m1"}) + "\n")
    with scripted(MODEL_SAYS) as calls, pytest.raises(RaitError, match="out.partial.jsonl, line 2: .*damaged"), \
            mock.patch.object(evaluation, "answer_all", side_effect=AssertionError("the model was started")):
        evaluate(MCQA, out, EvalConfig(bootstrap=0), loaded=FAKE)
    assert calls == [] and partial.exists()
    with scripted(MODEL_SAYS) as calls:
        result = evaluate(MCQA, out, EvalConfig(bootstrap=0, overwrite=True), loaded=FAKE)
    assert sum(calls) == len(MCQA) and result["n"] == len(MCQA) and not partial.exists()
