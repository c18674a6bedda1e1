import json
import re
from pathlib import Path
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait import knowledge, methods
from rait.stages import build as build_stage
from rait.cli import main
from rait.errors import RaitError
from rait.methods import Selection, register_method
from rait.stages.build import BuildConfig, build_rait_set


def oeqa_row(i, correctness, certainty, flow=None):
    row = {"id": f"q{i}", "task": "oeqa", "question": f"Question number {i}?", "answers": [f"ans{i}", "alias"],
           "correctness": correctness, "certainty": certainty, "samples": ["x"] * 3}
    if flow is not None:
        row["flow"] = flow
    return row


# (correctness, certainty, flow): q0-q3 are vanilla candidates (q3 sits on the 0.5 threshold);
# q4-q9 are IdK candidates; q4 and q9 rose after rehearsal, q6 and q8 fell, q5 and q7 stayed.
SPEC = [(1.0, 0.9, 0.0), (0.8, 0.5, 0.1), (0.6, 0.95, -0.2), (0.5, 0.3, 0.0), (0.4, 0.2, 0.3),
        (0.3, 0.6, 0.0), (0.2, 0.1, -0.1), (0.0, 0.8, 0.0), (0.1, 0.4, -0.1), (0.0, 0.05, 0.2)]
VANILLA = {"q0", "q1", "q2", "q3"}
IDK = {"q4", "q5", "q6", "q7", "q8", "q9"}


def table(with_flow=True):
    return [oeqa_row(i, c, k, f if with_flow else None) for i, (c, k, f) in enumerate(SPEC)]


def ids(rows, label=None):
    return {r["id"] for r in rows if label is None or r["label"] == label}


def build(tbl=None, **kw):
    return build_rait_set(table() if tbl is None else tbl, BuildConfig(**kw))


def test_vanilla_keeps_answers_and_never_refuses():
    rows, summary = build(method="vanilla", size=7)
    assert len(rows) == 7 and ids(rows) <= VANILLA | IDK
    assert all(r["label"] == "vanilla" and r["completion"] == f" ans{r['id'][1:]}" for r in rows)
    assert summary["counts"] == {"vanilla": 7, "idk": 0}


def test_cor_splits_by_threshold():
    rows, _ = build(method="cor", size=5, idk_ratio=0.4)
    assert ids(rows, "vanilla") <= VANILLA and len(ids(rows, "vanilla")) == 3
    assert ids(rows, "idk") <= IDK and len(ids(rows, "idk")) == 2
    idk = [r for r in rows if r["label"] == "idk"]
    assert all(r["completion"] == " I don't know" for r in idk)
    assert all(r["prompt"].startswith("Answer the following question, and if you don't know") for r in rows)
    assert all(r["prompt"].endswith("\nAnswer:") for r in rows)


def test_corcer_ranks_by_certainty():
    rows, _ = build(method="corcer", size=5, idk_ratio=0.4)
    assert ids(rows, "vanilla") == {"q2", "q0", "q1"}  # certainty .95, .9, .5 (q3 has .3)
    assert ids(rows, "idk") == {"q9", "q6"}  # the least certain: .05, .1


def test_corflow_drops_rose_then_samples():
    rows, summary = build(method="corflow", size=8, idk_ratio=0.5)
    assert ids(rows, "idk") == {"q5", "q6", "q7", "q8"}  # q4, q9 rose
    assert ids(rows, "vanilla") == VANILLA
    assert summary["removed"] == {"flow": 2}


def test_craft_flow_then_certainty_under_both_rules():
    rows, summary = build(method="craft", size=5, idk_ratio=0.4)
    assert ids(rows, "idk") == {"q6", "q8"}  # least certain after dropping q4, q9
    assert ids(rows, "vanilla") == {"q2", "q0", "q1"}
    assert summary["removed"] == {"flow": 2}
    rows, summary = build(method="craft", size=4, idk_ratio=0.25, flow_rule="keep-fell")
    assert ids(rows, "idk") == {"q6"}  # only q6, q8 fell; q6 is the less certain
    assert summary["removed"] == {"flow": 4}
    assert all(r["flow"] is not None for r in rows)


