import json
import random

import pytest

from rait.errors import RaitError
from rait.stages import rehearse as rh
from rait.stages.rehearse import RehearseConfig, select_rehearsal


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


def test_select_step_redone_only_when_its_inputs_changed(tmp_path, capsys):
    table = [mcqa(i, 0.995) for i in range(4)]
    k = tmp_path / "k.jsonl"
    k.write_text("".join(json.dumps(r) + "\n" for r in table))
    path, fmt = tmp_path / "out" / "rehearsal_set.jsonl", {"task": "mcqa"}
    rows, fp = rh.select_step(table, k, RehearseConfig(size=2), "contains", {}, fmt, path)
    stamp = path.stat().st_mtime_ns
    assert rh.select_step(table, k, RehearseConfig(size=2), "contains", {}, fmt, path) == (rows, fp)
    assert "already done" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    rows3, fp3 = rh.select_step(table, k, RehearseConfig(size=3), "contains", {}, fmt, path)
    assert fp3 != fp and len(rows3) == 3 and len(path.read_text().splitlines()) == 3
    meta = path.with_name(path.name + ".meta.json")
    meta.write_text('{"fingerprint": ')  # a damaged marker: not done, made again
    assert rh.select_step(table, k, RehearseConfig(size=3), "contains", {}, fmt, path) == (rows3, fp3)
    assert json.loads(meta.read_text())["fingerprint"] == fp3


def test_markers_of_other_inputs_are_stale(tmp_path):
    marker = tmp_path / "rait_train.json"
    assert not rh.made_otherwise(marker, "aaa")  # nothing there: nothing to remove
    marker.write_text(json.dumps({"fingerprint": "aaa"}))
    assert not rh.made_otherwise(marker, "aaa")
    assert rh.made_otherwise(marker, "bbb")
    marker.write_text("{not json")
    assert rh.made_otherwise(marker, "aaa")


def test_out_dir_that_is_a_file_or_an_input_is_refused(tmp_path):
    k = tmp_path / "k.jsonl"
    k.write_text(json.dumps(mcqa(0, 0.5)) + "\n")
    with pytest.raises(RaitError, match=r"k\.jsonl: is also an input"):
        rh.rehearse([mcqa(0, 0.5)], k, k, RehearseConfig(), None)
    notes = tmp_path / "notes.txt"
    notes.write_text("x\n")
    with pytest.raises(RaitError, match=r"notes\.txt: is a file, not a folder"):
        rh.rehearse([mcqa(0, 0.5)], k, notes, RehearseConfig(), None)
    with pytest.raises(RaitError, match=r"notes\.txt is a file, not a folder"):
        rh.rehearse([mcqa(0, 0.5)], k, notes / "reh", RehearseConfig(), None)
    assert notes.read_text() == "x\n"


def test_table_problems_name_the_table(tmp_path):
    k = tmp_path / "k.jsonl"
    (tmp_path / "k.jsonl.meta.json").write_text(json.dumps({"config": {}}))
    bad = {"nan": json.dumps(mcqa(0, 0.5)).replace("0.5", "NaN") + "\n",
           "rait-set": json.dumps({"id": "a", "prompt": "Q", "completion": " A", "label": "idk"}) + "\n",
           "int-id": json.dumps({**mcqa(0, 0.5), "id": 1}) + "\n" + json.dumps({**mcqa(1, 0.5), "id": "1"}) + "\n"}
    for kind, text in bad.items():
        k.write_text(text)
        with pytest.raises(RaitError, match=r"k\.jsonl"):
            rh.rehearse([mcqa(0, 0.5)], k, tmp_path / "out", RehearseConfig(), None)


# ---- end to end on the tiny model ------------------------------------------------------------

SUBJECT_QUESTIONS = ["Which planet is largest?", "What is 2 + 2?", "Which metal is liquid?",
                     "Which animal barks?", "Which colour is the sky?", "Which number is prime?"]


def mcqa_items():
    return [{"id": f"m{i}", "task": "mcqa", "question": q, "subject": "general",
             "choices": {"A": "Mars", "B": "Jupiter", "C": "Four", "D": "Mercury"}, "target": "ABCD"[i % 4]}
            for i, q in enumerate(SUBJECT_QUESTIONS)]


