"""`rait eval`: prompts, greedy answers, outcomes, rates, THS against a baseline, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.stages import eval as evaluation
from rait.backends import hf
from rait.cli import main
from rait.errors import RaitError
from rait.stages.eval import EvalConfig, evaluate, outcome_metrics, refusal_split
from rait.scoring import classify_mcqa, classify_oeqa
from rait.metrics import ths

CONTRACT = ("model", "dataset", "prompt", "n", "correct", "wrong", "refused", "unparsed", "Pc", "Pw",
            "Pr", "THS", "THS_ci", "baseline", "by_subject", "by_group", "over_conservative", "prudence")

# ten MCQA questions: 1-5 biology (STEM), 6-10 philosophy (humanities)
MCQA = [{"id": f"m{i}", "task": "mcqa", "question": f"Test question number {i}?",
         "choices": {"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"}, "target": "ABCD"[i % 4],
         "subject": "high_school_biology" if i <= 5 else "philosophy"} for i in range(1, 11)]
OEQA = [{"id": f"o{i}", "task": "oeqa", "question": f"Open question number {i}?",
         "answers": [f"Answer{i}", f"alias{i}"]} for i in range(1, 6)]


def wrong_letter(item):
    return "B" if item["target"] != "B" else "C"


# outcome per MCQA item: baseline and tuned model ("u" = unparsed)
BASELINE_PLAN = "c c c c c w w w w u".split()
MODEL_PLAN = "r c c c c r r w c u".split()
SAY = {"c": lambda it: it["target"], "w": wrong_letter, "r": lambda it: "I don't know.",
       "u": lambda it: "Hmm, maybe"}


def scripted(monkeypatch, plan: dict[str, str], calls: list | None = None):
    """Replace greedy decoding by canned answers keyed by the question found in each prompt."""
    def fake_greedy(model, tok, prompts, *, max_new_tokens, batch_size=8, stop_at_newline=True,
                    progress=None):
        if calls is not None:
            calls.append(len(prompts))
        out = []
        for prompt in prompts:
            question = next(q for q in plan if q in prompt)
            out.append(" " + plan[question] + "\nQuestion: trailing text the backend should cut")
        return out

    monkeypatch.setattr(hf, "greedy", fake_greedy)


def answers_for(items, letters):
    return {item["question"]: SAY[code](item) for item, code in zip(items, letters)}


FAKE = (None, None, {"path": "fake-model", "model": "fake-model", "train_info": None})


def run_baseline(tmp_path, monkeypatch, cfg_kwargs=None) -> Path:
    scripted(monkeypatch, answers_for(MCQA, BASELINE_PLAN))
    out = tmp_path / "base.json"
    evaluate(MCQA, out, EvalConfig(name="init", bootstrap=200, **(cfg_kwargs or {})),
             dataset_meta={"name": "toy-mmlu"}, loaded=FAKE)
    return out


def test_scripted_metrics_and_ths_against_baseline(tmp_path, monkeypatch):
    base_file = run_baseline(tmp_path, monkeypatch)
    base = json.loads(base_file.read_text())
    assert (base["correct"], base["wrong"], base["unparsed"], base["Pc"], base["Pw"]) == (5, 4, 1, 0.5, 0.5)
    assert base["THS"] is None and base["prompt"] == "basic"
    assert base["prompt_info"]["kind"] == "fewshot" and base["prompt_info"]["shots"] == 5

    scripted(monkeypatch, answers_for(MCQA, MODEL_PLAN))
    out = tmp_path / "tuned.json"
    result = evaluate(MCQA, out, EvalConfig(name="tuned", baseline=str(base_file), bootstrap=500),
                      dataset_meta={"name": "toy-mmlu"}, loaded=FAKE)
    assert all(key in result for key in CONTRACT)
    assert (result["correct"], result["wrong"], result["refused"], result["unparsed"]) == (5, 1, 3, 1)
    assert result["Pc"] == pytest.approx(0.5) and result["Pw"] == pytest.approx(0.2)
    assert result["Pr"] == pytest.approx(0.3)
    assert result["THS"] == pytest.approx((0.5 * 0.5 - 0.2 * 0.5) / 0.5)  # 0.3
    lo, hi = result["THS_ci"]
    assert lo <= result["THS"] <= hi and hi - lo < 1.0
    assert result["baseline"] == {"path": str(base_file), "model": "init", "dataset": "toy-mmlu",
                                  "prompt": "basic", "Pc": 0.5, "Pw": 0.5, "paired": True}
    # m1 was known by the baseline and is now refused; m6, m7 were wrong and are now refused
    assert result["over_conservative"]["count"] == 1
    assert result["over_conservative"]["share"] == pytest.approx(1 / 5)
    assert result["prudence"]["count"] == 2 and result["prudence"]["share"] == pytest.approx(2 / 5)
    # per subject / group / macro
    bio, phil = result["by_subject"]["high_school_biology"], result["by_subject"]["philosophy"]
    assert (bio["n"], bio["correct"], bio["refused"]) == (5, 4, 1)
    assert (phil["n"], phil["correct"], phil["wrong"], phil["refused"], phil["unparsed"]) == (5, 1, 1, 2, 1)
    assert list(result["by_group"]) == ["STEM", "humanities"]
    assert result["by_group"]["STEM"]["Pc"] == pytest.approx(0.8)
    assert result["by_group"]["humanities"]["THS"] == pytest.approx(ths(0.2, 0.4, 0.0, 1.0))
    assert result["macro"]["Pc"] == pytest.approx((0.8 + 0.2) / 2)
    # the file on disk is the returned result; items carry the per-question details
    assert json.loads(out.read_text())["THS"] == pytest.approx(0.3)
    rows = [json.loads(line) for line in (tmp_path / "tuned.items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [i["id"] for i in MCQA]
    assert rows[0]["answer"] == "I don't know." and rows[0]["outcome"] == "refused"
    assert rows[1]["target"] == MCQA[1]["target"] and rows[1]["subject"] == "high_school_biology"
    assert "Test question number 2?" in rows[1]["prompt"]
    assert not (tmp_path / "tuned.partial.jsonl").exists()


def test_unparsed_as_refused_moves_unparsed_from_pw_to_pr(tmp_path, monkeypatch):
    base_file = run_baseline(tmp_path, monkeypatch, {"unparsed_as": "refused"})
    scripted(monkeypatch, answers_for(MCQA, MODEL_PLAN))
    result = evaluate(MCQA, tmp_path / "t.json", EvalConfig(baseline=str(base_file), unparsed_as="refused"),
                      loaded=FAKE)
    assert result["Pw"] == pytest.approx(0.1) and result["Pr"] == pytest.approx(0.4)
    assert result["baseline"]["Pw"] == pytest.approx(0.4)
    assert result["THS"] == pytest.approx((0.5 * 0.4 - 0.1 * 0.5) / 0.4)  # 0.375
    assert result["prudence"]["share"] == pytest.approx(2 / 4)  # baseline's unparsed is not "wrong" now


def test_baseline_without_items_file_gives_unpaired_interval(tmp_path, monkeypatch):
    base_file = run_baseline(tmp_path, monkeypatch)
    (tmp_path / "base.items.jsonl").unlink()
    scripted(monkeypatch, answers_for(MCQA, MODEL_PLAN))
    result = evaluate(MCQA, tmp_path / "t.json", EvalConfig(baseline=str(base_file)), loaded=FAKE)
    assert result["THS"] == pytest.approx(0.3) and result["baseline"]["paired"] is False
    assert result["THS_ci"][0] <= 0.3 <= result["THS_ci"][1]
    assert result["over_conservative"] is None


def test_baseline_on_other_items_or_missing_is_an_error(tmp_path, monkeypatch):
    scripted(monkeypatch, answers_for(MCQA, BASELINE_PLAN))
    evaluate(MCQA[:9], tmp_path / "short.json", EvalConfig(), loaded=FAKE)
    with pytest.raises(RaitError, match="different test set"):
        evaluate(MCQA, tmp_path / "t.json", EvalConfig(baseline=str(tmp_path / "short.json")), loaded=FAKE)
    (tmp_path / "short.items.jsonl").unlink()  # the fingerprint alone still tells
    with pytest.raises(RaitError, match="different test set"):
        evaluate(MCQA, tmp_path / "t.json", EvalConfig(baseline=str(tmp_path / "short.json")), loaded=FAKE)
    with pytest.raises(RaitError, match="baseline result not found"):
        evaluate(MCQA, tmp_path / "t.json", EvalConfig(baseline=str(tmp_path / "nope.json")), loaded=FAKE)
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "t.items.jsonl").exists()


def test_empty_and_mixed_test_sets_are_errors(tmp_path):
    with pytest.raises(RaitError, match="empty"):
        evaluate([], tmp_path / "t.json", EvalConfig(), loaded=FAKE)
    with pytest.raises(RaitError, match="mixes tasks"):
        evaluate(MCQA[:1] + OEQA[:1], tmp_path / "t.json", EvalConfig(), loaded=FAKE)


def tuned(task="mcqa", style="refuse"):
    info = {"prompt_format": {"task": task, "style": style, "template": "plain"}}
    return (None, None, {"path": "tuned-model", "train_info": info})


def test_tuned_model_uses_its_trained_prompt_and_must_match_the_task(tmp_path, monkeypatch):
    with pytest.raises(RaitError, match="tuned on MCQA but the test set is OEQA"):
        evaluate(OEQA, tmp_path / "t.json", EvalConfig(), loaded=tuned("mcqa"))
    scripted(monkeypatch, answers_for(MCQA, MODEL_PLAN))
    result = evaluate(MCQA, tmp_path / "t.json", EvalConfig(), loaded=tuned("mcqa", "refuse"))
    info = result["prompt_info"]
    assert (result["prompt"], info["kind"], info["template"]) == ("refuse", "instruction", "plain")
    assert info["example"].startswith("There is a single choice question about high school biology")
    assert "If you do not know the answer" in info["example"] and info["example"].endswith("Answer:")
    basic = evaluate(MCQA, tmp_path / "b.json", EvalConfig(prompt="basic"), loaded=tuned("mcqa", "refuse"))
    assert basic["prompt"] == "basic" and "If you do not know" not in basic["prompt_info"]["example"]


def pick_shots(item, shots, k):
    from rait.prompts import plan_shots, shots_for

    return shots_for(item, plan_shots([item], item["task"], k, shots, stage="eval")[0])


def test_fewshot_shots_follow_the_subject_and_skip_the_item(tmp_path, monkeypatch):
    shots = [{**MCQA[i], "id": f"dev{i}"} for i in range(10)]  # same questions as the test items
    prompt = pick_shots(MCQA[0], shots, 3)
    assert all(s["subject"] == "high_school_biology" and s["question"] != MCQA[0]["question"] for s in prompt)
    assert len(prompt) == 3
    assert pick_shots(OEQA[0], None, 2)[0]["id"] == "shot-oeqa-1"


def test_a_subject_the_shot_source_lacks_gets_the_builtin_shots_not_another_subjects(capsys):
    """The drift bug: ARC questions ("science") were asked after MMLU abstract-algebra shots."""
    from rait.prompts import BUILTIN_MCQA_SHOTS, plan_shots, warn_shot_fallback

    algebra = [{"id": f"dev{i}", "task": "mcqa", "subject": "abstract_algebra", "question": f"Group {i}?",
                "choices": {"A": "1", "B": "2"}, "target": "B"} for i in range(5)]
    arc = [{"id": "arc1", "task": "mcqa", "subject": "science", "question": "Why is the sky blue?",
            "choices": {"A": "Scattering", "B": "Paint"}, "target": "A"}]
    plan, record = plan_shots(arc, "mcqa", 3, algebra, stage="eval")
    assert [s["id"] for s in plan["science"]] == [s["id"] for s in BUILTIN_MCQA_SHOTS[:3]]
    assert record["fallback_to_builtin"] == ["science"]
    warn_shot_fallback(record, "eval")
    assert "1 subject(s) ('science'); their questions get the built-in shots" in capsys.readouterr().err


def test_shot_source_file_gives_the_examples(tmp_path, monkeypatch):
    shots = tmp_path / "dev.jsonl"
    shots.write_text("".join(json.dumps({"id": f"d{k}", "question": f"Dev example {k}?", "subject": subject,
                                         "choices": {"A": "1", "B": "2", "C": "3", "D": "4"}, "target": "C"}) + "\n"
                             for k, subject in enumerate(["philosophy", "high_school_biology"] * 3)))
    scripted(monkeypatch, answers_for(MCQA, BASELINE_PLAN))
    result = evaluate(MCQA, tmp_path / "t.json", EvalConfig(shot_source=str(shots), shots=2), loaded=FAKE)
    example = result["prompt_info"]["example"]  # m1 is biology: its two biology dev examples
    assert "Dev example 1?" in example and "Dev example 3?" in example and "Dev example 0?" not in example
    assert example.count("Answer: C") == 2 and example.endswith("Answer:")
    with pytest.raises(RaitError, match="is MCQA but the test set is OEQA"):
        evaluate(OEQA, tmp_path / "o.json", EvalConfig(shot_source=str(shots)), loaded=FAKE)


# ------------------------------------------------- shots carved out of the test set's own file (ARC)

def write_arc(path: Path, n: int) -> Path:
    """An ARC-Challenge-format file (the AI2 jsonl the loader reads) of n science questions."""
    rows = [{"id": f"arc-{i:02d}", "answerKey": "ABCD"[i % 4],
             "question": {"stem": f"Science question arc-{i:02d}?",
                          "choices": [{"label": label, "text": f"choice {label}{i}"} for label in "ABCD"]}}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def carved_arc(tmp_path, n=12, **cfg):
    """(the ARC file, the eval settings, the test set loaded as `rait eval` loads it)."""
    from rait.data.split import DataOptions
    from rait.prompts import with_shot_source

    path = write_arc(tmp_path / "ARC-Challenge-Dev.jsonl", n)
    config = with_shot_source(EvalConfig(name="init", bootstrap=0, **cfg), str(path), None)
    return path, config, evaluation.load_test_set(str(path), DataOptions(), config)


def test_arc_prompts_get_shots_carved_out_of_the_arc_file_not_mmlu_or_builtin(tmp_path, monkeypatch):
    from rait.data.loaders import load_dataset
    from rait.data.split import carve_shots
    from rait.prompts import BUILTIN_MCQA_SHOTS

    path, cfg, test = carved_arc(tmp_path, shot_size=4, shots=3)
    carved = carve_shots(load_dataset(str(path)), 4, seed=0)[0].items
    assert cfg.shot_source == str(path) and len(test.items) == 8
    assert not {s["id"] for s in carved} & {i["id"] for i in test.items}
    scripted(monkeypatch, {item["question"]: item["target"] for item in test.items})
    result = evaluate(test.items, tmp_path / "arc.json", cfg, loaded=FAKE,
                      dataset_meta={"name": test.name, **evaluation.carved_out_meta(cfg, str(path), None)})
    assert result["n"] == 8 and result["Pc"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "arc.items.jsonl").read_text().splitlines()]
    first3 = [s["question"] for s in carved[:3]]
    for row in rows:  # every prompt: the first 3 carved ARC questions with their gold letters, then its own
        assert all(q in row["prompt"] for q in first3) and carved[3]["question"] not in row["prompt"]
        assert row["prompt"].count("Science question") == 4
        assert "about science" in row["prompt"]
        assert not any(b["question"] in row["prompt"] for b in BUILTIN_MCQA_SHOTS)
        assert "abstract algebra" not in row["prompt"]
    for shot in carved[:3]:
        assert f"{shot['question']}\n" + "\n".join(f"{k}. {v}" for k, v in shot["choices"].items()) \
            + f"\nAnswer: {shot['target']}" in rows[0]["prompt"]
    record = result["prompt_info"]["shot_examples"]
    assert record == {"source": "given", "ids": {"science": [s["id"] for s in carved[:3]]},
                      "fallback_to_builtin": [], "dataset": str(path), "split": None,
                      "carve": {"size": 4, "split_seed": 0}, "carved_from_test_set": True}
    assert result["dataset_info"]["shots_carved_out"] == {"size": 4, "split_seed": 0}
    assert result["config"]["shot_size"] == 4


def test_a_test_set_that_overlaps_its_shot_source_is_refused(tmp_path, monkeypatch):
    from rait.data.loaders import load_dataset

    path = write_arc(tmp_path / "ARC-Challenge-Dev.jsonl", 12)
    full = load_dataset(str(path)).items
    scripted(monkeypatch, {item["question"]: "A" for item in full})
    # the whole file as its own shot source, or a carve of it while the whole file is tested
    for cfg, count in ((EvalConfig(shot_source=str(path), shots=3), 12),
                       (EvalConfig(shot_source=str(path), shot_size=4, shots=3), 4)):
        with pytest.raises(RaitError) as err:
            evaluate(full, tmp_path / "o.json", cfg, loaded=FAKE, dataset_meta={"name": "arc-challenge-dev"})
        assert str(err.value).startswith(f"eval: the test set 'arc-challenge-dev' overlaps its shot source "
                                         f"'{path}': {count} of its 12 items are among the {count} shots")
    assert not (tmp_path / "o.json").exists()


def test_more_shots_than_the_carve_holds_is_an_error(tmp_path, monkeypatch):
    path, cfg, test = carved_arc(tmp_path, shot_size=2, shots=3)
    scripted(monkeypatch, {item["question"]: "A" for item in test.items})
    with pytest.raises(RaitError, match="3 shots per prompt asked for, but only 2 are carved out of"):
        evaluate(test.items, tmp_path / "o.json", cfg, loaded=FAKE)


def test_the_shot_carve_is_part_of_the_results_fingerprint(tmp_path, monkeypatch):
    fingerprints = set()
    for seed in (0, 1):  # the same file, another carve
        path, cfg, test = carved_arc(tmp_path, shot_size=4, shots=3, shot_split_seed=seed)
        scripted(monkeypatch, {item["question"]: "A" for item in test.items})
        fingerprints.add(evaluate(test.items, tmp_path / f"r{seed}.json", cfg, loaded=FAKE)["fingerprint"])
    assert len(fingerprints) == 2


def test_cli_eval_carves_arc_shots_out_of_the_test_file(tmp_path, tiny_model_dir, capsys):
    from rait.data.loaders import load_dataset
    from rait.data.split import carve_shots

    path = write_arc(tmp_path / "ARC-Challenge-Dev.jsonl", 10)
    out = tmp_path / "arc.json"
    assert main(["eval", str(path), "--out", str(out), "--model", str(tiny_model_dir), "--dtype", "float32",
                 "--max-new-tokens", "2", "--shots", "2", "--shot-size", "3", "--shot-split-seed", "5",
                 "--bootstrap", "0"]) == 0
    assert "3 few-shot examples carved out of" in capsys.readouterr().err
    carved = carve_shots(load_dataset(str(path)), 3, seed=5)[0].items
    result = json.loads(out.read_text())
    assert result["n"] == 7
    assert result["prompt_info"]["shot_examples"]["ids"] == {"science": [s["id"] for s in carved[:2]]}
    assert result["prompt_info"]["shot_examples"]["carve"] == {"size": 3, "split_seed": 5}
    rows = [json.loads(line) for line in (tmp_path / "arc.items.jsonl").read_text().splitlines()]
    assert not {r["id"] for r in rows} & {s["id"] for s in carved}
    assert all(carved[0]["question"] in r["prompt"] and carved[1]["question"] in r["prompt"] for r in rows)
    # bad input: one clear error each, exit 2, nothing written
    for flags, message in ((["--shot-size", "0"], "eval.shot_size: must be >= 1, got 0"),
                           (["--shot-size", "10"], "10 shots carved out of its 10 items leave nothing to test"),
                           (["--shot-size", "11"], "11 shots asked for, but it holds only 10 items"),
                           (["--shot-size", "2", "--shots", "3"], "3 shots per prompt asked for, but only 2"),
                           (["--shot-source", str(path)], "overlaps its shot source")):
        assert main(["eval", str(path), "--out", str(tmp_path / "bad.json"), "--model", str(tiny_model_dir),
                     *flags]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad.json").exists()


def test_resume_after_interruption_and_skip_when_complete(tmp_path, monkeypatch):
    items = [{**OEQA[0], "id": f"x{i}", "question": f"Resume question {i}?"} for i in range(20)]
    plan = {it["question"]: ("Answer1" if i % 2 else "nope") for i, it in enumerate(items)}
    calls: list[int] = []
    scripted(monkeypatch, plan, calls)
    real = hf.greedy

    def dies_on_second_chunk(*args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "greedy", dies_on_second_chunk)
    cfg = EvalConfig(batch_size=2)  # chunks of 8 prompts
    with pytest.raises(KeyboardInterrupt):
        evaluate(items, tmp_path / "r.json", cfg, loaded=FAKE)
    assert not (tmp_path / "r.json").exists()
    assert len((tmp_path / "r.partial.jsonl").read_text().splitlines()) == 1 + 8
    monkeypatch.setattr(hf, "greedy", real)
    result = evaluate(items, tmp_path / "r.json", cfg, loaded=FAKE)
    assert calls == [8, 8, 4]  # the first 8 answers were not recomputed
    assert (result["correct"], result["wrong"]) == (10, 10)
    again = evaluate(items, tmp_path / "r.json", cfg, loaded=FAKE)
    assert calls == [8, 8, 4] and again == result
    evaluate(items, tmp_path / "r.json", EvalConfig(batch_size=2, max_new_tokens=5), loaded=FAKE)
    assert calls[-3:] == [8, 8, 4]  # other decoding settings: recomputed


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["correct", "wrong", "refused", "unparsed"]),
                          st.sampled_from(["correct", "wrong", "refused", "unparsed"]),
                          st.sampled_from(["philosophy", "virology", "astronomy", "made_up"])),
                min_size=1, max_size=40),
       st.sampled_from(["wrong", "refused"]))
def test_breakdowns_add_up(triples, unparsed_as):
    rows = [{"id": f"i{k}", "outcome": mine, "subject": subject} for k, (mine, _, subject) in enumerate(triples)]
    metrics = outcome_metrics(rows, unparsed_as)
    assert metrics["n"] == len(rows)
    assert metrics["correct"] + metrics["wrong"] + metrics["refused"] + metrics["unparsed"] == len(rows)
    assert metrics["Pc"] + metrics["Pw"] + metrics["Pr"] == pytest.approx(1.0)
    assert sum(s["n"] for s in metrics["by_subject"].values()) == len(rows)
    assert sum(g["n"] for g in metrics["by_group"].values()) == sum(1 for r in rows if r["subject"] != "made_up")
    split = refusal_split(rows, {f"i{k}": base for k, (_, base, _) in enumerate(triples)}, unparsed_as)
    refused = round(metrics["Pr"] * len(rows))
    assert split["over_conservative"]["count"] + split["prudence"]["count"] <= refused


# --------------------------------------------------------------------- the tiny model, end to end

def test_tiny_model_end_to_end_oeqa_and_mcqa(tmp_path, tiny_model_dir):
    from rait.models import load_model

    loaded = load_model(str(tiny_model_dir), "float32")
    for items in (OEQA, MCQA[:6]):
        out = tmp_path / f"{items[0]['task']}.json"
        result = evaluate(items, out, EvalConfig(model=str(tiny_model_dir), max_new_tokens=6, batch_size=4),
                          loaded=loaded)
        assert all(key in result for key in CONTRACT)
        assert result["correct"] + result["wrong"] + result["refused"] + result["unparsed"] == len(items)
        assert result["decoding"] == {"do_sample": False, "max_new_tokens": 6, "stop_at_newline": True,
                                      "stop": "first newline after some text, eos or end of turn",
                                      "batch_size": 4}
        rows = [json.loads(line) for line in Path(str(out).replace(".json", ".items.jsonl")).read_text().splitlines()]
        assert len(rows) == len(items)
        for item, row in zip(items, rows):
            assert "\n" not in row["answer"]
            if item["task"] == "oeqa":
                assert row["aliases"] == item["answers"]
                assert row["outcome"] == classify_oeqa(row["answer"], item["answers"])
            else:
                assert row["outcome"] == classify_mcqa(row["answer"], item["choices"], item["target"])


def test_cli_eval_on_a_generic_file(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": it["question"], "answers": it["answers"]}) + "\n"
                            for it in OEQA))
    out = tmp_path / "res.json"
    assert main(["eval", str(data), "--out", str(out), "--model", str(tiny_model_dir),
                 "--max-new-tokens", "4", "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    assert "Pc" in printed and "THS" in printed and f"n={len(OEQA)}" in printed
    result = json.loads(out.read_text())
    assert result["dataset"] == "qa" and result["n"] == len(OEQA) and result["model"] == tiny_model_dir.name
    # a baseline from another file: one clear error, exit 2
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "Something else?", "answers": ["x"]}) + "\n")
    assert main(["eval", str(other), "--out", str(tmp_path / "o.json"), "--model", str(tiny_model_dir),
                 "--baseline", str(out)]) == 2
    assert "different test set" in capsys.readouterr().err


@pytest.mark.slow
def test_default_model_answers_easy_questions(tmp_path):
    """The bundled base model, 3-shot, greedy: it knows some of these (see the environment notes)."""
    items = [{"id": f"e{k}", "task": "oeqa", "question": q, "answers": a} for k, (q, a) in enumerate([
        ("What is the capital of France?", ["Paris"]), ("What is the capital of Japan?", ["Tokyo"]),
        ("Which ocean is the largest?", ["Pacific", "Pacific Ocean"]),
        ("In which country are the pyramids of Giza?", ["Egypt"])])]
    result = evaluate(items, tmp_path / "e.json", EvalConfig(max_new_tokens=8, bootstrap=0))
    assert result["prompt_info"]["kind"] == "fewshot" and result["n"] == 4
    assert result["correct"] >= 2, [json.loads(l)["answer"] for l in (tmp_path / "e.items.jsonl").open()]


def test_micro_and_subject_macro_are_both_reported_and_labelled():
    """MMLU: the headline and group rates count every question once (micro); the paper's numbers
    are unweighted means over subjects (macro), overall and within a group. Both are recorded."""
    from rait.stages.eval import outcome_metrics

    # STEM: abstract_algebra 3 of 4 right, astronomy 0 of 1 right; other: anatomy 1 of 1
    rows = ([{"subject": "abstract_algebra", "outcome": o} for o in ("correct", "correct", "correct", "wrong")]
            + [{"subject": "astronomy", "outcome": "wrong"}, {"subject": "anatomy", "outcome": "correct"}])
    result = outcome_metrics(rows, "wrong")
    assert result["Pc"] == pytest.approx(4 / 6)                                  # micro
    assert result["by_group"]["STEM"]["Pc"] == pytest.approx(3 / 5)              # micro within STEM
    assert result["by_group_macro"]["STEM"]["Pc"] == pytest.approx((3 / 4 + 0) / 2)  # mean of subjects
    assert result["macro"]["Pc"] == pytest.approx((3 / 4 + 0 + 1) / 3)
    assert result["by_group_macro"]["STEM"]["groups"] == 2
    assert set(result["averages"]) == {"headline", "by_group", "by_group_macro", "macro"}
    assert result["averages"]["headline"].startswith("micro")


def test_subject_and_unpaired_ths_use_this_runs_unparsed_rule():
    """The baseline's stored rates were computed under its own unparsed rule; THS per subject and
    against an unpaired baseline are computed again under this evaluation's rule."""
    from rait.metrics import rates, ths
    from rait.stages.eval import EvalConfig, attach_baseline, outcome_metrics

    subjects = ["anatomy", "astronomy"] * 4
    mine = ["correct", "refused", "correct", "wrong", "unparsed", "correct", "wrong", "correct"]
    theirs = ["correct", "wrong", "unparsed", "wrong", "unparsed", "correct", "wrong", "unparsed"]
    rows = [{"id": f"q{i}", "subject": s, "outcome": o} for i, (s, o) in enumerate(zip(subjects, mine))]
    base_rows = [{**r, "outcome": o} for r, o in zip(rows, theirs)]
    cfg = EvalConfig(unparsed_as="refused", bootstrap=0)
    stored = outcome_metrics(base_rows, "wrong")  # the baseline as its own run recorded it
    baseline = {"path": "base.json", "result": stored, "outcomes": {r["id"]: r["outcome"] for r in base_rows},
                "rates": rates(theirs, unparsed_as="refused"), "unpaired": []}
    result = attach_baseline(outcome_metrics(rows, "refused"), rows, cfg, baseline)
    for subject in ("anatomy", "astronomy"):
        base = rates([r["outcome"] for r in base_rows if r["subject"] == subject], unparsed_as="refused")
        cell = result["by_subject"][subject]
        assert cell["THS"] == pytest.approx(ths(cell["Pc"], cell["Pw"], base["Pc"], base["Pw"]))


def test_an_unpaired_baseline_is_rated_from_its_counts_under_this_runs_rule(tmp_path):
    import json

    from rait.stages.eval import EvalConfig, items_fingerprint, load_baseline

    items = [{"id": f"q{i}", "task": "oeqa", "question": f"Q{i}?", "answers": ["A"]} for i in range(10)]
    counts = {"correct": 4, "wrong": 3, "refused": 1, "unparsed": 2}
    # recorded under unparsed-as-wrong: Pw = (3 + 2) / 10; no items file beside it
    stored = {"n": 10, "Pc": 0.4, "Pw": 0.5, "Pr": 0.1, **counts, "scoring": {"unparsed_as": "wrong"}}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(stored))
    cfg = EvalConfig(unparsed_as="refused", bootstrap=0)
    baseline = load_baseline(path, items, items_fingerprint(items), cfg)
    assert baseline["outcomes"] is None
    assert baseline["rates"]["Pc"] == pytest.approx(0.4) and baseline["rates"]["Pw"] == pytest.approx(0.3)
