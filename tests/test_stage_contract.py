"""The stage contract (rait.stage), and one test per drift bug the contract removed: each would
have failed before the stages shared one definition of the rule."""

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rait import config, io, knowledge, methods, stage
from rait.cli import main
from rait.errors import RaitError
from rait.stages import build as build_stage


def table_rows(n=10, flow=None):
    rows = [{"id": f"q{i}", "task": "oeqa", "question": f"Q{i}?", "answers": [f"A{i}"],
             "correctness": i / (n - 1), "certainty": 0.5} for i in range(n)]
    if flow is not None:
        for row in rows:
            row["flow"] = flow
    return rows


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---- the contract ----------------------------------------------------------------------------

def test_sidecar_output_is_finished_only_with_its_fingerprint(tmp_path):
    out = stage.sidecar_output(tmp_path / "set.jsonl", partials=[tmp_path / ".set.progress"])
    assert out.marker == tmp_path / "set.jsonl.meta.json" == stage.meta_path(out.path)
    assert out.finished() is None
    out.path.write_text("{}\n")
    (tmp_path / ".set.progress").write_text("{}")
    out.finish({"fingerprint": "abc"})
    assert not (tmp_path / ".set.progress").exists()  # partial work goes when the marker is written
    assert out.finished("abc") == {"fingerprint": "abc"} and out.finished("other") is None
    out.path.unlink()  # a marker without its output is not a finished output
    assert out.finished("abc") is None
    out.clear()
    assert not out.marker.exists()


def test_a_damaged_marker_means_not_done(tmp_path):
    out = stage.result_output(tmp_path / "r.json")
    out.path.write_text("{not json")
    assert out.recorded() is None and out.finished() is None


