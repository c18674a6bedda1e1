"""`rait report` on a synthetic run directory: tables carry the numbers, figures are real images."""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from rait.cli import main
from rait.data.mmlu_groups import GROUPS, SUBJECT_GROUP, group_of, normalise_subject
from rait.errors import RaitError
from rait.layout import run_layout
from rait.stage import meta_path
from rait.stages.build import BuildConfig, build
from rait.stages.report import ReportConfig, write_report


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def eval_result(model, prompt, pc, pw, *, ths=None, ci=None, baseline=None, dataset="mmlu-val", n=200):
    result = {"model": model, "dataset": dataset, "prompt": prompt, "n": n,
              "correct": round(pc * n), "wrong": round(pw * n), "refused": n - round(pc * n) - round(pw * n),
              "unparsed": 0, "Pc": pc, "Pw": pw, "Pr": 1 - pc - pw, "THS": ths, "THS_ci": ci,
              "baseline": baseline, "by_subject": {}, "by_group": {}, "macro": None}
    if baseline:
        result["over_conservative"] = {"count": 7, "share": 0.05}
    return result


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    rng = random.Random(0)
    base = {"path": "eval/base.json", "model": "init", "dataset": "mmlu-val", "Pc": 0.668, "Pw": 0.331}
    write_json(run / "eval" / "init__mmlu-val__basic.json", eval_result("init", "basic", 0.668, 0.331,
                                                                        ths=0.0, ci=[-0.01, 0.01], baseline=base))
    craft = eval_result("craft", "refuse", 0.533, 0.096, ths=0.3403, ci=[0.301, 0.377], baseline=base)
    craft["by_group"] = {"STEM": {"n": 50, "Pc": 0.4, "Pw": 0.1, "Pr": 0.5, "THS": 0.2}}
    craft["by_group_macro"] = {"STEM": {"n": 50, "Pc": 0.45, "Pw": 0.15, "Pr": 0.4, "groups": 3}}
    write_json(run / "eval" / "craft__mmlu-val__refuse.json", craft)
    write_json(run / "eval" / "cor__mmlu-val__refuse.json",
               eval_result("cor", "refuse", 0.639, 0.216, ths=0.204, ci=[0.17, 0.24], baseline=base))
    write_json(run / "eval" / "craft__arc__refuse.json",
               eval_result("craft", "refuse", 0.5, 0.2, dataset="arc"))
    table = run_layout(run)["rehearse_table"]
    write_table(table, knowledge_rows(rng, 300))
    for method, idk_ratio in {"craft": 0.2, "cor": 0.3}.items():  # the real build stage writes the sidecar
        build(BuildConfig(method=method, size=100, idk_ratio=idk_ratio), table, run / "build" / f"{method}.jsonl")
    write_json(run / "conflict" / "craft.json", {"name": "craft", "n": 100, "crss": {
        "0.95": {"pairs": 40, "conflicting": 3, "crss": 0.075},
        "0.99": {"pairs": 10, "conflicting": 0, "crss": 0.0}}})
    write_json(run / "conflict" / "cor.json", {"name": "cor", "n": 100, "crss": {
        "0.95": {"pairs": 50, "conflicting": 20, "crss": 0.4},
        "0.99": {"pairs": 12, "conflicting": 5, "crss": 0.41666}}})
    write_json(run / "manifest.json", {"stages": {}})
    return run


def knowledge_rows(rng, n):
    """Knowledge-table rows as `rait rehearse` writes them: items with correctness, certainty, flow."""
    rows = []
    for i in range(n):
        c = rng.random()
        rows.append({"id": f"q{i}", "task": "oeqa", "question": f"Question {i}?", "answers": [f"answer {i}"],
                     "correctness": c, "certainty": rng.random(),
                     "flow": max(-c, min(1 - c, rng.gauss(0.05, 0.2)))})
    return rows


def write_table(path: Path, rows) -> None:
    """A finished knowledge table of a run directory: the rows and their sidecar (written last)."""
    write_jsonl(path, rows)
    write_json(meta_path(path), {"fingerprint": "test"})


def distinct_colours(png: Path) -> int:
    import matplotlib.image as mpimg
    import numpy as np

    image = mpimg.imread(png)
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


