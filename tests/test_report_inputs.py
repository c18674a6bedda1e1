"""`rait report` on bad input: every problem is one error naming the file (and field), nothing is
half-written; and the report uses the shared rules (sidecar name, flow rule, table checks,
percent formatting, run-directory layout) from their one home."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rait.stages.report as report
from rait import knowledge, metrics
from rait.cli import main
from rait.errors import RaitError
from rait.layout import run_layout
from rait.stage import meta_path
from rait.stages.build import BuildConfig, build
from rait.stages.report import ReportConfig, check_eval_result, write_report


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table_rows(n: int, seed: int = 0, flows=None) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = rng.random()
        row = {"id": f"q{i}", "task": "oeqa", "question": f"Question {i}?", "answers": [f"a{i}"],
               "correctness": c, "certainty": rng.random()}
        row["flow"] = flows[i] if flows is not None else max(-c, min(1 - c, rng.gauss(0.05, 0.2)))
        rows.append(row)
    return rows


def finished_table(path: Path, rows) -> Path:
    write_jsonl(path, rows)
    write_json(meta_path(path), {"fingerprint": "test"})
    return path


def eval_result(pc=0.5, pw=0.3, **extra) -> dict:
    return {"model": "m", "dataset": "t", "prompt": "basic", "n": 100, "Pc": pc, "Pw": pw,
            "Pr": 1 - pc - pw, "THS": None, "THS_ci": None, "baseline": None, **extra}


def report_error(args, capsys) -> str:
    """The one-line error of a failing `rait report`."""
    assert main(["report", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rait report: error: "), err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- drift: one home

def test_rait_set_sidecar_is_read_under_the_name_the_build_writes(tmp_path):
    table = finished_table(tmp_path / "knowledge.jsonl", table_rows(300))
    out = tmp_path / "craft.jsonl"
    build(BuildConfig(method="craft", size=100, idk_ratio=0.2), table, out)
    assert meta_path(out).name == "craft.jsonl.meta.json" and meta_path(out).exists()
    md = write_report([out], ReportConfig(out=str(tmp_path / "rep")))["markdown"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| craft |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["craft", "100", "80", "20", "20.0"]
    assert cells[5] == "300"  # the pool size, from the sidecar
    assert cells[6].startswith("flow: ")


def test_a_sidecar_that_contradicts_its_set_is_an_error(tmp_path):
    table = finished_table(tmp_path / "knowledge.jsonl", table_rows(300))
    out = tmp_path / "craft.jsonl"
    build(BuildConfig(method="craft", size=100, idk_ratio=0.2), table, out)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-5]) + "\n")  # the set edited after the build
    with pytest.raises(RaitError, match=r"craft\.jsonl\.meta\.json, field 'counts': .* does not match"):
        write_report([out], ReportConfig(out=str(tmp_path / "rep")))


def test_flows_within_flow_eps_count_as_unchanged(tmp_path):
    flows = [1e-12, -1e-12, 0.0, 0.5, -0.25, 2 * knowledge.FLOW_EPS]
    table = write_jsonl(tmp_path / "k.jsonl", table_rows(6, flows=flows))
    md = write_report([table], ReportConfig(out=str(tmp_path / "rep")))["markdown"].read_text()
    counts = knowledge.flow_counts(flows)
    assert counts == {"rose": 2, "fell": 1, "same": 3}
    assert "| 6 | 2 | 1 | 3 |" in md


def test_knowledge_table_is_checked_and_summarised_by_rait_knowledge(tmp_path):
    rows = table_rows(50)
    table = write_jsonl(tmp_path / "k.jsonl", rows)
    md = write_report([table], ReportConfig(out=str(tmp_path / "rep")))["markdown"].read_text()
    mean = knowledge.distribution([r["correctness"] for r in rows])["mean"]
    assert f"| 50 | {mean:.3f} |" in md
    rows[7]["correctness"] = 1.5  # impossible; the old report averaged it in
    write_jsonl(table, rows)
    with pytest.raises(RaitError, match=r"k\.jsonl, line 8, field 'correctness': must be a finite number in \[0, 1\]"):
        write_report([table], ReportConfig(out=str(tmp_path / "rep2")))


def test_percentages_are_formatted_by_rait_metrics():
    assert report.percent is metrics.percent
    assert not hasattr(report, "pct")


def test_run_layout_is_the_layout_of_today():
    d = Path("/r")
    assert run_layout(d) == {
        "manifest": d / "manifest.json", "config": d / "config.yaml",
        "probe_dir": d / "probe", "probe_table": d / "probe" / "knowledge.jsonl",
        "rehearse_dir": d / "rehearse", "rehearse_table": d / "rehearse" / "knowledge.jsonl",
        "build_dir": d / "build", "conflict_dir": d / "conflict", "train_dir": d / "train",
        "eval_dir": d / "eval", "report_dir": d / "report"}


def test_a_run_dir_of_the_old_layout_is_read(tmp_path):
    """A run directory written before rait.layout existed (`make demo`): the same paths."""
    run = tmp_path / "demo"
    finished_table(run / "probe" / "knowledge.jsonl", [{k: v for k, v in r.items() if k != "flow"}
                                                       for r in table_rows(40)])
    write_json(run / "eval" / "init__demo-oeqa-test__basic.json", eval_result())
    write_json(run / "conflict" / "cor.json", {"name": "cor", "crss": {"0.95": {"pairs": 4, "conflicting": 1, "crss": 0.25}}})
    write_json(run / "manifest.json", {"stages": {}})
    written = write_report(run)
    assert written["html"] == run / "report" / "report.html"
    assert written["sections"] == ["Results", "Knowledge state of the pool", "Static conflict (CRSS)"]
    assert any("rehearsal not run" in note for note in written["notes"])


# --------------------------------------------------------------------------- bad input files

def test_a_file_that_is_no_result_table_or_set_is_an_error(tmp_path, capsys):
    other = write_json(tmp_path / "other.json", {"hello": 1})
    assert f"{other}: neither an eval result" in report_error([other, "--out", tmp_path / "o"], capsys)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"id": "x", "outcome": "correct"}])
    assert f"{rows}, line 1: neither a knowledge table" in report_error([rows, "--out", tmp_path / "o"], capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"{empty}: is empty" in report_error([empty, "--out", tmp_path / "o"], capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change, field", [
    ({"Pc": -3, "Pr": 3.7}, "Pc"),
    ({"Pw": 7}, "Pw"),
    ({"Pc": "0.5"}, "Pc"),
    ({"Pc": True}, "Pc"),
    ({"Pr": 0.9}, "Pr"),  # Pc + Pw + Pr = 1.7
    ({"n": 0}, "n"),
    ({"n": 2.5}, "n"),
    ({"THS": 3.0}, "THS"),
    ({"THS_ci": [0.4, 0.1]}, "THS_ci"),
    ({"over_conservative": {"count": 7, "share": 4}}, "over_conservative.share"),
    ({"by_group": {"STEM": {"Pc": 1.2, "Pw": 0.1}}}, "by_group.STEM.Pc"),
    ({"baseline": {"paired": True, "Pc": 0.6, "Pw": 0.3}}, "baseline.path"),
    ({"model": ["a"]}, "model"),
    ({"model": "\ud800"}, "model"),
])
def test_impossible_numbers_in_an_eval_result_are_errors(tmp_path, capsys, change, field):
    path = write_json(tmp_path / "e.json", {**eval_result(), **change})
    err = report_error([path, "--out", tmp_path / "o"], capsys)
    assert f"{path}, field '{field}'" in err
    assert not (tmp_path / "o").exists()


def test_nan_in_an_eval_result_is_an_error(tmp_path, capsys):
    path = tmp_path / "e.json"
    path.write_text(json.dumps(eval_result(pc=float("nan"))))  # a NaN literal
    assert f"{path}: not valid JSON (NaN" in report_error([path, "--out", tmp_path / "o"], capsys)
    with pytest.raises(RaitError, match="field 'Pc'"):  # and made in code
        check_eval_result(eval_result(pc=math.nan), path)


def test_a_rait_set_given_as_a_table_is_recognised(tmp_path):
    table = finished_table(tmp_path / "knowledge.jsonl", table_rows(300))
    rait_set = tmp_path / "cor.jsonl"
    build(BuildConfig(method="cor", size=50), table, rait_set)
    assert "correctness" in json.loads(rait_set.read_text().splitlines()[0])  # what misled the old test
    written = write_report([rait_set], ReportConfig(out=str(tmp_path / "rep")))
    assert written["sections"] == ["RAIT sets"]
    run = tmp_path / "run"
    finished_table(run / "probe" / "knowledge.jsonl", [json.loads(line) for line in rait_set.read_text().splitlines()])
    with pytest.raises(RaitError, match="this is a RAIT set"):
        write_report(run)


def test_an_empty_folder_or_one_without_stage_outputs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no finished stage outputs" in report_error([tmp_path / "empty"], capsys)
    write_json(tmp_path / "other" / "notes.json", {"a": 1})
    assert "no finished stage outputs" in report_error([tmp_path / "other"], capsys)
    only_unfinished = tmp_path / "run"
    write_jsonl(only_unfinished / "probe" / "knowledge.jsonl", table_rows(3))
    assert "probe/knowledge.jsonl: not finished" in report_error([only_unfinished], capsys)
    assert not any((tmp_path / d / "report").exists() for d in ("empty", "other", "run"))


def test_non_utf8_or_corrupt_files_are_errors(tmp_path, capsys):
    latin = tmp_path / "e.json"
    latin.write_bytes(b'{"model": "caf\xe9"}')
    assert f"{latin}, line 1: not UTF-8" in report_error([latin, "--out", tmp_path / "o"], capsys)
    torn = tmp_path / "k.jsonl"
    torn.write_text(json.dumps(table_rows(1)[0]) + "\n{\"id\": ")
    assert f"{torn}, line 2: not valid JSON" in report_error([torn, "--out", tmp_path / "o"], capsys)


def test_a_corrupt_finished_table_of_a_run_dir_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    write_json(run / "eval" / "e.json", eval_result())
    table = finished_table(run / "rehearse" / "knowledge.jsonl", table_rows(5))
    table.write_text(table.read_text() + '{"id": "q9", "correct')
    assert f"{table}, line 6: not valid JSON" in report_error([run], capsys)
    items = write_jsonl(run / "eval" / "e.items.jsonl", [{"id": "q1", "outcome": "maybe"}])
    finished_table(table, table_rows(5))
    paired = {"path": str(run / "eval" / "e.json"), "paired": True, "Pc": 0.5, "Pw": 0.3}
    for name in ("a", "b"):
        write_json(run / "eval" / f"{name}.json", eval_result(THS=0.1, baseline=paired, items_file=items.name))
    assert f"{items}, line 1, field 'outcome'" in report_error([run], capsys)


def test_an_interrupted_run_reports_what_is_finished(tmp_path):
    run = tmp_path / "run"
    write_json(run / "eval" / "e.json", eval_result())
    probed = [{k: v for k, v in row.items() if k != "flow"} for row in table_rows(10)]
    finished_table(run / "probe" / "knowledge.jsonl", probed)
    write_jsonl(run / "rehearse" / "knowledge.jsonl", table_rows(10))  # rehearsal interrupted
    write_jsonl(run / "build" / "craft.jsonl", [{"id": "q1", "prompt": "p", "completion": "c", "label": "idk"}])
    written = write_report(run)
    assert written["sections"] == ["Results", "Knowledge state of the pool"]
    notes = "\n".join(written["notes"])
    assert "rehearse/knowledge.jsonl: not finished" in notes and "build/craft.jsonl: not finished" in notes
    assert str(run / "probe" / "knowledge.jsonl") in written["markdown"].read_text()


# --------------------------------------------------------------------------- the output folder

def test_bad_output_folders_are_clean_errors(tmp_path, capsys):
    result = write_json(tmp_path / "e.json", eval_result())
    before = result.read_text()
    assert "is a file" in report_error([result, "--out", result], capsys)
    assert "is a file, not a folder" in report_error([result, "--out", result / "sub"], capsys)
    plain = tmp_path / "plain.txt"
    plain.write_text("mine")
    assert "is a file" in report_error([result, "--out", plain], capsys)
    run = tmp_path / "run"
    write_json(run / "eval" / "e.json", eval_result())
    assert "is also an input" in report_error([run, "--out", run], capsys)
    (tmp_path / "o" / "figures").parent.mkdir()
    (tmp_path / "o" / "figures").write_text("not a folder")
    assert "figures: is a file" in report_error([result, "--out", tmp_path / "o"], capsys)
    assert result.read_text() == before and plain.read_text() == "mine"
    assert not (result.parent / "sub").exists() and not (run / "report").exists()


def test_a_failed_report_leaves_nothing_half_written(tmp_path, monkeypatch):
    from rait import figures

    files = [write_json(tmp_path / "e.json", eval_result()), write_jsonl(tmp_path / "k.jsonl", table_rows(20))]
    out = tmp_path / "new" / "rep"

    def broken(*args, **kwargs):
        raise RaitError("drawing failed")

    monkeypatch.setattr(figures, "knowledge_heatmap", broken)
    with pytest.raises(RaitError, match="drawing failed"):
        write_report(files, ReportConfig(out=str(out)))
    assert not (tmp_path / "new").exists()  # the folders it made are gone too

    monkeypatch.undo()
    first = write_report(files, ReportConfig(out=str(out)))
    pages = {p: p.read_bytes() for p in (first["markdown"], first["html"])}
    plane = (out / "figures" / "pc_pw_plane.png").read_bytes()
    monkeypatch.setattr(figures, "knowledge_heatmap", broken)
    with pytest.raises(RaitError):
        write_report(files, ReportConfig(out=str(out), title="second"))
    assert {p: p.read_bytes() for p in pages} == pages  # the previous report is intact
    assert (out / "figures" / "pc_pw_plane.png").read_bytes() == plane
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.md"]  # no scratch left


def test_a_failure_while_publishing_removes_the_new_figures(tmp_path, monkeypatch):
    import os

    files = [write_json(tmp_path / "e.json", eval_result())]
    out = tmp_path / "rep"
    out.mkdir()
    real_replace = os.replace

    def replace(src, dst):  # the figures move in, then the disk fills up before the last page
        if str(dst).endswith(".html"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RaitError, match="No space left on device"):
        write_report(files, ReportConfig(out=str(out)))
    monkeypatch.undo()
    assert list(out.rglob("*")) == [out / "figures"]  # the figure moved in is removed again


# --------------------------------------------------------------------------- generated eval results

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=6), st.lists(st.integers(0, 3), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2))
SHARE = st.floats(0, 1)
BAD_SHARE = st.one_of(st.floats(-2, 120), JUNK)
CELL = st.fixed_dictionaries({"Pc": SHARE, "Pw": SHARE}, optional={"THS": st.floats(-2, 1)})
BAD_CELL = st.one_of(JUNK, st.fixed_dictionaries({}, optional={"Pc": BAD_SHARE, "Pw": BAD_SHARE, "THS": BAD_SHARE}))
# each optional field: (a possible value, a broken one)
FIELDS = {
    "model": (st.text(max_size=12), JUNK),
    "prompt": (st.text(max_size=6), JUNK),
    "dataset": (st.sampled_from(["mmlu", "arc"]), JUNK),
    "unparsed": (st.integers(0, 5), JUNK),
    "THS": (st.floats(-3, 1), JUNK),
    "THS_ci": (st.lists(st.floats(-2, 1), min_size=2, max_size=2).map(sorted), JUNK),
    "baseline": (st.fixed_dictionaries({"Pc": SHARE, "Pw": SHARE}, optional={"path": st.text(max_size=5)}),
                 st.one_of(JUNK, st.fixed_dictionaries({}, optional={"Pc": BAD_SHARE, "paired": JUNK, "path": JUNK}))),
    "over_conservative": (st.fixed_dictionaries({"count": st.integers(0, 9), "share": SHARE}),
                          st.one_of(JUNK, st.fixed_dictionaries({}, optional={"count": JUNK, "share": BAD_SHARE}))),
    "by_group": (st.dictionaries(st.sampled_from(["STEM", "other"]), CELL, max_size=2),
                 st.one_of(JUNK, st.dictionaries(st.sampled_from(["STEM", "other"]), BAD_CELL, min_size=1, max_size=2))),
    "macro": (CELL, BAD_CELL),
    "scoring": (st.fixed_dictionaries({"unparsed_as": st.sampled_from(metrics.UNPARSED_AS)}),
                st.one_of(JUNK, st.fixed_dictionaries({"unparsed_as": JUNK}))),
}


@st.composite
def eval_dicts(draw):
    """Random results: possible ones (Pr = 1 - Pc - Pw), ones with a broken field or missing keys."""
    if draw(st.integers(0, 3)):
        pc = draw(SHARE)
        pw = draw(st.floats(0, 1 - pc))
        core = {"n": draw(st.integers(1, 500)), "Pc": pc, "Pw": pw, "Pr": 1 - pc - pw}
    else:
        core = draw(st.fixed_dictionaries({}, optional={"n": st.one_of(st.integers(-1, 500), JUNK),
                                                         "Pc": BAD_SHARE, "Pw": BAD_SHARE, "Pr": BAD_SHARE}))
    result = dict(core)
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True)):
        possible, broken = FIELDS[key]
        result[key] = draw(broken if draw(st.integers(0, 7)) == 0 else possible)
    return result


class Tables(HTMLParser):
    """The tables of a page: [[header], [row], ...] each."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell)
            self.cell = None


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def check_percentages(page: str) -> None:
    """Pc, Pw, Pr and shares in [0, 100]; THS (no lower bound) at most 100."""
    parser = Tables()
    parser.feed(page)
    for header, *rows in parser.tables:
        for row in rows:
            for name, cell in zip(header, row):
                if name != "model (prompt)":  # a model may be called "INF"; numbers may not be
                    assert "nan" not in cell.lower() and "inf" not in cell.lower(), (name, cell)
                if name in ("Pc %", "Pw %", "Pr %"):
                    assert cell == "-" or 0 <= float(cell) <= 100, (name, cell)
                elif name == "refused but baseline correct" and cell != "-":
                    share = re.search(r"\((.*)%\)", cell).group(1)
                    assert share == "-" or 0 <= float(share) <= 100, cell
                elif name.startswith("THS"):
                    assert all(x <= 100 for x in numbers(cell)), (name, cell)
                elif name in ("STEM", "other", "macro over subjects") and cell:
                    pc, pw = cell.split(" (")[0].split(" / ")
                    assert 0 <= float(pc) <= 100 and 0 <= float(pw) <= 100, cell


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result=eval_dicts())
def test_generated_eval_results_give_a_report_or_one_clean_error(tmp_path_factory, result):
    folder = tmp_path_factory.mktemp("gen")
    path = folder / "result.json"
    path.write_text(json.dumps(result))  # NaN and Infinity become literals, which JSON does not allow
    out = folder / "rep"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["report", str(path), "--out", str(out)])
    if status == 0:
        check_percentages((out / "report.html").read_text())
    else:
        assert status == 2
        err = stderr.getvalue().strip().splitlines()[-1]
        assert err.startswith(f"rait report: error: {path}"), err
        assert "Traceback" not in stderr.getvalue()
        assert not out.exists()
