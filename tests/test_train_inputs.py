"""Bad inputs to `rait train`: options, training rows, the output folder, broken model folders.
Every one ends in one RaitError naming what is wrong (file, line, field or option), before any
training, with nothing left behind. No test here trains a model."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rait import config as config_mod
from rait import models
from rait.errors import RaitError
from rait.stages import train as training
from rait.stages.train import TrainConfig, train_sft

NO_MODEL = "./no-such-model"  # wherever the model must never be reached
ROWS = [{"prompt": f"Question {i}?\nAnswer:", "completion": f" answer {i}"} for i in range(4)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def cli(argv: list[str], capsys) -> tuple[int, str]:
    from rait.cli import main

    status = main(["train", *argv])
    return status, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# ---- numeric options -----------------------------------------------------------------------------

BAD_OPTIONS = [
    ("--epochs", "inf"), ("--epochs", "nan"), ("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "1e309"),
    ("--learning-rate", "nan"), ("--learning-rate", "-1"), ("--learning-rate", "0"), ("--learning-rate", "inf"),
    ("--lora-r", "0"), ("--lora-alpha", "0"), ("--lora-dropout", "nan"), ("--lora-dropout", "1"),
    ("--lora-dropout", "-0.5"), ("--batch-size", "0"), ("--grad-accum", "-1"), ("--max-length", "0"),
    ("--warmup-ratio", "nan"), ("--warmup-ratio", "1"), ("--weight-decay", "inf"), ("--weight-decay", "-1"),
    ("--logging-steps", "0"), ("--save-steps", "0"), ("--seed", "-1"), ("--seed", "99999999999"),
]


@pytest.mark.parametrize("flag, value", BAD_OPTIONS)
def test_bad_numeric_option_is_one_error_naming_it(tmp_path, capsys, flag, value):
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--model", NO_MODEL, f"{flag}={value}"], capsys)
    assert status == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("rait train: error: train.")
    assert flag[2:].replace("-", "_") in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


NUMERIC_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)
                  if f.type in ("int", "float", "float | None")}
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**12),
                    st.sampled_from([0, -0.0, 1, 2**32, 1e-300, 1e300]))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(NUMERIC_FIELDS)), value=NUMBERS)
def test_generated_numeric_options_are_checked(name, value):
    """config.build either rejects a value naming the option, or keeps a finite, in-bounds number."""
    try:
        cfg = config_mod.build(TrainConfig, {name: value}, where="train")
    except RaitError as exc:
        assert f"train.{name}" in str(exc)
        return
    kept = getattr(cfg, name)
    assert isinstance(kept, (int, float)) and math.isfinite(kept)
    assert config_mod.number_problem(kept, NUMERIC_FIELDS[name].metadata["bounds"]) is None
    assert config_mod.check_values(cfg, "train") is None


def test_report_to_wandb_without_wandb_fails_before_the_model_loads(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RaitError, match=r"train.report_to: wandb is not installed \(pip install wandb\)"):
        config_mod.build(TrainConfig, {"report_to": "wandb"}, where="train")
    cfg = TrainConfig(model=NO_MODEL, report_to="wandb")  # made in code: train_sft checks it too
    with pytest.raises(RaitError, match="report_to: wandb is not installed") as err:
        train_sft(ROWS, tmp_path / "out", cfg, progress=False)
    assert NO_MODEL not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, field", [
    ({"target_modules": " , ,"}, "target_modules"),
    ({"method": "full", "dtype": "float16"}, "dtype"),
])
def test_cross_field_checks(overrides, field):
    with pytest.raises(RaitError, match=f"train.{field}:"):
        config_mod.build(TrainConfig, overrides, where="train")


def test_a_schedule_that_needs_options_of_its_own_is_refused_before_training():
    with pytest.raises(RaitError, match="train.lr_scheduler: 'reduce_lr_on_plateau' is not one of"):
        config_mod.build(TrainConfig, {"lr_scheduler": "reduce_lr_on_plateau"}, where="train")


def test_yaml_problems_name_the_yaml_file_and_flag_problems_do_not(tmp_path, capsys):
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("train:\n  epocs: 2\n  lora_r: 4\n")
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--config", str(yaml_file)], capsys)
    assert status == 2 and f"{yaml_file}: train: unknown key 'epocs'" in err
    yaml_file.write_text("train:\n  epochs: 2\n")
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--config", str(yaml_file), "--epochs", "nan"],
                      capsys)
    assert status == 2 and "error: train.epochs: must be a finite number" in err and str(yaml_file) not in err
    yaml_file.write_bytes(b"train: {epochs: [1,\n")
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--config", str(yaml_file)], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and f"{yaml_file}, line" in err


# ---- training rows -------------------------------------------------------------------------------

def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


BAD_FILES = {
    "non-utf8": (jsonl_bytes(ROWS[:1]) + b'{"prompt": "Q\xff?", "completion": " a"}\n', r", line 2: not UTF-8"),
    "array-line": (jsonl_bytes(ROWS[:1]) + json.dumps(ROWS[1:3]).encode() + b"\n",
                   r", line 2: expected a JSON object, got list"),
    "missing-completion": (jsonl_bytes(ROWS[:1] + [{"prompt": "Q?"}]), r", line 2, field 'completion': missing"),
    "missing-prompt": (jsonl_bytes([{"completion": " a"}]), r", line 1, field 'prompt': missing"),
    "empty": (b"", r": no training rows"),
    "blank-lines": (b"\n \n", r": no training rows"),
    "knowledge-table": (jsonl_bytes([{"id": "q1", "question": "Q?", "answers": ["a"], "correctness": 1.0,
                                      "certainty": 1.0}]), r"line 1, field 'prompt': missing: this is a knowledge table"),
    "messages-format": (jsonl_bytes([{"messages": [{"role": "user", "content": "Q?"}]}]),
                        r"field 'prompt': missing: this is a messages-format row.*--format trl"),
    "alpaca-format": (jsonl_bytes([{"instruction": "Q?", "input": "", "output": "a"}]), r"alpaca-format"),
    "weight-string": (jsonl_bytes([{**ROWS[0], "weight": "1"}]), r"line 1, field 'weight': must be a number"),
    "weight-negative": (jsonl_bytes([{**ROWS[0], "weight": -1}]), r"line 1, field 'weight'"),
    "weight-bool": (jsonl_bytes([{**ROWS[0], "weight": True}]), r"line 1, field 'weight'"),
    "weight-nan": (b'{"prompt": "Q?", "completion": " a", "weight": NaN}\n', r"line 1: not valid JSON \(NaN"),
    "weight-overflow": (b'{"prompt": "Q?", "completion": " a", "weight": 1e400}\n', r"line 1, field 'weight'"),
    "weight-huge": (jsonl_bytes([{**ROWS[0], "weight": 1e30}]), r"line 1, field 'weight'"),
    "weights-all-zero": (jsonl_bytes([{**row, "weight": 0} for row in ROWS]), r"field 'weight': is 0 on every row"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_training_file_is_one_error_naming_it(tmp_path, capsys, kind):
    content, expected = BAD_FILES[kind]
    data = tmp_path / "set.jsonl"
    data.write_bytes(content)
    with pytest.raises(RaitError, match=expected):
        training.load_rows(data)
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--model", NO_MODEL], capsys)
    lines = error_lines(err)
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"rait train: error: {data}")
    assert data.read_bytes() == content and not (tmp_path / "out").exists()


def test_knowledge_table_message_says_how_to_build_a_set(tmp_path):
    table = write_jsonl(tmp_path / "k.jsonl", [{"id": "q1", "question": "Q?", "answers": ["a"], "correctness": 1.0}])
    with pytest.raises(RaitError, match=rf"rait build --knowledge {table}"):
        training.load_rows(table)


def test_meta_sidecar_with_a_bad_prompt_format_names_it(tmp_path):
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    (tmp_path / "set.jsonl.meta.json").write_text(json.dumps({"prompt_format": "plain"}))
    with pytest.raises(RaitError, match=r"set.jsonl.meta.json, field 'prompt_format'"):
        training.read_prompt_format(data)
    (tmp_path / "set.jsonl.meta.json").write_text("{not json")
    with pytest.raises(RaitError, match=r"set.jsonl.meta.json.*not valid JSON"):
        training.read_prompt_format(data)


JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", 3]),
                                 "content": st.one_of(st.text(max_size=8), st.integers())})
FIELD = st.one_of(st.text(max_size=12), st.lists(MESSAGE, max_size=3), JUNK)
WEIGHT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**7), st.booleans(),
                   st.none(), st.text(max_size=4), JUNK)
ROW = st.dictionaries(st.sampled_from(["prompt", "completion", "weight", "messages", "question", "label"]),
                      st.one_of(FIELD, WEIGHT), max_size=4) | st.fixed_dictionaries(
    {"prompt": FIELD, "completion": FIELD}, optional={"weight": WEIGHT})


def well_formed(row: dict) -> bool:
    texts = [isinstance(row[f], str) and bool(row[f].strip()) for f in ("prompt", "completion")]
    chats = [isinstance(row[f], list) and len(row[f]) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in row[f])
        for f in ("prompt", "completion")]
    weight = row["weight"]
    return ((all(texts) or all(chats)) and isinstance(weight, float) and math.isfinite(weight)
            and 0 <= weight <= training.MAX_WEIGHT and set(row) == {"prompt", "completion", "weight"})


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.one_of(ROW, JUNK), min_size=1, max_size=4))
def test_generated_rows_are_accepted_well_formed_or_refused_naming_the_line(rows):
    try:
        checked, _ = training.load_rows(rows)
    except RaitError as exc:
        message = str(exc)
        assert message.startswith("<data>") and "\n" not in message
        assert ", line " in message or "no training rows" in message or "is 0 on every row" in message
        return
    assert len(checked) == len(rows) and all(well_formed(row) for row in checked)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=4))
def test_generated_rows_in_a_file_name_the_file_and_line(tmp_path, rows):
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(row, allow_nan=True) + "\n" for row in rows), encoding="utf-8")
    try:
        checked, source = training.load_rows(path)
    except RaitError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert source == str(path) and all(well_formed(row) for row in checked)


# ---- the output folder ---------------------------------------------------------------------------

@pytest.mark.parametrize("out, expected", [
    ("set.jsonl", "is the training data"),
    ("notes.txt", "exists and is not a folder"),
    ("notes.txt/model", "notes.txt is a file, not a folder"),
])
def test_bad_out_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch, out, expected):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    before = data.read_bytes()
    (tmp_path / "notes.txt").write_text("mine\n")
    status, err = cli(["set.jsonl", "--out", out, "--model", NO_MODEL], capsys)
    assert status == 2 and expected in err and len(error_lines(err)) == 1
    assert data.read_bytes() == before and (tmp_path / "notes.txt").read_text() == "mine\n"


def make_output(tmp_path, **files) -> training.Output:
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        path = out / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return training.train_output(out)


@pytest.mark.parametrize("marker", ["{not json", "[1, 2]", '"done"', '{"fingerprint": "x", "files": "all"}',
                                    '{"fingerprint": "x", "files": ["../../etc"]}', "NaN"])
def test_damaged_train_marker_is_a_clean_error(tmp_path, marker):
    output = make_output(tmp_path, **{models.TRAIN_INFO: marker, "model.safetensors": "w"})
    for overwrite in (False, True):
        with pytest.raises(RaitError, match=rf"{models.TRAIN_INFO}.*damaged `rait train` output"):
            training.prepare_out_dir(output, "fp", overwrite)
    assert (output.path / "model.safetensors").exists()
    if not marker.startswith("{\""):  # not a JSON object: eval cannot read the prompt format either
        with pytest.raises(RaitError, match=rf"{models.TRAIN_INFO}.*damaged: train the model again"):
            models.read_train_info(str(output.path))


@pytest.mark.parametrize("marker", ["{not json", "[]", '{"fingerprint": 3}'])
def test_damaged_checkpoints_marker(tmp_path, marker):
    name = f"{training.CHECKPOINTS}__{training.RUN_MARKER}"
    output = make_output(tmp_path, **{name: marker, f"{training.CHECKPOINTS}__checkpoint-3__state.json": "{}"})
    with pytest.raises(RaitError, match=rf"{training.RUN_MARKER}: missing or damaged.*--overwrite"):
        training.prepare_out_dir(output, "fp", False)
    assert training.prepare_out_dir(output, "fp", True) == "fresh"
    assert not output.path.exists()
    # without a checkpoint there is nothing to resume: a damaged marker does not matter
    output = make_output(tmp_path, **{name: marker})
    assert training.prepare_out_dir(output, "fp", False) == "fresh"


def test_overwrite_never_deletes_files_rait_did_not_write(tmp_path):
    output = make_output(tmp_path, **{models.TRAIN_INFO: json.dumps({"fingerprint": "old", "files": ["a.bin"]}),
                                      "a.bin": "w", "notes.txt": "mine"})
    with pytest.raises(RaitError, match=r"not a `rait train` output \(notes.txt"):
        training.prepare_out_dir(output, "new", True)
    assert (output.path / "notes.txt").read_text() == "mine" and (output.path / "a.bin").exists()
    (output.path / "notes.txt").unlink()
    assert training.prepare_out_dir(training.train_output(output.path), "new", True) == "fresh"
    assert not output.path.exists()


def test_a_publish_cut_short_is_recognised_as_this_stages_output(tmp_path):
    record = json.dumps({"fingerprint": "fp", "publishing": ["config.json", "model.safetensors"]})
    output = make_output(tmp_path, **{f"{training.CHECKPOINTS}__{training.RUN_MARKER}": record,
                                      "config.json": "{}", f"{training.PARTIAL}__model.safetensors": "w"})
    assert training.prepare_out_dir(output, "fp", False) == "resume"


def test_missing_model_files_are_not_complete(tmp_path):
    output = make_output(tmp_path, **{models.TRAIN_INFO: json.dumps({"fingerprint": "fp", "files": ["m.bin"]})})
    assert output.finished("fp") is None
    with pytest.raises(RaitError, match=r"is incomplete \(m.bin missing\); use --overwrite"):
        training.prepare_out_dir(output, "fp", False)


# ---- models: chat data, broken model folders ----------------------------------------------------

CHAT_ROWS = [{"prompt": [{"role": "user", "content": row["prompt"]}],
              "completion": [{"role": "assistant", "content": row["completion"]}]} for row in ROWS]


def test_chat_rows_for_a_model_without_chat_template(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                       "--device", "cpu"], capsys)
    lines = error_lines(err)
    assert status == 2 and len(lines) == 1
    assert f"{data}: the rows are chat conversations" in lines[0] and "--chat-template" in lines[0]
    assert "instruct model" in lines[0]
    assert not (tmp_path / "out").exists()


def broken_copy(tiny_model_dir, tmp_path, kind: str) -> Path:
    target = tmp_path / f"broken-{kind}"
    shutil.copytree(tiny_model_dir, target)
    if kind == "unknown-type":
        (target / "config.json").write_text('{"model_type": "nope"}')
    elif kind == "truncated-weights":
        weights = target / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])
    elif kind == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (target / name).unlink(missing_ok=True)
    return target


@pytest.mark.parametrize("kind", ["unknown-type", "truncated-weights", "no-tokenizer"])
def test_load_model_turns_a_broken_folder_into_one_error(tiny_model_dir, tmp_path, kind):
    broken = broken_copy(tiny_model_dir, tmp_path, kind)
    with pytest.raises(RaitError) as err:
        models.load_model(str(broken), "float32", device="cpu")
    message = str(err.value)
    assert message.startswith(f"{broken}: cannot load") and "\n" not in message
    assert "config.json" in message  # what to do: fix config.json / a complete model folder


@pytest.mark.parametrize("kind", ["unknown-type", "truncated-weights"])
def test_train_on_a_broken_model_folder_leaves_nothing(tiny_model_dir, tmp_path, capsys, kind):
    broken = broken_copy(tiny_model_dir, tmp_path, kind)
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    status, err = cli([str(data), "--out", str(tmp_path / "out"), "--model", str(broken), "--device", "cpu"], capsys)
    lines = error_lines(err)
    assert status == 2 and len(lines) == 1 and f"error: {broken}: cannot load the weights" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_lora_target_names_the_model_and_its_layers(tiny_model_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_model_dir), device="cpu", dtype="float32", target_modules="q_proj,nosuch")
    with pytest.raises(RaitError, match=r"target_modules: nosuch is not a module of .*q_proj"):
        training.make_trainer(cfg, training.load_rows(ROWS)[0], str(tiny_model_dir), tmp_path / "ck", False)


def test_rows_cut_off_entirely_by_max_length(tiny_model_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_model_dir), device="cpu", dtype="float32", max_length=2)
    with pytest.raises(RaitError, match=r"set: every row's completion lies beyond --max-length 2"):
        training.make_trainer(cfg, training.load_rows(ROWS)[0], str(tiny_model_dir), tmp_path / "ck", False,
                              source="set")