def test_flow_methods_need_rehearsal():
    with pytest.raises(RaitError, match="rait rehearse"):
        build(table(with_flow=False), method="craft", size=4)
    with pytest.raises(RaitError, match="rait rehearse"):
        build(table(with_flow=False), method="corflow", size=4)
    rows, _ = build(table(with_flow=False), method="corcer", size=4)
    assert all("flow" not in r for r in rows)


def test_too_few_names_counts_and_allow_fewer_shrinks():
    with pytest.raises(RaitError, match=r"idk: need 3, have 2") as err:
        build(method="craft", size=10, idk_ratio=0.3, flow_rule="keep-fell")
    assert "vanilla: need 7, have 4" in str(err.value)
    rows, summary = build(method="craft", size=10, idk_ratio=0.3, flow_rule="keep-fell", allow_fewer=True)
    assert summary["counts"] == {"vanilla": 4, "idk": 2} and len(rows) == 6
    assert len(ids(rows)) == 6  # never with replacement
    assert "allow-fewer" in summary["notes"][0]


def test_deterministic_shuffled_and_independent_of_row_order():
    a, _ = build(method="cor", size=6, idk_ratio=0.5, seed=3)
    b, _ = build(method="cor", size=6, idk_ratio=0.5, seed=3)
    assert a == b
    shuffled = table()
    random.Random(1).shuffle(shuffled)
    c, _ = build(shuffled, method="cor", size=6, idk_ratio=0.5, seed=3)
    assert a == c
    seeds = {tuple(sorted(ids(build(method="cor", size=6, idk_ratio=0.5, seed=s)[0]))) for s in range(8)}
    assert len(seeds) > 1  # the seed matters


def test_output_is_shuffled():
    tbl = [oeqa_row(i, 1.0 if i % 2 else 0.0, 0.5) for i in range(200)]
    rows, _ = build(tbl, method="cor", size=100, idk_ratio=0.5)
    labels = [r["label"] for r in rows]
    assert labels.count("idk") == 50 and labels != sorted(labels) and labels != sorted(labels, reverse=True)


def test_certainty_ties_broken_by_seeded_id_hash():
    tbl = [oeqa_row(i, 1.0, 0.5) for i in range(10)]
    picks = [ids(build(tbl, method="corcer", size=3, idk_ratio=0.0, seed=s)[0]) for s in (0, 0, 1)]
    assert picks[0] == picks[1]
    order = sorted(tbl, key=lambda r: methods.tie_key(0, r["id"]))
    assert picks[0] == {r["id"] for r in order[:3]}


def test_mcqa_targets_are_letters_and_refusal_has_period():
    tbl = [{"id": f"m{i}", "task": "mcqa", "question": "Q?", "choices": {"A": "a", "B": "b", "C": "c", "D": "d"},
            "target": "BD"[i % 2], "subject": "high_school_physics", "correctness": i / 9, "certainty": 0.5,
            "probs": {}, "entropy": 1.0} for i in range(10)]
    rows, _ = build(tbl, method="cor", size=4, idk_ratio=0.5)
    for r in rows:
        item = tbl[int(r["id"][1:])]
        assert r["completion"] == (" " + item["target"] if r["label"] == "vanilla" else " I don't know.")
        assert "high school physics" in r["prompt"] and "\nD. d\nAnswer:" in r["prompt"]


def test_refusal_text_and_chat_template():
    rows, _ = build(method="cor", size=4, idk_ratio=0.5, refusal_text="Not sure.", template="chat")
    idk = next(r for r in rows if r["label"] == "idk")
    assert idk["completion"] == [{"role": "assistant", "content": "Not sure."}]
    assert idk["prompt"][0]["role"] == "user" and idk["prompt"][0]["content"].endswith(idk["question"])