def test_report_from_run_dir(run_dir):
    written = write_report(run_dir)
    out = run_dir / "report"
    assert written["markdown"] == out / "report.md" and written["html"] == out / "report.html"
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in ("53.3", "9.6", "34.0 [30.1, 37.7]", "20.4 [17.0, 24.0]", "66.8", "33.1"):
        assert text in md and text in page
    # CRSS cells: percent (conflicting/pairs)
    assert "7.5 (3/40)" in md and "41.7 (5/12)" in page
    # composition numbers
    assert re.search(r"\| craft \| 100 \| 80 \| 20 \| 20.0 \|", md)
    # both test sets get a table and a column in the wide THS table
    assert "Test set: mmlu-val" in md and "Test set: arc" in md
    names = {p.name for p in written["figures"]}
    assert names == {"pc_pw_plane.png", "knowledge_state.png", "knowledge_flow.png", "rait_composition.png"}
    for png in written["figures"]:
        assert png.exists() and png.stat().st_size > 5000
        assert distinct_colours(png) > 10
        assert f"figures/{png.name}" in md
    # self-contained: every image is an embedded PNG, no external references
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    assert "By subject group" in md  # craft has a by_group breakdown
    assert "micro (every question counts once)" in md and "macro (each subject counts once" in md
    assert "| craft (refuse) | 45.0 / 15.0 |" in md  # the subject-macro cell of STEM
    assert written["notes"] == []


def test_html_is_well_formed(run_dir):
    from html.parser import HTMLParser

    class Checker(HTMLParser):
        VOID = {"meta", "img", "br", "hr", "link"}

        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.VOID:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
            self.stack.pop()

    checker = Checker()
    checker.feed(write_report(run_dir)["html"].read_text())
    assert checker.stack == []


def test_report_skips_missing_parts_with_notes(tmp_path):
    run = tmp_path / "run"
    write_json(run / "eval" / "m__t__basic.json", eval_result("m", "basic", 0.5, 0.3))
    write_jsonl(run / "probe" / "knowledge.jsonl", knowledge_rows(random.Random(1), 20)[:7])  # interrupted probe
    written = write_report(run)
    notes = "\n".join(written["notes"])
    for expected in ("knowledge table", "knowledge flow", "RAIT sets", "conflict",
                     "probe/knowledge.jsonl: not finished"):
        assert expected in notes
    assert [p.name for p in written["figures"]] == ["pc_pw_plane.png"]
    md = written["markdown"].read_text()
    assert "## Notes" in md and "50.0" in md


@pytest.mark.parametrize("name, content, expected", [
    ("broken.json", json.dumps({"model": "x"}), "broken.json, field 'n': missing"),
    ("torn.json", "{not json", "torn.json, line 1: not valid JSON"),
])
def test_a_damaged_finished_file_of_a_run_dir_is_an_error(tmp_path, name, content, expected):
    """Eval results are written atomically: a bad one is damage, not an interrupted run."""
    run = tmp_path / "run"
    write_json(run / "eval" / "m__t__basic.json", eval_result("m", "basic", 0.5, 0.3))
    (run / "eval" / name).write_text(content)
    with pytest.raises(RaitError, match=re.escape(expected)):
        write_report(run)
    assert not (run / "report").exists()


def test_report_of_an_empty_run_dir_is_an_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no finished stage outputs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "report").exists()


def test_report_from_explicit_files_via_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "rep"
    files = [str(p) for p in sorted((run_dir / "eval").glob("*.json"))]
    status = main(["report", *files, str(run_dir / "conflict" / "cor.json"),
                   str(run_dir / "rehearse" / "knowledge.jsonl"), "--out", str(out), "--title", "Mine"])
    assert status == 0
    page = (out / "report.html").read_text()
    assert "<title>Mine</title>" in page and "34.0" in page and "41.7" in page
    assert (out / "figures" / "knowledge_flow.png").exists()
    assert "report.html" in capsys.readouterr().out


