"""The Python API (rait.api, docs/python-api.md): the README's notebook example end to end on the
tiny model, the three kinds of data, config keys checked as the CLI checks them, quiet by
default, and `import rait` staying light."""

import json
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import pytest

import rait
from rait.errors import RaitError

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The ```python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def demo_rows() -> list[dict]:
    """The demo OEQA file's rows as a user would read them (id, question, answers)."""
    path = resources.files("rait.data") / "demo" / "oeqa.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def close(a, b) -> bool:
    return a == pytest.approx(b, abs=1e-9)


# ---- the notebook ------------------------------------------------------------------------------

def test_the_readme_example_runs_end_to_end(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what it keeps lands here
    code = readme_example()
    assert code in (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    lines = code.splitlines()
    assert sum(line.startswith("MODEL = ") for line in lines) == 1
    ns = {"__name__": "readme"}
    exec("\n".join(f"MODEL = {str(tiny_model_dir)!r}" if line.startswith("MODEL = ") else line
                   for line in lines), ns)
    knowledge, rait_set, tuned, init, result, report = (
        ns[name] for name in ("knowledge", "rait_set", "tuned", "init", "result", "report"))

    # probe: 8 pool items, 2 samples each, numbers in range; the table is also a file and a Dataset
    assert isinstance(knowledge, rait.KnowledgeTable) and len(knowledge.rows) == 8
    for row in knowledge.rows:
        assert {"id", "task", "question", "answers", "correctness", "certainty", "samples"} <= set(row)
        assert len(row["samples"]) == 2 and 0 <= row["correctness"] <= 1 and 0 <= row["certainty"] <= 1
    assert knowledge.summary["n"] == 8 and knowledge.meta["stage"] == "probe"
    assert knowledge.path.is_file() and str(tmp_path) in str(knowledge.path)
    table = knowledge.to_dataset()
    assert len(table) == 8 and {"correctness", "certainty"} <= set(table.column_names)

    # build: the rows are the set, labels and counts agree
    assert isinstance(rait_set, rait.RaitSet) and 1 <= len(rait_set.rows) <= 8
    assert sum(rait_set.counts.values()) == len(rait_set.rows)
    assert all({"prompt", "completion", "label"} <= set(r) and r["label"] in ("vanilla", "idk")
               for r in rait_set.rows)

    # train: a model folder that is kept, with its record
    assert isinstance(tuned, rait.TrainedModel) and (tuned.path / "rait_train.json").is_file()
    assert tuned.info["steps"] >= 1 and tuned.info["data"]["rows"] == len(rait_set.rows)
    assert tuned.info["prompt_format"]["task"] == "oeqa"  # the set's format went with it

    # evaluate: rates add up to 1, THS is rait.ths of the rates against the baseline's
    for res in (init, result):
        assert isinstance(res, rait.EvalResult) and res["n"] == 6 and len(res.items) == 6
        assert close(res["Pc"] + res["Pw"] + res["Pr"], 1.0)
        assert {r["outcome"] for r in res.items} <= {"correct", "wrong", "refused", "unparsed"}
    assert init["THS"] is None and init["Pw"] > 0
    assert result["baseline"]["Pc"] == init["Pc"] and result["baseline"]["Pw"] == init["Pw"]
    assert close(result["THS"], rait.ths(result["Pc"], result["Pw"], init["Pc"], init["Pw"]))
    assert rait.ths is rait.metrics.ths
    assert result["prompt_info"]["kind"] == "instruction"  # the tuned model is asked as trained

    # report: both pages and the sections the inputs make
    assert isinstance(report, rait.Report) and report.markdown.is_file() and report.html.is_file()
    assert "Results" in report.sections and "corcer" in report.text and "init" in report.text
    assert all(Path(f).is_file() for f in report.figures)

    # the conflict diagnostic of the same set, in the initial model
    crss = rait.conflict(rait_set, model=str(tiny_model_dir), thresholds=[0.9])
    assert crss["n"] == len(rait_set.rows) and set(crss["crss"]) == {"0.9"}

    out = capsys.readouterr().out  # only the example's own prints
    assert out.splitlines()[0].startswith("8 ") and out.strip().endswith("report.html")


# ---- data --------------------------------------------------------------------------------------

def test_a_spec_a_list_and_a_dataset_give_the_same_rows_quietly(tmp_path, tiny_model_dir, capsys):
    import datasets

    rows = demo_rows()
    common = dict(part="pool", test_size=120, limit=3, samples=2, max_new_tokens=4,
                  model=str(tiny_model_dir), dtype="float32")
    out = tmp_path / "k.jsonl"
    from_spec = rait.probe("demo-oeqa", out=out, **common)
    # items in memory have no shot split of their own: name the one the spec uses by default
    shots = dict(shot_source="demo-oeqa", shot_split="shots")
    from_list = rait.probe(rows, **common, **shots)
    from_dataset = rait.probe(datasets.Dataset.from_list(rows), **common, **shots)
    assert len(from_spec.rows) == 3
    assert from_spec.rows == from_list.rows == from_dataset.rows
    assert from_spec.path == out and out.is_file() and Path(f"{out}.meta.json").is_file()
    assert [json.loads(line) for line in out.read_text().splitlines()] == from_spec.rows
    assert from_list.meta["dataset"]["name"] == "items-pool"  # as a spec's carved part is named
    assert capsys.readouterr() == ("", "")  # quiet by default: nothing from rait or the libraries
    assert "rait probe:" in from_spec.log and "mean correctness" in from_spec.log


def test_verbose_prints_what_the_cli_prints(tiny_model_dir, capsys):
    rait.probe(demo_rows()[:1], samples=1, shots=0, max_new_tokens=2, model=str(tiny_model_dir),
               dtype="float32", verbose=True)
    printed = capsys.readouterr()
    assert "rait probe: OEQA knowledge state" in printed.err and "mean correctness" in printed.out
    table = [{"id": f"q{i}", "task": "oeqa", "question": f"Q{i}?", "answers": [f"A{i}"], "correctness": i / 9,
              "certainty": 0.5} for i in range(10)]
    quiet = rait.build(table, method="cor", size=5)
    assert capsys.readouterr() == ("", "") and "method cor: 4 vanilla + 1 IdK" in quiet.log
    loud = rait.build(table, method="cor", size=5, verbose=True)
    assert "method cor: 4 vanilla + 1 IdK" in capsys.readouterr().out and loud.log == ""
    assert loud.rows == quiet.rows and loud.counts == {"vanilla": 4, "idk": 1}


def test_bad_items_are_one_error_before_any_model_loads():
    with pytest.raises(RaitError, match=r"rait.probe: items\[1\], field 'question': must be a non-empty string"):
        rait.probe([{"question": "Q?", "answers": ["A"]}, {"answers": ["B"]}], model="./no-such-model")
    with pytest.raises(RaitError, match="expected a dataset spec .* got int"):
        rait.evaluate(42, model="./no-such-model")
    with pytest.raises(RaitError, match=r"rait.probe.split: applies to a dataset spec"):
        rait.probe(demo_rows(), split="shots", model="./no-such-model")
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(demo_rows()[:2])})
    with pytest.raises(RaitError, match=r"datasets.DatasetDict with splits train; pass one split"):
        rait.probe(splits, model="./no-such-model")


def test_rehearse_joins_the_flow_and_craft_builds_from_it(tmp_path, tiny_model_dir):
    items = [{"id": f"m{i}", "question": f"Which number is {i}?", "subject": "general",
              "choices": {"A": str(i), "B": str(i + 1)}, "target": "AB"[i % 2]} for i in range(8)]
    knowledge = rait.probe(items, model=str(tiny_model_dir), dtype="float32", shots=0)
    rehearsed = rait.rehearse(items, knowledge, mcqa_min_prob=0.0, size=4, epochs=1, batch_size=4,
                              out=tmp_path / "rehearse")
    assert isinstance(rehearsed, rait.KnowledgeTable) and rehearsed.path == tmp_path / "rehearse" / "knowledge.jsonl"
    assert [r["id"] for r in rehearsed.rows] == [r["id"] for r in knowledge.rows]
    assert all(close(r["flow"], r["correctness_rehearsal"] - r["correctness"]) for r in rehearsed.rows)
    assert rehearsed.summary["rehearsal"]["n"] == 4 and (tmp_path / "rehearse" / "model").is_dir()
    craft = rait.build(rehearsed, method="craft", size=4, allow_fewer=True)
    assert len(craft.rows) == sum(craft.counts.values()) >= 1 and craft.meta["method"] == "craft"
    with pytest.raises(RaitError, match="needs 'flow' in every row; run `rait rehearse` first"):
        rait.build(knowledge, method="craft", size=4)


# ---- config keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: rait.probe("demo-oeqa", sampels=2), "rait.probe: unknown key 'sampels'; did you mean 'samples'?"),
    (lambda: rait.probe("demo-oeqa", test_sise=10), "rait.probe: unknown key 'test_sise'; did you mean 'test_size'?"),
    (lambda: rait.evaluate("demo-oeqa", baselne="x.json"), "did you mean 'baseline'?"),
    (lambda: rait.build([], sise=3), "rait.build: unknown key 'sise'; did you mean 'size'?"),
    (lambda: rait.train([], lora_rank=8), "rait.train: unknown key 'lora_rank'; did you mean 'lora_r'?"),
    (lambda: rait.rehearse("demo-oeqa", "k.jsonl", lerning_rate=1e-4), "did you mean 'learning_rate'?"),
    (lambda: rait.conflict([], treshold=[0.9]), "did you mean 'thresholds'?"),
    (lambda: rait.report("x.json", titel="t"), "rait.report: unknown key 'titel'; did you mean 'title'?"),
    (lambda: rait.probe("demo-oeqa", samples=0), "rait.probe.samples: must be >= 1, got 0"),
    (lambda: rait.probe("demo-oeqa", match="fuzzy"), "rait.probe.match: 'fuzzy' is not one of"),
    (lambda: rait.evaluate("demo-oeqa", bootstrap="many"), "rait.evaluate.bootstrap: invalid literal"),
])
def test_a_misspelt_or_bad_keyword_is_the_clis_error(call, message):
    with pytest.raises(RaitError) as caught:
        call()
    assert message in str(caught.value)


# ---- rait run ----------------------------------------------------------------------------------

def test_run_executes_a_config_and_returns_its_manifest(tmp_path, tiny_model_dir, capsys):
    import yaml

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"t{i}", "question": f"Which number is {i}?",
                                        "choices": {"A": str(i), "B": str(i + 1)}, "target": "AB"[i % 2]}) + "\n"
                            for i in range(20)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "api", "task": "mcqa", "model": str(tiny_model_dir), "dtype": "float32",
        "pool": {"dataset": str(pool), "part": "pool", "test_size": 5}, "methods": ["cor"],
        "tests": [{"name": "held-out", "dataset": str(pool), "part": "test", "test_size": 5}]}))
    done = rait.run(config, {"probe.shots": 2}, run_dir=tmp_path / "run", only="probe")
    assert isinstance(done, rait.RunResult) and done.path == tmp_path / "run"
    assert list(done.stages) == ["probe"] and done.stages["probe"]["status"] == "done"
    assert done.summary["probe"]["rows"] == 15 and done.manifest["overrides"] == ["probe.shots=2"]
    assert done.report is None and (tmp_path / "run" / "probe" / "knowledge.jsonl").is_file()
    assert capsys.readouterr() == ("", "") and "=== probe ===" in done.log
    with pytest.raises(RaitError, match="unknown key 'sampels'; did you mean 'samples'"):
        rait.run(config, ["probe.sampels=2"], run_dir=tmp_path / "run")


# ---- import rait stays light -------------------------------------------------------------------

def test_import_rait_stays_light():
    plain = subprocess.run([sys.executable, "-c", "import rait, sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "False"
    code = ("import rait, sys\n"
            "rait.probe, rait.train, rait.evaluate, rait.run, rait.KnowledgeTable, rait.score_answer, rait.ths\n"
            "heavy = ('torch', 'transformers', 'datasets', 'sentence_transformers', 'peft', 'trl')\n"
            "print([m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(('rait.stages', "
            "'rait.pipeline'))])\n")
    touched = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert touched.stdout.strip() == "[]"  # even the API's functions load nothing until called
    assert {"probe", "evaluate", "ths", "score_answer"} <= set(dir(rait))
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        rait.nosuch  # noqa: B018