def test_exporters(tmp_path):
    k = tmp_path / "k.jsonl"
    k.write_text("\n".join(json.dumps(r) for r in table()) + "\n")
    for fmt, key in [("messages", "messages"), ("alpaca", "instruction"), ("xtuner", "conversation")]:
        cfg = BuildConfig(method="cor", size=4, idk_ratio=0.5, format=fmt)
        out = tmp_path / f"set_{fmt}.jsonl"
        build_stage.build(cfg, k, out)
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(written) == 4 and all(key in r for r in written)
        idk = next(r for r in written if r["label"] == "idk")
        if fmt == "messages":
            assert [m["role"] for m in idk["messages"]] == ["user", "assistant"]
            assert idk["messages"][1]["content"] == "I don't know"
        if fmt == "alpaca":
            assert idk["output"] == "I don't know" and idk["input"] == ""
        if fmt == "xtuner":
            assert idk["conversation"] == [{"input": idk["conversation"][0]["input"], "output": "I don't know"}]
        meta = json.loads((tmp_path / f"set_{fmt}.jsonl.meta.json").read_text())
        assert meta["format"] == fmt and meta["prompt_format"] == {"task": "oeqa", "style": "refuse",
                                                                   "template": "plain"}
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {"set_alpaca": {"file_name": "set_alpaca.jsonl", "columns": {
        "prompt": "instruction", "query": "input", "response": "output"}}}


def test_registry_duplicates_and_did_you_mean():
    with pytest.raises(RaitError, match="already registered"):
        register_method("craft")(lambda t, c, r: Selection([], []))
    with pytest.raises(RaitError, match="did you mean 'craft'"):
        methods.get_method("crafT")


def test_user_method_from_file(tmp_path):
    user = tmp_path / "mine.py"
    user.write_text("from rait.methods import Selection, split_by_correctness\n"
                    "def only_sure(table, cfg, rng):\n"
                    "    van, idk = split_by_correctness(table, 0.99)\n"
                    "    return Selection(van[:cfg.size], [])\n")
    rows, _ = build(method=f"{user}:only_sure", size=5)
    assert ids(rows) == {"q0"}
    bad = tmp_path / "bad.py"
    bad.write_text("def twice(table, cfg, rng):\n    from rait.methods import Selection\n"
                   "    return Selection(table[:1], table[:1])\n")
    with pytest.raises(RaitError, match="twice"):
        build(method=f"{bad}:twice", size=2)
    with pytest.raises(RaitError, match="no function"):
        build(method=f"{bad}:nothing", size=2)


def test_table_validation_names_line_and_field(tmp_path):
    path = tmp_path / "k.jsonl"
    rows = table()
    rows[3]["certainty"] = 1.5
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RaitError, match=r"line 4, field 'certainty'"):
        knowledge.read_table(path)