def train_cfg(model_dir, **kw):
    from rait.stages.train import TrainConfig

    return TrainConfig(model=str(model_dir), epochs=2, batch_size=4, dtype="float32", logging_steps=1,
                       learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant", **kw)


def probe_table(items, model_dir, out):
    from rait.stages.probe import ProbeConfig, probe

    probe(ProbeConfig(model=str(model_dir), dtype="float32", shots=1), items, out,
          dataset_meta={"name": "tiny-mcqa", "fingerprint": "x"})
    return out


def test_rehearse_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    items = mcqa_items()
    k = probe_table(items, tiny_model_dir, tmp_path / "k.jsonl")
    out = tmp_path / "rehearse"
    rcfg = RehearseConfig(mcqa_min_prob=0.0, size=4)
    path = rh.rehearse(items, k, out, rcfg, train_cfg(tiny_model_dir))
    assert path == out / "knowledge.jsonl"
    chosen = [json.loads(line) for line in (out / "rehearsal_set.jsonl").read_text().splitlines()]
    assert len(chosen) == 4 and all(r["completion"] == " " + items[int(r["id"][1:])]["target"] for r in chosen)
    assert (out / "model" / "rait_train.json").exists()
    probed_meta = json.loads((out / "knowledge_rehearsed.jsonl.meta.json").read_text())
    initial_meta = json.loads((tmp_path / "k.jsonl.meta.json").read_text())
    assert probed_meta["config"] == {**initial_meta["config"], "model": str(out / "model")}  # same settings
    before = {r["id"]: r for r in map(json.loads, k.read_text().splitlines())}
    after = {r["id"]: r for r in map(json.loads, (out / "knowledge_rehearsed.jsonl").read_text().splitlines())}
    joined = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in joined] == [i["id"] for i in items]
    for row in joined:
        assert row["flow"] == pytest.approx(after[row["id"]]["correctness"] - before[row["id"]]["correctness"])
    assert any(abs(r["flow"]) > 1e-6 for r in joined)  # the training changed the model
    text = capsys.readouterr().out
    assert "rehearsed on 4 items; training loss" in text and "rose" in text
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    rh.rehearse(items, k, out, rcfg, train_cfg(tiny_model_dir))  # complete: every step skipped
    assert capsys.readouterr().out.count("already done") == 3
    assert stamp == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    (out / "knowledge.jsonl.meta.json").write_text("{damaged")  # not done: the join alone is redone
    assert rh.rehearse(items, k, out, rcfg, train_cfg(tiny_model_dir)) == path
    assert capsys.readouterr().out.count("already done") == 3
    assert json.loads((out / "knowledge.jsonl.meta.json").read_text())["rehearsal"]["n"] == 4
    model_fp = json.loads((out / "model" / "rait_train.json").read_text())["fingerprint"]
    rh.rehearse(items, k, out, rcfg, train_cfg(tiny_model_dir, lora_r=4))  # another recipe: train + probe again
    assert capsys.readouterr().out.count("already done") == 1
    assert json.loads((out / "model" / "rait_train.json").read_text())["fingerprint"] != model_fp
    assert json.loads((out / "knowledge.jsonl.meta.json").read_text())["rehearsal"]["train"]["lora_r"] == 4
    with pytest.raises(RaitError, match="does not match the knowledge table"):
        rh.rehearse(items[:5], k, out, rcfg, train_cfg(tiny_model_dir))
    with pytest.raises(RaitError, match="rehearsal must start from the probed model"):
        rh.rehearse(items, k, out, rcfg, train_cfg(tmp_path / "other"))
    with pytest.raises(RaitError, match="--mcqa-min-prob"):
        rh.rehearse(items, k, tmp_path / "none", RehearseConfig(), train_cfg(tiny_model_dir))


def test_cli_probe_rehearse_build(tiny_model_dir, tmp_path, capsys):
    from rait.cli import main

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({k: v for k, v in i.items() if k != "task"}) + "\n" for i in mcqa_items()))
    k, out = tmp_path / "k.jsonl", tmp_path / "reh"
    model = ["--model", str(tiny_model_dir), "--dtype", "float32"]
    assert main(["probe", str(data), "--out", str(k), "--shots", "1", *model]) == 0
    assert main(["rehearse", str(data), "--knowledge", str(k), "--out", str(out), *model, "--mcqa-min-prob", "0",
                 "--epochs", "1", "--batch-size", "4", "--seed", "3"]) == 0
    for marker in ("rehearsal_set.jsonl.meta.json", "model/rait_train.json", "knowledge_rehearsed.jsonl.meta.json",
                   "knowledge.jsonl.meta.json"):  # every step finished, its inputs recorded
        assert json.loads((out / marker).read_text())["fingerprint"]
    info = json.loads((out / "model" / "rait_train.json").read_text())
    assert info["recipe"]["seed"] == 3 and info["prompt_format"] == {"task": "mcqa", "style": "basic",
                                                                     "template": "plain"}
    built = tmp_path / "craft.jsonl"
    assert main(["build", "--knowledge", str(out / "knowledge.jsonl"), "--method", "craft", "--size", "4",
                 "--idk-ratio", "0.5", "--threshold", "0.26", "--allow-fewer", "--out", str(built)]) == 0
    rows = [json.loads(line) for line in built.read_text().splitlines()]
    assert rows and all("flow" in r and r["task"] == "mcqa" for r in rows)
    assert all(r["completion"] == " I don't know." for r in rows if r["label"] == "idk")
    assert main(["rehearse", str(data), "--knowledge", str(k), "--out", str(tmp_path / "x"), *model,
                 "--limit", "3"]) == 2
    assert "does not match" in capsys.readouterr().err


def test_the_rehearsal_target_is_scored_with_the_probes_refusal_phrases():
    """A sample the probe counted as a refusal (its own --refusal-phrases) is never the target."""
    row = {"id": "q", "task": "oeqa", "question": "Capital of France?", "answers": ["Paris"],
           "samples": ["I pass on this Paris", "I pass on this Paris", "Paris"]}
    assert rh.rehearsal_target(row, "contains") == "I pass on this Paris"  # the default phrases
    assert rh.rehearsal_target(row, "contains", {"refusal_phrases": ["pass on this"]}) == "Paris"