def test_report_missing_input_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_html_escapes_model_names(tmp_path):
    run = tmp_path / "run"
    write_json(run / "eval" / "x.json", eval_result("<script>alert(1)</script>", "basic", 0.5, 0.3))
    page = write_report(run, ReportConfig(out=str(tmp_path / "o"))).get("html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_mmlu_groups_cover_57_subjects():
    assert len(SUBJECT_GROUP) == 57
    counts = {g: sum(1 for v in SUBJECT_GROUP.values() if v == g) for g in GROUPS}
    assert counts == {"STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    assert group_of("High School Biology") == "STEM" and group_of("professional_law") == "humanities"
    assert group_of("general knowledge") is None and group_of(None) is None
    assert normalise_subject("us-foreign policy") == "us_foreign_policy"


def test_mmlu_groups_match_the_shared_mmlu_files(shared_data):
    subjects = {p.name.rsplit("_", 1)[0] for p in (shared_data / "mmlu" / "val").glob("*_val.csv")}
    assert len(subjects) == 57 and subjects == set(SUBJECT_GROUP)


def test_conflict_plots_are_linked_relative_to_the_report(run_dir):
    """The report must still show its figures after the run directory is moved or copied."""
    plot = run_dir / "conflict" / "craft.png"
    shutil.copy(write_report(run_dir)["figures"][0], plot)
    conflict = json.loads((run_dir / "conflict" / "craft.json").read_text())
    write_json(run_dir / "conflict" / "craft.json", {**conflict, "plot": str(plot.resolve())})
    md = (write_report(run_dir)["markdown"]).read_text()
    assert "![craft](../conflict/craft.png)" in md
    assert "](/" not in md  # no absolute image links


def test_paired_differences_say_whether_the_best_model_is_ahead(tmp_path):
    rng = random.Random(3)
    run = tmp_path / "run"
    ids = [f"q{i}" for i in range(400)]
    base = [rng.choice(["correct"] * 3 + ["wrong"] * 7) for _ in ids]
    # "good" refuses 60 % of the baseline's wrong answers, "same" is the baseline again
    models = {"init": base, "good": [("refused" if o == "wrong" and rng.random() < 0.6 else o) for o in base],
              "same": list(base)}
    for name, outcomes in models.items():
        stem = f"{name}__mmlu-val__basic"
        write_jsonl(run / "eval" / f"{stem}.items.jsonl", [{"id": i, "outcome": o} for i, o in zip(ids, outcomes)])
        n = len(outcomes)
        pc, pw = outcomes.count("correct") / n, outcomes.count("wrong") / n
        pc0, pw0 = base.count("correct") / n, base.count("wrong") / n
        result = eval_result(name, "basic", pc, pw, n=n)
        result["items_file"] = f"{stem}.items.jsonl"
        if name != "init":  # recorded relative to another working directory, as `rait run` does
            result["baseline"] = {"path": "elsewhere/eval/init__mmlu-val__basic.json", "paired": True,
                                  "Pc": pc0, "Pw": pw0}
            result["THS"] = (pc * pw0 - pw * pc0) / pw0
        write_json(run / "eval" / f"{stem}.json", result)
    written = write_report(run)
    text = Path(written["markdown"]).read_text()
    assert "paired THS differences" in text
    section = text.split("paired THS differences")[1]
    row = next(line for line in section.splitlines() if line.startswith("| same (basic)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "400" and cells[4] == "ahead"
    assert "| 95% CI |" in section  # two tuned models: one pair, no correction needed
    from rait.stages.report import interval_header

    assert interval_header(0.05 / 10, 10) == "99.5% CI (95% jointly over 10 pairs)"  # five models
    # THS(good) = Pc - Pw * Pc0 / Pw0 with Pw about 0.4 Pw0: about 0.6 Pc0 = 18 %; THS(same) = 0
    assert 12 < float(cells[2]) < 24


def write_paired_run(run: Path, ids: list[str], models: dict[str, list[str]]) -> None:
    """A run directory with one eval result per model on `ids`, every model but "init" paired
    against init, as `rait run` writes them."""
    base = models["init"]
    n = len(base)
    pc0, pw0 = base.count("correct") / n, base.count("wrong") / n
    for name, outcomes in models.items():
        stem = f"{name}__mmlu-val__basic"
        write_jsonl(run / "eval" / f"{stem}.items.jsonl", [{"id": i, "outcome": o} for i, o in zip(ids, outcomes)])
        pc, pw = outcomes.count("correct") / n, outcomes.count("wrong") / n
        result = eval_result(name, "basic", pc, pw, n=n)
        result["Pr"] = outcomes.count("refused") / n  # exact, not 1 - Pc - Pw
        result["items_file"] = f"{stem}.items.jsonl"
        if name != "init":
            result["baseline"] = {"path": "eval/init__mmlu-val__basic.json", "paired": True, "Pc": pc0, "Pw": pw0}
            result["THS"] = (pc * pw0 - pw * pc0) / pw0
        write_json(run / "eval" / f"{stem}.json", result)


def test_several_runs_are_seeds_mean_sd_and_pooled_orderings(tmp_path):
    rng = random.Random(8)
    ids = [f"q{i}" for i in range(400)]
    base = [rng.choice(["correct"] * 3 + ["wrong"] * 7) for _ in ids]
    runs, ths_good = [], []
    for seed in range(3):
        refuse = lambda share: [("refused" if o == "wrong" and rng.random() < share else o) for o in base]  # noqa: E731
        # "good" refuses about half the baseline's wrong answers in every seed; "noisy" is "same"
        # (the baseline) give or take a few refusals, ahead in one seed and behind in another
        noisy = list(base)
        if seed == 1:
            noisy = [("wrong" if o == "correct" and k % 25 == 0 else o) for k, o in enumerate(base)]
        elif seed != 1:
            noisy = [("refused" if o == "wrong" and k % 40 == 0 else o) for k, o in enumerate(base)]
        models = {"init": base, "good": refuse(0.5), "same": list(base), "noisy": noisy}
        write_paired_run(tmp_path / f"seed{seed}", ids, models)
        runs.append(tmp_path / f"seed{seed}")
        good = models["good"]
        pc, pw = good.count("correct") / 400, good.count("wrong") / 400
        pc0, pw0 = base.count("correct") / 400, base.count("wrong") / 400
        ths_good.append((pc * pw0 - pw * pc0) / pw0)
    written = write_report(runs, ReportConfig(out=str(tmp_path / "out")))
    text = Path(written["markdown"]).read_text()
    assert "Over seeds (replicate runs)" in written["sections"]
    assert "| good (basic) · seed1 |" in text  # one row per run in the results table
    section = text.split("## Over seeds")[1]
    row = next(line for line in section.splitlines() if line.startswith("| good (basic) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean = sum(ths_good) / 3
    sd = (sum((t - mean) ** 2 for t in ths_good) / 2) ** 0.5
    assert cells[1] == "3" and cells[2] == " / ".join(f"{100 * t:.1f}" for t in ths_good)
    assert cells[3] == f"{100 * mean:.1f} ± {100 * sd:.1f}"

    def pooled(pair):
        line = next(line for line in section.splitlines() if line.startswith(f"| {pair} |"))
        return [c.strip() for c in line.strip("|").split("|")]

    good_same = pooled("good (basic) - same (basic)")
    assert good_same[1:3] == ["3", "400"] and good_same[-1] == "good (basic) > same (basic)"
    assert float(good_same[3]) == pytest.approx(100 * mean, abs=0.051)  # "same" is the baseline: THS 0
    noisy = next(line for line in section.splitlines() if "noisy (basic) - same" in line or "same (basic) - noisy" in line)
    per_run = [float(d) for d in noisy.strip("|").split("|")[5].split(" / ")]
    assert min(per_run) < 0 < max(per_run) and noisy.strip("|").split("|")[-1].strip().startswith("not separated")
    assert "(95% jointly over 3 pairs)" in section  # good, same, noisy: three pairs, Bonferroni
    assert "Test set: mmlu-val, run seed0, good (basic) · seed0 minus each other model" in text


def test_two_runs_with_the_same_folder_name_are_refused(tmp_path):
    ids = ["q1", "q2", "q3", "q4"]
    models = {"init": ["correct", "wrong", "wrong", "refused"], "x": ["correct", "refused", "wrong", "refused"]}
    for parent in ("a", "b"):
        write_paired_run(tmp_path / parent / "run", ids, models)
    with pytest.raises(RaitError, match="two run directories named 'run'"):
        write_report([tmp_path / "a" / "run", tmp_path / "b" / "run"], ReportConfig(out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