def test_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        io.write_text_atomic(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        existing = tmp_path / "old.txt"
        existing.write_text("y")
        existing.chmod(0o640)
        io.write_text_atomic(existing, "z")
        assert existing.stat().st_mode & 0o777 == 0o640 and existing.read_text() == "z"
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_output_that_is_an_input_a_folder_or_below_a_file_is_refused(tmp_path):
    data = write_rows(tmp_path / "k.jsonl", table_rows())
    with pytest.raises(RaitError, match="is also an input"):
        io.check_output_path(data, [data])
    with pytest.raises(RaitError, match="is a directory"):
        io.check_output_path(tmp_path)
    with pytest.raises(RaitError, match="is a file, not a folder"):
        io.check_output_path(data / "x.jsonl")
    assert data.read_text().count("\n") == 10


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_device_is_never_replaced(tmp_path):
    import stat as stat_mod

    with pytest.raises(RaitError, match="not a regular file"):
        io.write_text_atomic("/dev/full", "x")
    assert stat_mod.S_ISCHR(Path("/dev/full").stat().st_mode)


# ---- drift bug: errors in a run named `<knowledge>` instead of the file --------------------

def test_build_errors_name_the_knowledge_file_and_line(tmp_path):
    rows = table_rows()
    rows[4]["correctness"] = "high"
    path = write_rows(tmp_path / "k.jsonl", rows)
    with pytest.raises(RaitError, match=rf"{path}, line 5, field 'correctness'"):
        build_stage.build(build_stage.BuildConfig(method="cor", size=4), path, tmp_path / "set.jsonl")
    assert not (tmp_path / "set.jsonl").exists()


def test_build_never_overwrites_its_knowledge_table(tmp_path, capsys):
    path = write_rows(tmp_path / "k.jsonl", table_rows())
    before = path.read_bytes()
    assert main(["build", "--knowledge", str(path), "--out", str(path), "--method", "cor", "--size", "4"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert path.read_bytes() == before


# ---- drift bug: the flow counted against 0 in some places and FLOW_EPS in others ------------

@settings(max_examples=200, deadline=None)
@given(st.floats(-1, 1, allow_nan=False) | st.sampled_from([0.0, 1e-12, -1e-12, 1e-9, -1e-9, 2e-9]))
def test_one_flow_rule_for_counts_and_selection(flow):
    row = {**table_rows(2)[0], "flow": flow}
    direction = knowledge.flow_direction(flow)
    kept_drop_rose = methods.flow_filter([row], "drop-rose")[0]
    kept_keep_fell = methods.flow_filter([row], "keep-fell")[0]
    assert bool(kept_drop_rose) == (direction != "rose")
    assert bool(kept_keep_fell) == (direction == "fell")
    assert knowledge.flow_counts([flow])[direction] == 1


def test_round_off_flow_is_unchanged_everywhere():
    rows = [{"flow": f} for f in (1e-12, -1e-12, 0.0, 0.25, -0.25)]
    assert knowledge.flow_counts(r["flow"] for r in rows) == {"rose": 1, "fell": 1, "same": 3}


# ---- drift bug: NaN passed every numeric check ----------------------------------------------

@pytest.mark.parametrize("field, value", [("correctness", math.nan), ("certainty", math.inf),
                                          ("flow", math.nan), ("flow", 1.5), ("correctness", -0.1)])
def test_non_finite_or_out_of_range_table_fields_are_refused(field, value):
    rows = table_rows(flow=0.0)
    rows[2][field] = value
    with pytest.raises(RaitError, match=f"line 3, field '{field}'"):
        knowledge.check_table(rows, "k.jsonl")


@settings(max_examples=150, deadline=None)
@given(size=st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True)),
       ratio=st.floats(allow_nan=True, allow_infinity=True), threshold=st.floats(allow_nan=True, allow_infinity=True))
def test_build_options_are_finite_and_in_range_or_refused(size, ratio, threshold):
    try:
        cfg = config.build(build_stage.BuildConfig, {"size": size, "idk_ratio": ratio, "threshold": threshold})
    except RaitError as exc:
        assert str(exc).startswith("config.")
        return
    assert cfg.size >= 1 and 0 <= cfg.idk_ratio <= 1 and 0 <= cfg.threshold <= 1


def test_nan_threshold_with_allow_fewer_writes_nothing(tmp_path, capsys):
    path = write_rows(tmp_path / "k.jsonl", table_rows())
    out = tmp_path / "set.jsonl"
    assert main(["build", "--knowledge", str(path), "--out", str(out), "--threshold", "nan", "--allow-fewer"]) == 2
    assert "--threshold: must be a finite number" in capsys.readouterr().err
    assert not out.exists() and not stage.meta_path(out).exists()


def test_ids_one_and_quoted_one_are_refused_in_a_table():
    rows = table_rows()
    rows[0]["id"], rows[1]["id"] = 1, "1"
    with pytest.raises(RaitError, match="field 'id'"):
        knowledge.check_table(rows, "k.jsonl")


def test_a_rait_set_is_not_taken_for_a_knowledge_table(tmp_path):
    k = write_rows(tmp_path / "k.jsonl", table_rows())
    build_stage.build(build_stage.BuildConfig(method="cor", size=4, idk_ratio=0.5), k, tmp_path / "set.jsonl")
    with pytest.raises(RaitError, match="is a RAIT set"):
        knowledge.read_table(tmp_path / "set.jsonl")


# ---- drift bug: a user method's mistakes were raw tracebacks --------------------------------

@pytest.mark.parametrize("body, message", [
    ("def m(table):\n    return None\n", "a method is fn\\(table, cfg, rng\\)"),
    ("def m(table, cfg, rng):\n    return [1, 2]\n", "returned list, not a rait.methods.Selection"),
    ("def m(table, cfg, rng):\n    raise KeyError('oops')\n", "failed: KeyError"),
])
def test_user_method_mistakes_are_one_clean_error(tmp_path, body, message):
    user = tmp_path / "mine.py"
    user.write_text(body)
    path = write_rows(tmp_path / "k.jsonl", table_rows())
    with pytest.raises(RaitError, match=message):
        build_stage.build(build_stage.BuildConfig(method=f"{user}:m", size=4), path, tmp_path / "set.jsonl")


# ---- drift bug: the pipeline built each stage config twice ----------------------------------

def run_config(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    pool = tmp_path / "pool.jsonl"
    write_rows(pool, [{"id": f"t{i}", "question": f"Which number is {i}?",
                       "choices": {"A": str(i), "B": str(i + 1)}, "target": "AB"[i % 2]} for i in range(30)])
    cfg = {"name": "contract", "task": "mcqa", "model": str(model_dir), "dtype": "float32",
           "pool": {"dataset": str(pool), "part": "pool", "test_size": 10},
           "methods": ["cor"], "build": {"size": 6, "allow_fewer": True},
           "tests": [{"name": "held-out", "dataset": str(pool), "part": "test", "test_size": 10}],
           **overrides}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_stage_runs_exactly_the_config_it_was_fingerprinted_with(tmp_path, tiny_model_dir, monkeypatch):
    from rait.pipeline import Run, load_config

    the_run = Run(load_config(run_config(tmp_path, tiny_model_dir)), tmp_path / "run", tmp_path)
    build = next(s for s in the_run.stages if s.name == "build/cor")
    seen = []
    monkeypatch.setattr(build_stage, "build", lambda cfg, k, out: seen.append(cfg) or {"counts": {"vanilla": 0, "idk": 0}})
    build.run(build.config)
    assert seen == [build.config] and seen[0] is build.config
    evals = [s for s in the_run.stages if s.name.startswith("eval/")]
    for stage_ in evals:  # the baseline is part of the fingerprinted config, not patched in later
        expected = None if stage_.name == "eval/init-basic/held-out" else "init-basic__held-out__basic.json"
        assert (Path(stage_.config.baseline).name if stage_.config.baseline else None) == expected


def test_a_run_error_names_the_table_file(tmp_path, tiny_model_dir):
    from rait.pipeline import Run, load_config

    the_run = Run(load_config(run_config(tmp_path, tiny_model_dir)), tmp_path / "run", tmp_path)
    table = tmp_path / "run" / "probe" / "knowledge.jsonl"
    table.parent.mkdir(parents=True)
    rows = table_rows()
    rows[1]["certainty"] = 2
    write_rows(table, rows)
    build = next(s for s in the_run.stages if s.name == "build/cor")
    with pytest.raises(RaitError, match=rf"{table}, line 2, field 'certainty'"):
        build.run(build.config)


def test_a_bad_stage_setting_fails_before_any_stage_runs(tmp_path, tiny_model_dir, capsys):
    path = run_config(tmp_path, tiny_model_dir, sizes={"cor": -5})
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 2
    assert "run.yaml: sizes.cor: must be >= 1, got -5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---- drift bug: the default few-shot source was decided three ways ---------------------------

def test_one_shot_source_rule_for_the_verbs_and_the_run(tmp_path, tiny_model_dir):
    from rait.pipeline import Run, load_config
    from rait.prompts import with_shot_source
    from rait.stages.eval import EvalConfig
    from rait.stages.probe import ProbeConfig

    plain = with_shot_source(ProbeConfig(), "demo-mcqa", None)
    assert (plain.shot_source, plain.shot_split) == ("demo-mcqa", "dev")
    chat = with_shot_source(EvalConfig(template="chat"), "demo-mcqa", None)  # zero-shot: no source needed
    assert chat.shot_source is None
    own = with_shot_source(ProbeConfig(shot_source="x.jsonl"), "demo-mcqa", None)
    assert own.shot_source == "x.jsonl"
    # the run asks the same rule: a chat run's stages get no shot source (the run used to set one)
    pool = tmp_path / "pool.jsonl"
    path = run_config(tmp_path, tiny_model_dir, template="chat", chat_template="gemma",
                      pool={"dataset": "demo-mcqa", "part": "pool", "test_size": 10},
                      tests=[{"name": "t", "dataset": "demo-mcqa", "part": "test", "test_size": 10}])
    del pool
    the_run = Run(load_config(path), tmp_path / "run", tmp_path)
    for stage_ in the_run.stages:
        if stage_.name == "probe" or stage_.name.startswith("eval/"):
            assert stage_.config.shot_source is None, stage_.name


# ---- drift bug: two choose_target rules ------------------------------------------------------

def test_one_training_target_rule(tmp_path):
    from rait.data import load_dataset

    path = write_rows(tmp_path / "d.jsonl", [
        {"id": "a", "question": "When?", "answers": ["1914", "World War One"]},
        {"id": "b", "question": "Which?", "answers": ["🚁", "helicopters", "Helicopter"]}])
    items = load_dataset(str(path), fmt="triviaqa").items  # TriviaQA: the target is chosen among aliases
    assert [item["answers"][0] for item in items] == ["1914", "Helicopter"]
    import rait.scoring

    assert not hasattr(rait.scoring, "choose_target")


# ---- readers ---------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_read_jsonl_takes_any_bytes_without_a_traceback(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("blob") / "x.jsonl"
    path.write_bytes(blob)
    try:
        rows = list(io.read_jsonl(path))
    except RaitError as exc:
        assert str(path) in str(exc)
        return
    assert all(isinstance(row, dict) for _, row in rows)


def test_deep_nesting_and_nan_literals_are_clean_errors(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(RaitError, match="line 1"):
        list(io.read_jsonl(deep))
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"id": "a"}\n{"correctness": NaN}\n')
    with pytest.raises(RaitError, match="line 2.*NaN"):
        list(io.read_jsonl(nan))


def test_a_corrupt_line_in_a_finished_table_is_not_truncated_away(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text('{"id": "a"}\n{broken\n{"id": "c"}\n')
    before = path.read_bytes()
    with pytest.raises(RaitError, match="line 2.*damaged"):
        io.recover_jsonl(path)
    assert path.read_bytes() == before
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": "a"}\n{"id": "b"')  # a kill mid-write: only the torn last line goes
    assert io.recover_jsonl(torn) == [{"id": "a"}] and torn.read_text() == '{"id": "a"}\n'


# ---- the layering: stages stand side by side on the shared layer ----------------------------

def imported_modules(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_shared_layer_imports_no_stage_and_no_stage_imports_the_pipeline():
    src = Path(__file__).resolve().parent.parent / "src" / "rait"
    front_ends = ("pipeline.py", "cli.py", "api.py")  # on top of the stages: they may import them
    shared = [p for p in src.rglob("*.py") if "stages" not in p.parts and p.name not in front_ends]
    assert any(p.name == "knowledge.py" for p in shared)
    for path in shared:
        bad = {m for m in imported_modules(path) if m.startswith(("rait.stages", "rait.pipeline"))}
        assert not bad, f"{path.relative_to(src)} imports {sorted(bad)}"
    for path in (src / "stages").rglob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("rait.pipeline")}, path
        # rehearse is probe + train + probe again; every other stage imports no other stage
        if path.name != "rehearse.py":
            own = "report" if path.parent.name == "report" else path.stem
            others = {m.split(".")[2] for m in imported_modules(path) if m.startswith("rait.stages.")}
            assert others <= {own}, f"{path.relative_to(src)} imports the stages {sorted(others - {own})}"
