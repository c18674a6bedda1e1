"""`rait run`: config validation, the plan and its cache logic, and whole runs on a tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rait.cli import main
from rait.errors import RaitError
from rait.pipeline import Run, load_config

REPO = Path(__file__).resolve().parents[1]


def write_pool(path: Path, n: int = 40) -> Path:
    """Multiple-choice items: rehearsal then only needs a gold probability threshold, which a
    random tiny model can meet when the threshold is 0."""
    rows = [{"id": f"t{i}", "question": f"Which number is {i}?", "subject": ["maths", "letters"][i % 2],
             "choices": {"A": str(i), "B": str(i + 1), "C": str(i + 2), "D": str(i + 3)}, "target": "ABCD"[i % 4]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    pool = write_pool(tmp_path / "pool.jsonl")
    cfg = {
        "name": "tiny", "task": "mcqa", "model": str(model_dir), "dtype": "float32", "seed": 0,
        "pool": {"dataset": str(pool), "part": "pool", "test_size": 12, "split_seed": 0},
        "probe": {"batch_size": 8},
        "rehearse": {"size": 8, "mcqa_min_prob": 0.0},  # a random tiny model is never sure
        "methods": ["vanilla", "cor", "craft"],
        "build": {"size": 12, "idk_ratio": 0.5, "allow_fewer": True},
        "train": {"method": "lora", "epochs": 1, "batch_size": 4, "max_length": 1024},
        "tests": [{"name": "held-out", "dataset": str(pool), "part": "test", "test_size": 12, "split_seed": 0}],
        "eval": {"max_new_tokens": 4, "batch_size": 8, "bootstrap": 50},
        "conflict": {"enabled": True},
    }
    cfg.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_validation_reports_every_problem_with_key_paths(tmp_path):
    bad = {
        "name": "x", "task": "oeqa", "seed": "zero", "colour": "red",
        "pool": {"dataset": str(tmp_path / "missing.jsonl")},
        "probe": {"sampels": 3},
        "methods": ["craft", "crfat"],
        "tests": [{"name": "mc", "dataset": "demo-mcqa", "part": "test", "test_size": 10}],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(RaitError) as err:
        load_config(path)
    text = str(err.value)
    assert "unknown key 'colour'" in text
    assert ".seed" in text
    with pytest.raises(RaitError) as err:
        load_config(_without(path, ["colour", "seed"]))
    text = str(err.value)
    assert "probe: unknown key 'sampels'; did you mean 'samples'?" in text
    assert "methods[1]: unknown method 'crfat'; did you mean 'craft'?" in text
    assert "pool.dataset" in text and "missing.jsonl" in text
    assert "tests[0].dataset: 'demo-mcqa' is a mcqa dataset, but task is oeqa" in text


def _without(path: Path, keys) -> Path:
    cfg = yaml.safe_load(path.read_text())
    for key in keys:
        cfg.pop(key)
    out = path.with_name("bad2.yaml")
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\npool: {dataset: demo-oeqa\n")
    with pytest.raises(RaitError, match=r"broken.yaml, line \d+: not valid YAML"):
        load_config(path)


def test_every_shipped_config_validates():
    from conftest import SHARED_DATA

    configs = sorted((REPO / "configs").rglob("*.yaml"))
    names = {p.relative_to(REPO / "configs").as_posix() for p in configs}
    assert {"demo.yaml", "demo-mcqa.yaml", "paper/mmlu_llama3_8b.yaml", "study/mmlu.yaml"} <= names
    for path in configs:
        if path.parent.name == "study" and not SHARED_DATA.is_dir():
            continue  # the study configs read the real datasets beside the project
        load_config(path)


def test_changing_training_setting_invalidates_train_and_eval_not_probe(tmp_path, tiny_model_dir):
    path = tiny_config(tmp_path, tiny_model_dir)
    before = Run(load_config(path), tmp_path / "run", tmp_path).fingerprints
    changed = tiny_config(tmp_path, tiny_model_dir, train={"method": "lora", "epochs": 2, "batch_size": 4,
                                                           "max_length": 1024})
    after = Run(load_config(changed), tmp_path / "run", tmp_path).fingerprints
    assert before.keys() == after.keys()
    same = {name for name in before if before[name] == after[name]}
    assert "probe" in same
    assert {"eval/init-basic/held-out", "eval/init-refuse/held-out"} <= same
    for method in ("vanilla", "cor", "craft"):
        assert f"train/{method}" not in same
        assert f"eval/{method}/held-out" not in same
    assert "report" not in same


# ---------------------------------------------------- a test set's own shots, carved out of its file

def write_arc(path: Path, n: int = 12) -> Path:
    """An ARC-Challenge-format file (AI2 jsonl) of n science questions."""
    rows = [{"id": f"arc-{i:02d}", "answerKey": "ABCD"[i % 4],
             "question": {"stem": f"Science question arc-{i:02d}?",
                          "choices": [{"label": label, "text": f"choice {label}{i}"} for label in "ABCD"]}}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arc_config(tmp_path: Path, model_dir: Path, shots, **eval_settings) -> Path:
    """The tiny experiment with a second, out-of-domain test set: an ARC file with `shots`."""
    arc = write_arc(tmp_path / "ARC-Challenge-Dev.jsonl")
    held_out = {"name": "held-out", "dataset": str(tmp_path / "pool.jsonl"), "part": "test", "test_size": 12,
                "split_seed": 0}
    return tiny_config(tmp_path, model_dir, methods=["vanilla"],
                       tests=[held_out, {"name": "arc", "dataset": str(arc), "domain": "out", "shots": shots}],
                       eval={"max_new_tokens": 2, "batch_size": 8, "bootstrap": 0, "shots": 2, **eval_settings})


def test_a_test_entry_carves_its_own_shots_out_of_its_file(tmp_path, tiny_model_dir):
    from rait.data.loaders import load_dataset
    from rait.data.split import carve_shots
    from rait.layout import eval_path

    path = arc_config(tmp_path, tiny_model_dir, {"size": 4, "split_seed": 0})
    arc = tmp_path / "ARC-Challenge-Dev.jsonl"
    the_run = Run(load_config(path), tmp_path / "run", tmp_path)
    carved = carve_shots(load_dataset(str(arc)), 4, seed=0)[0].items
    tested = [item["id"] for item in the_run.datasets["arc"].items]
    assert len(tested) == 8 and not set(tested) & {s["id"] for s in carved}
    assert sorted(tested + [s["id"] for s in carved]) == [f"arc-{i:02d}" for i in range(12)]
    stages = {stage.name: stage.config for stage in the_run.stages}
    for name in ("eval/init-basic/arc", "eval/init-refuse/arc", "eval/vanilla/arc"):
        ecfg = stages[name]
        assert (ecfg.shot_source, ecfg.shot_split, ecfg.shot_size, ecfg.shot_split_seed) == (str(arc), None, 4, 0)
    assert stages["eval/init-basic/held-out"].shot_size is None  # the other test keeps its own source
    assert stages["eval/init-basic/held-out"].shot_source is None  # (a generic file: built-in shots)

    # the initial model's evaluation, run: its prompts hold the carved ARC shots, never a test item's
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir), "--only", "eval/init-basic/arc"]) == 0
    result = json.loads(eval_path(run_dir, "init-basic", "arc", "basic").read_text())
    assert result["n"] == 8
    record = result["prompt_info"]["shot_examples"]
    assert record["ids"] == {"science": [s["id"] for s in carved[:2]]} and record["fallback_to_builtin"] == []
    assert record["carve"] == {"size": 4, "split_seed": 0} and record["carved_from_test_set"] is True
    assert result["dataset_info"]["shots_carved_out"] == {"size": 4, "split_seed": 0}
    rows = [json.loads(line) for line in
            eval_path(run_dir, "init-basic", "arc", "basic").with_suffix(".items.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == tested
    for row in rows:
        assert all(shot["question"] in row["prompt"] for shot in carved[:2])
        assert row["prompt"].count("Science question") == 3 and "general knowledge" not in row["prompt"]


def test_a_test_entrys_shots_are_part_of_its_eval_fingerprints(tmp_path, tiny_model_dir):
    def fingerprints(shots):
        return Run(load_config(arc_config(tmp_path, tiny_model_dir, shots)), tmp_path / "run", tmp_path).fingerprints

    before = fingerprints({"size": 4, "split_seed": 0})
    for changed in ({"size": 4, "split_seed": 1}, {"size": 5, "split_seed": 0}):
        after = fingerprints(changed)
        differ = {name for name in before if before[name] != after[name]}
        assert {"eval/init-basic/arc", "eval/init-refuse/arc", "eval/vanilla/arc", "report"} == differ
    assert fingerprints({"size": 4, "split_seed": 0}) == before


@pytest.mark.parametrize("shots, message", [
    ({"sise": 4}, "tests[1].shots: unknown key 'sise'; did you mean 'size'?"),
    ({"size": 0}, "tests[1].shots.size: must be >= 1, got 0"),
    ({"size": 2.5}, "tests[1].shots.size: expected int, got float"),
    ({"split_seed": 1}, "tests[1].shots.size: required when the shots are carved out of the test set itself"),
    ({"size": 13}, "13 shots asked for, but it holds only 12 items"),
    ({"size": 12}, "12 shots carved out of its 12 items leave nothing to test"),
    ("five", "tests[1].shots: must be a mapping {dataset, split, size, split_seed}, got str"),
    ({"dataset": "ARC-Challenge-Dev.jsonl"},
     "tests[1].shots: eval: the test set 'arc' overlaps its shot source"),
])
def test_bad_test_shots_are_one_clear_error(tmp_path, tiny_model_dir, shots, message):
    with pytest.raises(RaitError) as err:
        load_config(arc_config(tmp_path, tiny_model_dir, shots))
    assert message in str(err.value)
    if "overlaps" in message:
        assert "12 of its 12 items are among the 12 shots" in str(err.value)


def test_a_carve_in_the_eval_section_points_to_the_test_entry(tmp_path, tiny_model_dir):
    with pytest.raises(RaitError, match=r"eval.shot_size: shots are carved per test set; give the test entry "
                                        r"its own shots: \{size: K, split_seed: S\}"):
        load_config(arc_config(tmp_path, tiny_model_dir, {"size": 4}, shot_size=4))


def test_more_shots_per_prompt_than_a_test_carves_is_an_error_before_anything_runs(tmp_path, tiny_model_dir):
    path = arc_config(tmp_path, tiny_model_dir, {"size": 1})
    with pytest.raises(RaitError, match="tests 'arc': eval: 2 shots per prompt asked for, but only 1 are carved"):
        Run(load_config(path), tmp_path / "run", tmp_path)


def test_dry_run_prints_plan_without_running(tmp_path, tiny_model_dir, capsys):
    path = tiny_config(tmp_path, tiny_model_dir)
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "new  probe" in err and "new  train/craft" in err and "new  report" in err
    assert not (tmp_path / "run").exists()


def test_overrides_set_keys_for_one_run_and_are_recorded(tmp_path, tiny_model_dir, capsys):
    from rait.pipeline import apply_overrides

    path = tiny_config(tmp_path, tiny_model_dir)
    text = path.read_text()
    cfg = load_config(path, ["train.epochs=2", "seed=3", "tests.0.limit=5", "build.idk_ratio=0.25",
                             "methods=[craft]", "probe.template=plain"])
    assert (cfg.train["epochs"], cfg.seed, cfg.tests[0]["limit"], cfg.build["idk_ratio"], cfg.methods) == \
        (2, 3, 5, 0.25, ["craft"])
    # the same plan as a file that says so: overrides change fingerprints exactly like an edit
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**yaml.safe_load(text), "seed": 3}))
    assert (Run(load_config(path, ["seed=3"]), tmp_path / "r1", tmp_path).fingerprints
            == Run(load_config(edited), tmp_path / "r2", tmp_path).fingerprints)
    assert main(["run", str(path), "train.epochs=2", "--seed", "3", "--run-dir", str(tmp_path / "run"),
                 "build.size=10", "--dry-run"]) == 0  # overrides before and after flags
    assert "overrides: train.epochs=2 build.size=10 seed=3" in capsys.readouterr().err
    assert main(["run", str(path), "train.epoch=1", "--print-config"]) == 2  # a misspelt key: did you mean
    assert "unknown key 'epoch'" in capsys.readouterr().err
    assert main(["run", str(path), "train.epochs=1", "--seed", "4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed"] == 4 and printed["train"]["epochs"] == 1 and printed["probe"]["batch_size"] == 8
    assert path.read_text() == text  # the file itself is never changed
    for bad, message in [("epochs", "write KEY=VALUE"), ("train..epochs=1", "write KEY=VALUE"),
                         ("tests.3.limit=1", "a list of 1; '3' is not an index of it"),
                         ("seed.x=1", "seed is a value (0), not a mapping"),
                         ("train.epochs=[1", "the value is not valid YAML")]:
        with pytest.raises(RaitError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_config(path, [bad])
    raw = {"a": {"b": 1}, "l": [{"x": 1}]}
    assert apply_overrides(raw, ["a.c.d=x", "l.0.x=2"]) == {"a": {"b": 1, "c": {"d": "x"}}, "l": [{"x": 2}]}
    assert raw == {"a": {"b": 1}, "l": [{"x": 1}]}  # a copy: the read mapping is untouched


def _final_metrics(run_dir: Path) -> dict:
    out = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        result = json.loads(path.read_text())
        out[path.name] = {k: result[k] for k in ("n", "correct", "wrong", "refused", "Pc", "Pw", "THS")}
    return out


def _rait(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "rait.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def test_run_end_to_end_cached_and_killed_runs_agree(tmp_path, tiny_model_dir):
    path = tiny_config(tmp_path, tiny_model_dir)
    clean = tmp_path / "clean"
    proc = _rait("run", str(path), "--run-dir", str(clean))
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    manifest = json.loads((clean / "manifest.json").read_text())
    assert all(entry["status"] == "done" for entry in manifest["stages"].values())
    assert (clean / "report" / "report.html").exists()
    metrics = _final_metrics(clean)
    assert len(metrics) == 2 + 3  # init basic + refuse, three tuned models

    # a second run is served from the cache
    t0 = time.time()
    proc = _rait("run", str(path), "--run-dir", str(clean))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert _final_metrics(clean) == metrics
    assert time.time() - t0 < 60

    # kill -9 in the middle, then re-run: same final metrics as the uninterrupted run
    killed = tmp_path / "killed"
    proc = _rait("run", str(path), "--run-dir", str(killed), start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            stages = json.loads((killed / "manifest.json").read_text())["stages"]
        except (OSError, ValueError):
            stages = {}
        if sum(entry["status"] == "done" for entry in stages.values()) >= 4:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = _rait("run", str(path), "--run-dir", str(killed))
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert _final_metrics(killed) == metrics

    # an ablation in its own directory adopts the stages it shares with the finished run
    variant_cfg = tiny_config(tmp_path, tiny_model_dir, methods=["craft"],
                              build={"size": 12, "idk_ratio": 0.25, "allow_fewer": True})
    variant = tmp_path / "variant"
    proc = _rait("run", str(variant_cfg), "--run-dir", str(variant), "--reuse-from", str(clean))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    stages = json.loads((variant / "manifest.json").read_text())["stages"]
    shared = {"probe", "rehearse", "eval/init-basic/held-out", "eval/init-refuse/held-out"}
    assert {name for name, entry in stages.items() if entry.get("reused_from")} == shared
    assert stages["build/craft"]["status"] == "done" and "reused_from" not in stages["build/craft"]
    assert (variant / "probe" / "knowledge.jsonl").read_bytes() == (clean / "probe" / "knowledge.jsonl").read_bytes()
    for name in ("init-basic__held-out__basic.json", "init-refuse__held-out__refuse.json"):
        assert _final_metrics(variant)[name] == metrics[name]
    assert not list(variant.rglob("*.reuse-tmp"))
    # the baseline's per-item rows came along: THS is paired and over-refusal is counted
    craft = json.loads((variant / "eval" / "craft__held-out__tuned.json").read_text())
    assert craft["baseline"]["paired"] and craft["over_conservative"] is not None


def test_reuse_from_a_directory_that_is_not_a_run_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    path = tiny_config(tmp_path, tiny_model_dir)
    code = main(["run", str(path), "--run-dir", str(tmp_path / "run"), "--reuse-from", str(tmp_path / "elsewhere")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--reuse-from" in err and "not a run directory" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("task", ["mcqa", "oeqa"])
def test_chat_template_run_end_to_end(tmp_path, tiny_chat_model_dir, task):
    """The paper's path on a tiny instruct-style model: `template: chat` for every stage — the
    probe and the initial model zero-shot in the chat template, chat RAIT sets through the
    conflict stage, training and evaluation."""
    if task == "oeqa":
        pool = tmp_path / "oeqa.jsonl"
        pool.write_text("".join(json.dumps({"id": f"o{i}", "question": f"What is {i} plus one?",
                                            "answers": [str(i + 1)]}) + "\n" for i in range(30)))
        # a random model never answers right, so nothing qualifies for rehearsal: no flow methods
        extra = {"probe": {"batch_size": 8, "samples": 2, "max_new_tokens": 4}, "methods": ["vanilla", "cor"]}
    else:
        pool, extra = write_pool(tmp_path / "pool.jsonl"), {"methods": ["vanilla", "craft"]}
    last = extra["methods"][-1]
    path = tiny_config(tmp_path, tiny_chat_model_dir, task=task, template="chat",
                       pool={"dataset": str(pool), "part": "pool", "test_size": 12, "split_seed": 0},
                       tests=[{"name": "held-out", "dataset": str(pool), "part": "test", "test_size": 12,
                               "split_seed": 0}], **extra)
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 0
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(entry["status"] == "done" for entry in stages.values())
    meta = json.loads((run_dir / "probe" / "knowledge.jsonl.meta.json").read_text())
    assert meta["template"] == "chat" and meta["config"]["template"] == "chat"
    if task == "mcqa":
        assert meta["shots"]["ids"] == {"maths": [], "letters": []}  # chat: zero-shot by default
    base = json.loads((run_dir / "eval" / "init-basic__held-out__basic.json").read_text())
    assert base["prompt_info"]["kind"] == "chat" and base["prompt_info"]["shots"] == 0
    assert base["prompt_info"]["example"].startswith("<bos><start_of_turn>user\n")
    assert base["prompt_info"]["example"].count("<bos>") == 1
    rows = [json.loads(line) for line in (run_dir / "build" / f"{last}.jsonl").read_text().splitlines()]
    assert all(row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant" for row in rows)
    if task == "mcqa":  # the rehearsal follows the build's template
        rehearsal = (run_dir / "rehearse" / "rehearsal_set.jsonl").read_text().splitlines()
        assert all(isinstance(json.loads(line)["prompt"], list) for line in rehearsal)
    assert json.loads((run_dir / "conflict" / f"{last}.json").read_text())["n"] == len(rows)
    tuned = json.loads((run_dir / "eval" / f"{last}__held-out__tuned.json").read_text())
    assert tuned["prompt_info"]["template"] == "chat" and tuned["baseline"]["paired"]