def test_cli_build(tmp_path, capsys):
    k = tmp_path / "k.jsonl"
    k.write_text("\n".join(json.dumps(r) for r in table()) + "\n")
    out = tmp_path / "rait.jsonl"
    assert main(["build", "--knowledge", str(k), "--method", "craft", "--size", "5", "--idk-ratio", "0.4",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 vanilla + 2 IdK" in text and "removed 2" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert ids(rows, "idk") == {"q6", "q8"}
    meta = json.loads((tmp_path / "rait.jsonl.meta.json").read_text())
    assert meta["method"] == "craft" and meta["counts"] == {"vanilla": 3, "idk": 2}
    assert len(meta["knowledge"]["fingerprint"]) == 16 and meta["config"]["size"] == 5
    assert main(["build", "--knowledge", str(k), "--method", "crft", "--size", "5", "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "did you mean 'craft'" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_too_few_writes_nothing(tmp_path, capsys):
    k = tmp_path / "k.jsonl"
    k.write_text("\n".join(json.dumps(r) for r in table()) + "\n")
    out = tmp_path / "rait.jsonl"
    assert main(["build", "--knowledge", str(k), "--size", "100", "--out", str(out)]) == 2
    assert "need 80, have 4" in capsys.readouterr().err and not out.exists()


rows_strategy = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(-1, 1)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows_strategy, st.integers(1, 50), st.floats(0, 1), st.floats(0, 1),
       st.sampled_from(sorted(methods.METHODS)), st.sampled_from(methods.FLOW_RULES), st.integers(0, 5))
def test_selection_properties(spec, size, ratio, threshold, method, rule, seed):
    tbl = [oeqa_row(i, c, k, f) for i, (c, k, f) in enumerate(spec)]
    cfg = BuildConfig(method=method, size=size, idk_ratio=ratio, threshold=threshold, flow_rule=rule,
                      seed=seed, allow_fewer=True)
    rows, summary = build_rait_set(tbl, cfg)
    by_id = {r["id"]: r for r in tbl}
    assert len(ids(rows)) == len(rows) <= size  # no duplicates
    assert ids(rows) <= set(by_id)  # a subset of the table
    for r in rows:
        c = by_id[r["id"]]["correctness"]
        if method != "vanilla":
            assert (c >= threshold) == (r["label"] == "vanilla")
        if r["label"] == "idk" and method in ("corflow", "craft"):
            assert by_id[r["id"]]["flow"] <= 1e-9 if rule == "drop-rose" else by_id[r["id"]]["flow"] < 0
    want = methods.targets(cfg, refusals=method != "vanilla")
    assert summary["counts"]["vanilla"] <= want["vanilla"] and summary["counts"]["idk"] <= want["idk"]
    try:  # without allow_fewer: exact sizes, or an error
        strict, _ = build_rait_set(tbl, BuildConfig(**{**cfg.__dict__, "allow_fewer": False}))
        assert len(strict) == size and strict == rows
    except RaitError as exc:
        assert "too few candidates" in str(exc)


@settings(max_examples=50, deadline=None)
@given(rows_strategy, st.integers(1, 20), st.integers(0, 3))
def test_selection_independent_of_row_order(spec, size, seed):
    tbl = [oeqa_row(i, c, k, f) for i, (c, k, f) in enumerate(spec)]
    cfg = BuildConfig(method="cor", size=size, seed=seed, allow_fewer=True)
    shuffled = list(tbl)
    random.Random(seed).shuffle(shuffled)
    assert build_rait_set(tbl, cfg)[0] == build_rait_set(shuffled, cfg)[0]


def test_names_and_flow_needs():
    assert methods.method_names() == ["cor", "corcer", "corflow", "craft", "vanilla"]
    assert [m for m in methods.method_names() if methods.method_uses_flow(m)] == ["corflow", "craft"]


def test_documented_user_method_works(tmp_path):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "docmethods.py").write_text(blocks[0])
    spec = f"{tmp_path / 'docmethods.py'}:confident_only"
    for _ in range(2):  # importing the file again must not register the method twice
        rows, summary = build(method=spec, size=3, idk_ratio=0.67, allow_fewer=True)
        assert ids(rows, "vanilla") == {"q0"} and ids(rows, "idk") == {"q6", "q8"}
        assert summary["removed"] == {"flow": 2}
    with pytest.raises(RaitError, match="rait rehearse"):
        build(table(with_flow=False), method=spec, size=3)
    assert "confident-only" in methods.METHODS
    del methods.METHODS["confident-only"]


# ---- the reference's dead band (vanilla >= 0.51, IdK <= 0.49) ------------------------------

def five_of_ten_table():
    """Three questions answered right exactly 5 times of 10, around them clear cases."""
    spec = [(0.9, 0.9), (0.5, 0.8), (0.5, 0.2), (0.5, 0.6), (0.6, 0.4), (0.4, 0.3), (0.0, 0.1), (0.2, 0.5)]
    return [oeqa_row(i, c, k, flow=-0.1) for i, (c, k) in enumerate(spec)]


def test_threshold_alone_keeps_five_of_ten_as_vanilla():
    rows, summary = build(five_of_ten_table(), method="cor", size=8, idk_ratio=0.375)
    assert ids(rows, "vanilla") == {"q0", "q1", "q2", "q3", "q4"} and ids(rows, "idk") == {"q5", "q6", "q7"}
    assert summary["removed"] == {}


@pytest.mark.parametrize("method", ["cor", "corcer", "corflow", "craft"])
def test_dead_band_puts_five_of_ten_in_neither_set(method):
    rows, summary = build(five_of_ten_table(), method=method, size=8, idk_ratio=0.5, allow_fewer=True,
                          vanilla_min=0.51, idk_max=0.49)
    assert ids(rows, "vanilla") == {"q0", "q4"} and ids(rows, "idk") == {"q5", "q6", "q7"}
    assert summary["removed"]["dead_band"] == 3
    assert summary["removed"].get("flow", 0) == 0  # every flow fell: the flow filter keeps them all


def test_one_bound_alone_moves_only_its_side():
    tbl = five_of_ten_table()
    vanilla, idk = methods.split_by_correctness(tbl, 0.5, idk_max=0.45)  # vanilla stays >= 0.5
    assert ({r["id"] for r in vanilla}, {r["id"] for r in idk}) == ({"q0", "q1", "q2", "q3", "q4"},
                                                                     {"q5", "q6", "q7"})
    vanilla, idk = methods.split_by_correctness(tbl, 0.5, vanilla_min=0.55)  # IdK stays < 0.5
    assert ({r["id"] for r in vanilla}, {r["id"] for r in idk}) == ({"q0", "q4"}, {"q5", "q6", "q7"})
    _, summary = build(tbl, method="cor", size=5, idk_ratio=0.4, vanilla_min=0.5)  # a band set, empty
    assert summary["removed"] == {"dead_band": 0}
    # a user's method calling split_by_correctness(table, threshold) sees today's split
    assert [len(side) for side in methods.split_by_correctness(tbl, 0.6)] == [2, 6]


def test_cli_dead_band_flags_reproduce_the_reference(tmp_path, capsys):
    k = tmp_path / "k.jsonl"
    k.write_text("\n".join(json.dumps(r) for r in five_of_ten_table()) + "\n")
    out = tmp_path / "rait.jsonl"
    assert main(["build", "--knowledge", str(k), "--method", "cor", "--size", "5", "--idk-ratio", "0.6",
                 "--vanilla-min", "0.51", "--idk-max", "0.49", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vanilla >= 0.51, IdK <= 0.49" in text and "filter dead_band: removed 3 candidates in neither set" in text
    meta = json.loads((tmp_path / "rait.jsonl.meta.json").read_text())
    assert meta["summary"]["removed"] == {"dead_band": 3} and meta["counts"] == {"vanilla": 2, "idk": 3}
    assert (meta["config"]["vanilla_min"], meta["config"]["idk_max"]) == (0.51, 0.49)


@pytest.mark.parametrize("flags, message", [
    (["--idk-max", "0.5"], "--idk-max: must be below the vanilla bound 0.5"),
    (["--vanilla-min", "0.4", "--idk-max", "0.45"], "--idk-max: must be below the vanilla bound 0.4"),
    (["--vanilla-min", "0.4"], "--vanilla-min: must be >= threshold 0.5 unless idk_max is set"),
    (["--idk-max", "1.5"], "--idk-max: must be <= 1"),
    (["--vanilla-min", "-0.1"], "--vanilla-min: must be >= 0"),
])
def test_overlapping_or_unbounded_band_is_one_error(tmp_path, capsys, flags, message):
    k = tmp_path / "k.jsonl"
    k.write_text("\n".join(json.dumps(r) for r in five_of_ten_table()) + "\n")
    assert main(["build", "--knowledge", str(k), "--method", "cor", *flags, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()


def test_dead_band_from_yaml_section():
    from rait import config as config_mod

    cfg = config_mod.build(BuildConfig, {"vanilla_min": 0.51, "idk_max": 0.49}, where="build")
    assert (cfg.threshold, cfg.vanilla_min, cfg.idk_max) == (0.5, 0.51, 0.49)
    with pytest.raises(RaitError, match=r"build\.idk_max: must be below"):
        config_mod.build(BuildConfig, {"idk_max": 0.7}, where="build")


def test_a_table_row_without_its_task_builds_like_one_with_it():
    from rait.stages.build import BuildConfig, training_row

    oeqa = {"id": "q1", "question": "Capital of France?", "answers": ["Paris"], "correctness": 0.9,
            "certainty": 0.8, "samples": ["Paris"] * 3}
    mcqa = {"id": "m1", "question": "Q?", "choices": {"A": "a", "B": "b"}, "target": "A", "correctness": 0.2,
            "certainty": 0.1}
    for row, task in ((oeqa, "oeqa"), (mcqa, "mcqa")):
        implicit = training_row(row, "idk", BuildConfig())
        assert implicit == training_row({**row, "task": task}, "idk", BuildConfig()) and implicit["task"] == task
