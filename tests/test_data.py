"""Loaders (every format, bad input, lenient mode, hub via monkeypatch) and deterministic carving."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.data import (DataOptions, carve, choose_target, default_shot_source, detect_format,
                       load_dataset, load_with_options, make_oeqa_item, take)
from rait.data.schema import Dataset
from rait.data.split import carve_shots, held_out_count, rank_key
from rait.errors import RaitError


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------- generic files

def test_generic_jsonl_oeqa_keeps_ids_and_derives_missing_ones(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "a1", "question": "Capital of France?", "answers": ["Paris", "paris"]},
        {"question": "Largest planet?", "answers": ["Jupiter"]},
    ])
    ds = load_dataset(str(path))
    assert (ds.task, ds.name, len(ds)) == ("oeqa", "qa", 2)
    assert ds.items[0] == {"id": "a1", "task": "oeqa", "question": "Capital of France?",
                           "answers": ["Paris", "paris"], "answer_source": "primary"}
    derived = ds.items[1]["id"]
    assert derived.startswith("q") and derived == load_dataset(str(path)).items[1]["id"]
    assert detect_format(str(path)) == "generic"


def test_generic_jsonl_mcqa_with_fields_mapping(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"q": "2 + 2?", "opts": {"A": "3", "B": "4"}, "gold": "B", "topic": "math"},
    ])
    ds = load_dataset(str(path), fields={"question": "q", "choices": "opts", "target": "gold",
                                         "subject": "topic"})
    assert ds.items[0]["choices"] == {"A": "3", "B": "4"}
    assert (ds.task, ds.items[0]["target"], ds.items[0]["subject"]) == ("mcqa", "B", "math")


def test_missing_fields_name_the_source_column(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "x?", "answers": ["y"]}])
    with pytest.raises(RaitError, match=r"qa.jsonl, line 1, field 'question': is missing"):
        load_dataset(str(path))
    with pytest.raises(RaitError, match=r"line 1, field 'prompt': is missing \(mapped to 'question'\)"):
        load_dataset(str(path), fields={"question": "prompt"})
    with pytest.raises(RaitError, match=r"line 1, field 'aliases': is missing"):
        load_dataset(str(path), fields={"question": "q", "answers": "aliases"})


def test_craft_json_array_puts_primary_answer_first_and_uses_qid(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([
        {"qid": "nq_dev_0", "lang": "en", "question": "when?", "answer": "1972",
         "answers": ["December 1972", "1972"]},
    ], indent=4))
    item = load_dataset(str(path)).items[0]
    assert item["id"] == "nq_dev_0" and item["answers"] == ["1972", "December 1972"]


def test_craft_csv_list_column_is_a_python_literal(tmp_path):
    path = write_csv(tmp_path, "dev.csv", [
        "qid,lang,question,answer,answers",
        "nq_dev_0,en,when was it,14 December 1972,\"['14 December 1972', 'December 1972']\"",
        "nq_dev_1,en,who wrote it,Bobby Scott,\"['Bobby Scott', \"\"Bob O'Russell\"\"]\"",
    ])
    ds = load_dataset(str(path))
    assert [i["answers"] for i in ds.items] == [["14 December 1972", "December 1972"],
                                                ["Bobby Scott", "Bob O'Russell"]]


def test_csv_literal_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = write_csv(tmp_path, "evil.csv", [
        "question,answers", f"q?,\"[__import__('pathlib').Path('{marker}').touch()]\""])
    with pytest.raises(RaitError, match=r"evil.csv, line 2, field 'answers': is not a valid list literal"):
        load_dataset(str(path))
    assert not marker.exists()


def test_nq_open_jsonl_answer_list(tmp_path):
    path = write_jsonl(tmp_path / "NQ-open.dev.jsonl", [
        {"question": "who wrote it", "answer": ["Bobby Scott", "Bob Russell"]}])
    ds = load_dataset(str(path))
    assert detect_format(str(path)) == "nq-open"
    assert ds.items[0]["answers"] == ["Bobby Scott", "Bob Russell"]


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "rows.json", [{"question": "a?", "answers": ["b"]},
                                               {"question": "c?", "answers": ["d"]}])
    assert len(load_dataset(str(path))) == 2


def test_repeated_ids_are_made_unique_and_noted(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "x", "question": f"q{i}?", "answers": ["a"]}
                                                for i in range(3)])
    ds = load_dataset(str(path))
    assert [i["id"] for i in ds.items] == ["x", "x-2", "x-3"]
    assert any("repeated ids" in note for note in ds.notes)


def test_limit_keeps_first_valid_items(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": str(i), "question": f"q{i}?", "answers": ["a"]}
                                               for i in range(10)])
    assert [i["id"] for i in load_dataset(str(path), limit=3).items] == ["0", "1", "2"]
    with pytest.raises(RaitError, match="positive"):
        load_dataset(str(path), limit=0)


# ---------------------------------------------------------------------------------- TriviaQA

def test_choose_target_rules():
    assert choose_target(["bh", "BH (disambiguation)", "BH", "Bh"]) == "BH"
    assert choose_target(["🚁", "helicopters", "Helicopter"]) == "Helicopter"
    assert choose_target(["x (disambiguation)", "paris", "lutece"]) == "paris"
    assert choose_target(["1972", "nineteen"]) == "1972"
    assert choose_target(["Only (disambiguation)"]) == "Only (disambiguation)"


def test_triviaqa_tsv_quoted_cells_and_target_choice(tmp_path):
    path = tmp_path / "topics.dpr.trivia.dev.txt"
    path.write_text(
        "What are the letters of Belize?\t['bh.', 'BH (disambiguation)', 'BH', 'Bh']\n"
        'Ezzard Charles was a champion in which sport?\t"[\'prize fight\', \'Boxing\', ""Boxer\'s art""]"\n',
        encoding="utf-8")
    ds = load_dataset(str(path))
    assert detect_format(str(path)) == "triviaqa-tsv"
    assert ds.items[0]["answers"] == ["BH", "bh.", "BH (disambiguation)", "Bh"]
    assert ds.items[1]["answers"] == ["Boxing", "prize fight", "Boxer's art"]
    assert all(i["id"].startswith("q") for i in ds.items)
    # DPR's TSV has no primary answer: answers[0] was picked among the aliases, and the item says so
    assert [i["answer_source"] for i in ds.items] == ["aliases", "aliases"]


@pytest.mark.parametrize("line, field, message", [
    ("Who?\t[]", "answers", "is empty"),
    ("Who?\t['unclosed", "answers", "not a valid list literal"),
    ("Who?\t'Paris'", "answers", "must be a list"),
    ("Who?", None, "expected 2 tab-separated columns"),
    ("\t['x']", "question", "non-empty string"),
])
def test_triviaqa_tsv_bad_rows_name_line_and_field(tmp_path, line, field, message):
    path = tmp_path / "t.tsv"
    path.write_text("Fine?\t['Yes']\n" + line + "\n", encoding="utf-8")
    where = r"t.tsv, line 2" + (rf", field '{field}'" if field else "")
    with pytest.raises(RaitError, match=where + r": .*" + message):
        load_dataset(str(path))


def test_craft_triviaqa_json_without_answer_picks_target(tmp_path):
    path = write_jsonl(tmp_path / "tq.jsonl", [
        {"qid": "t1", "question": "q?", "answers": ["the beatles", "The Beatles (disambiguation)", "Beatles"]}])
    assert load_dataset(str(path)).items[0]["answers"][0] == "the beatles"  # generic: first is target
    assert load_dataset(str(path), fmt="triviaqa").items[0]["answers"][0] == "Beatles"


# --------------------------------------------------------------------------------------- MMLU

def make_mmlu(root: Path, *, header: bool) -> Path:
    head = ["id,lang,question,A,B,C,D,target"] if header else []
    for split, n in (("dev", 2), ("test", 3)):
        for subject in ("anatomy", "virology"):
            rows = []
            for i in range(n):
                cells = [f"{subject} {split} q{i}?", "None", "1", "\"two, 2\"", "3", "ABCD"[i % 4]]
                rows.append(",".join(([f"{subject}/{split}/{i}", "en"] if header else []) + cells))
            write_csv(root / split, f"{subject}_{split}.csv", head + rows)
    return root


@pytest.mark.parametrize("header", [True, False])
def test_mmlu_folder_with_and_without_header(tmp_path, header):
    root = make_mmlu(tmp_path / "mmlu", header=header)
    ds = load_dataset(str(root))
    assert (ds.name, ds.task, len(ds)) == ("mmlu-test", "mcqa", 6)
    first = ds.items[0]
    assert first["choices"] == {"A": "None", "B": "1", "C": "two, 2", "D": "3"}  # literal None kept
    assert (first["subject"], first["target"]) == ("anatomy", "A")
    assert (first["id"] == "anatomy/test/0") is header
    assert len(load_dataset(str(root), split="dev")) == 4
    assert detect_format(str(root)) == "mmlu"
    assert [i["subject"] for i in ds.items].count("virology") == 3


def test_mmlu_single_split_folder_and_single_file(tmp_path):
    root = make_mmlu(tmp_path / "mmlu", header=True)
    assert len(load_dataset(str(root / "test"))) == 6
    ds = load_dataset(str(root / "test" / "virology_test.csv"))
    assert len(ds) == 3 and ds.items[0]["subject"] == "virology"


def test_mmlu_errors(tmp_path):
    root = make_mmlu(tmp_path / "mmlu", header=True)
    with pytest.raises(RaitError, match="for MMLU split 'val'"):
        load_dataset(str(root), split="val", fmt="mmlu")
    bad = write_csv(tmp_path / "bad", "law_test.csv", ["id,lang,question,A,B,C,D,target",
                                                        "law/test/0,en,q?,a,b,c,d,E"])
    with pytest.raises(RaitError, match=r"law_test.csv, line 2, field 'target': 'E' is not one of"):
        load_dataset(str(bad))


def test_mmlu_fingerprint_depends_on_split_and_content(tmp_path):
    root = make_mmlu(tmp_path / "mmlu", header=True)
    test_fp = load_dataset(str(root)).fingerprint
    assert test_fp == load_dataset(str(root)).fingerprint
    assert test_fp != load_dataset(str(root), split="dev").fingerprint
    (root / "test" / "anatomy_test.csv").write_text("id,lang,question,A,B,C,D,target\nx,en,q?,a,b,c,d,A\n")
    assert test_fp != load_dataset(str(root)).fingerprint


# ---------------------------------------------------------------------------------------- ARC

def arc_row(id, labels, key, texts=None):
    texts = texts or [f"option {label}" for label in labels]
    return {"id": id, "question": {"stem": f"stem {id}?", "choices": [
        {"text": t, "label": label} for t, label in zip(texts, labels)]}, "answerKey": key}


def test_arc_numeric_labels_and_3_5_choices(tmp_path):
    path = write_jsonl(tmp_path / "ARC-Challenge-Dev.jsonl", [
        arc_row("a", "ABCD", "D"), arc_row("n", ["1", "2", "3", "4"], "2"),
        arc_row("three", "ABC", "C"), arc_row("five", "ABCDE", "E")])
    ds = load_dataset(str(path))
    assert detect_format(str(path)) == "arc"
    by_id = {i["id"]: i for i in ds.items}
    assert by_id["n"]["choices"] == {"A": "option 1", "B": "option 2", "C": "option 3", "D": "option 4"}
    assert by_id["n"]["target"] == "B"
    assert list(by_id["three"]["choices"]) == ["A", "B", "C"]
    assert by_id["five"]["target"] == "E"
    assert sorted(ds.notes) == ["1 item with 3 choices, kept with labels A-C",
                                "1 item with 5 choices, kept with labels A-E",
                                "1 item with numeric labels 1-4, mapped by position to letters"]
    # the folder stands for its one data file
    assert len(load_dataset(str(tmp_path))) == 4


def test_arc_unknown_answer_key(tmp_path):
    path = write_jsonl(tmp_path / "arc.jsonl", [arc_row("a", "ABCD", "D"), arc_row("b", "ABCD", "F")])
    with pytest.raises(RaitError, match=r"arc.jsonl, line 2, field 'answerKey': 'F' is not one of"):
        load_dataset(str(path))


# ------------------------------------------------------------------------ bad input + lenient

@pytest.mark.parametrize("rows, match", [
    (['{"question": "a?", "answers": ["b"]}', '{"question": "c?", "answers": '],
     r"line 2: not valid JSON"),
    ([{"question": "a?", "answers": ["b"]}, {"answers": ["d"]}], r"line 2, field 'question': is missing"),
    ([{"question": "a?", "answers": []}], r"line 1, field 'answers': is empty"),
    ([{"question": "a?"}], r"line 1, field 'answers': is missing"),
    ([{"question": "a?", "choices": {"A": "x", "B": "y"}, "target": "Z"}], r"line 1, field 'target': 'Z'"),
    ([{"question": "a?", "answers": ["b"]}, {"question": "c?", "choices": {"A": "x", "B": "y"}, "target": "A"}],
     r"line 2: is an MCQA row but earlier rows are OEQA"),
    (["[1, 2]"], r"line 1: expected a JSON object"),
])
def test_bad_rows_name_file_line_field(tmp_path, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(RaitError, match=r"bad.jsonl, " + match):
        load_dataset(str(path))


def test_json_array_errors_name_the_record(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"question": "a?", "answers": ["b"]}, {"question": "", "answers": ["b"]}]))
    with pytest.raises(RaitError, match=r"rows.json, record 2, field 'question'"):
        load_dataset(str(path))


def test_file_level_errors(tmp_path):
    with pytest.raises(RaitError, match="no such file or folder"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    odd = tmp_path / "data.xyz"
    odd.write_text("x")
    with pytest.raises(RaitError, match=r"cannot tell the format .*'.xyz'"):
        load_dataset(str(odd))
    with pytest.raises(RaitError, match=r"unknown format 'arcc'.*did you mean 'arc'"):
        load_dataset(str(odd), fmt="arcc")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(RaitError, match="empty.jsonl: no items"):
        load_dataset(str(empty))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(RaitError, match="bin.jsonl, line 1: not UTF-8"):
        load_dataset(str(binary))
    good = write_jsonl(tmp_path / "ok.jsonl", [{"question": "a?", "answers": ["b"]}])
    with pytest.raises(RaitError, match="--split applies"):
        load_dataset(str(good), split="test")


def test_lenient_skips_and_records_every_bad_row(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "a?", "answers": ["b"]}, "{not json", {"question": "c?", "answers": []},
        {"question": "d?", "answers": ["e"]}, {"answers": ["f"]}])
    ds = load_dataset(str(path), lenient=True)
    assert len(ds) == 2 and len(ds.skipped) == 3
    where = [w for w, _ in ds.skipped]
    assert where == [f"{path}, line 2", f"{path}, line 3", f"{path}, line 5"]
    reasons = [r for _, r in ds.skipped]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1].startswith("field 'answers': is empty")
    assert reasons[2] == "field 'question': is missing"


def test_lenient_with_nothing_valid_is_still_an_error(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"question": "a?", "answers": []}])
    with pytest.raises(RaitError, match=r"no items \(1 rows skipped; first: .*line 1: field 'answers'"):
        load_dataset(str(path), lenient=True)


# ----------------------------------------------------------------------------- built-in + hub

def _demo_present(name: str) -> bool:
    return (resources.files("rait.data") / "demo" / name).is_file()


@pytest.mark.parametrize("spec, split, file, task", [
    ("demo-oeqa", None, "oeqa.jsonl", "oeqa"), ("demo-oeqa", "shots", "oeqa_shots.jsonl", "oeqa"),
    ("demo-mcqa", None, "mcqa.jsonl", "mcqa"), ("demo-mcqa", "dev", "mcqa_dev.jsonl", "mcqa")])
def test_builtin_demo_sets(spec, split, file, task):
    if not _demo_present(file):
        pytest.skip(f"bundled {file} not written yet")
    ds = load_dataset(spec, split=split)
    assert ds.task == task and len(ds) > 0 and ds.source.startswith(spec)


def test_builtin_names_resolve_inside_the_package(tmp_path, monkeypatch):
    from rait.data import loaders

    demo = tmp_path / "demo"
    demo.mkdir()
    mc = {"question": "q?", "choices": {"A": "x", "B": "y"}, "target": "A", "subject": "s"}
    write_jsonl(demo / "mcqa.jsonl", [dict(mc, id=f"m{i}") for i in range(3)])
    write_jsonl(demo / "mcqa_dev.jsonl", [dict(mc, id="d0")])
    monkeypatch.setattr(loaders.resources, "files", lambda package: tmp_path)
    main = load_dataset("demo-mcqa")
    assert (main.name, len(main), main.source) == ("demo-mcqa", 3, "demo-mcqa (split default)")
    shot_spec, shot_split = default_shot_source("demo-mcqa")
    shots = load_dataset(shot_spec, split=shot_split)
    assert (shots.name, [i["id"] for i in shots.items]) == ("demo-mcqa-dev", ["d0"])
    assert detect_format("demo-mcqa") == "builtin"
    with pytest.raises(RaitError, match="bundled file oeqa.jsonl is missing"):
        load_dataset("demo-oeqa")


def test_builtin_unknown_split():
    with pytest.raises(RaitError, match=r"demo-mcqa: unknown split 'test'.*dev"):
        load_dataset("demo-mcqa", split="test")


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace datasets.load_dataset with an in-memory table per (repo, config, split)."""
    import datasets

    tables: dict = {}
    calls: list = []

    def fake_load_dataset(repo, config=None, split=None, **kwargs):
        calls.append((repo, config, split, kwargs))
        if (repo, config, split) not in tables:
            raise ValueError(f"Unknown split {split!r}")
        return datasets.Dataset.from_list(tables[(repo, config, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return tables, calls


def test_hub_trivia_qa_dedupes_question_ids_and_uses_value(fake_hub):
    tables, calls = fake_hub
    row = lambda qid, value, aliases: {"question": f"{qid}?", "question_id": qid,
                                       "answer": {"value": value, "aliases": aliases}}
    tables[("mandarjoshi/trivia_qa", "rc.nocontext", "validation")] = [
        row("tc_1", "Paris", ["paris", "Paris", "Lutetia"]), row("tc_1", "Paris", ["paris", "Paris", "Lutetia"]),
        row("tc_2", "", ["the beatles", "Beatles"])]
    ds = load_dataset("hf:mandarjoshi/trivia_qa")
    assert calls[0][:3] == ("mandarjoshi/trivia_qa", "rc.nocontext", "validation")
    assert "trust_remote_code" not in calls[0][3]
    assert [i["id"] for i in ds.items] == ["tc_1", "tc_2"]
    assert ds.items[0]["answers"] == ["Paris", "paris", "Lutetia"]
    assert ds.items[1]["answers"][0] == "Beatles"
    assert [i["answer_source"] for i in ds.items] == ["primary", "aliases"]  # tc_2 has no value
    assert ds.notes == ["1 rows with a repeated question_id dropped (first kept)"]
    assert detect_format("hf:mandarjoshi/trivia_qa") == "hub:triviaqa"


def test_hub_nq_open_mmlu_arc_and_generic(fake_hub):
    tables, _ = fake_hub
    tables[("google-research-datasets/nq_open", None, "validation")] = [{"question": "q?", "answer": ["a", "b"]}]
    tables[("cais/mmlu", "anatomy", "validation")] = [
        {"question": "q?", "subject": "anatomy", "choices": ["None", "b", "c", "d"], "answer": 2}]
    tables[("allenai/ai2_arc", "ARC-Challenge", "test")] = [
        {"id": "x", "question": "q?", "choices": {"text": ["p", "q", "r"], "label": ["1", "2", "3"]},
         "answerKey": "3"}]
    tables[("me/qa", None, "train")] = [{"prompt": "q?", "choices": ["x", "y"], "target": 1}]
    assert load_dataset("hf:google-research-datasets/nq_open").items[0]["answers"] == ["a", "b"]
    mmlu = load_dataset("hf:cais/mmlu:anatomy", split="val").items[0]
    assert (mmlu["target"], mmlu["choices"]["A"], mmlu["subject"]) == ("C", "None", "anatomy")
    arc = load_dataset("hf:allenai/ai2_arc")
    assert arc.items[0]["choices"] == {"A": "p", "B": "q", "C": "r"} and arc.items[0]["target"] == "C"
    generic = load_dataset("hf:me/qa", fields={"question": "prompt"}).items[0]
    assert generic["choices"] == {"A": "x", "B": "y"} and generic["target"] == "B"


def test_hub_errors_are_user_errors(fake_hub):
    with pytest.raises(RaitError, match=r"hf:cais/mmlu: cannot load split 'nope'"):
        load_dataset("hf:cais/mmlu", split="nope")
    tables, _ = fake_hub
    tables[("google-research-datasets/nq_open", None, "validation")] = [
        {"question": "q?", "answer": ["a"]}, {"question": "r?", "answer": []}]
    with pytest.raises(RaitError, match=r"\(validation split\), row 2, field 'answer': is empty"):
        load_dataset("hf:google-research-datasets/nq_open")


def test_default_shot_source(tmp_path):
    root = make_mmlu(tmp_path / "mmlu", header=True)
    assert default_shot_source(str(root)) == (str(root), "dev")
    assert default_shot_source(str(root), "dev") is None
    assert default_shot_source("demo-mcqa") == ("demo-mcqa", "dev")
    assert default_shot_source("demo-oeqa") == ("demo-oeqa", "shots")
    assert default_shot_source("demo-oeqa", "shots") is None  # shots never come from the pool itself
    assert default_shot_source("hf:cais/mmlu:all", "test") == ("hf:cais/mmlu:all", "dev")
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "a?", "answers": ["b"]}])
    assert default_shot_source(str(qa)) is None
    assert default_shot_source("hf:google-research-datasets/nq_open") is None


# ------------------------------------------------------------------------------------- carving

def dataset_of(ids: list[str]) -> Dataset:
    items = [make_oeqa_item(f"question {i}?", ["a"], id=i) for i in ids]
    return Dataset(name="d", task="oeqa", items=items, source="mem", fingerprint="f")


ids_strategy = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60, unique=True)
size_strategy = st.one_of(st.floats(min_value=0, max_value=0.99), st.integers(min_value=0, max_value=60))


@settings(max_examples=150, deadline=None)
@given(ids=ids_strategy, test_size=size_strategy, seed=st.integers(0, 2**32), shuffle_seed=st.integers(0, 99))
def test_carving_is_disjoint_covering_deterministic_and_order_independent(ids, test_size, seed, shuffle_seed):
    if isinstance(test_size, int) and test_size > len(ids):
        with pytest.raises(RaitError, match="larger than the dataset"):
            carve(dataset_of(ids), "test", test_size=test_size, seed=seed)
        return
    n_test = held_out_count(test_size, len(ids))
    if n_test in (0, len(ids)):
        return  # one part is empty: covered by test_empty_part_is_an_error
    ds = dataset_of(ids)
    test = [i["id"] for i in carve(ds, "test", test_size=test_size, seed=seed).items]
    pool = [i["id"] for i in carve(ds, "pool", test_size=test_size, seed=seed).items]
    assert not set(test) & set(pool)
    assert sorted(test + pool) == sorted(ids)
    assert len(test) == n_test
    assert test == [i["id"] for i in carve(ds, "test", test_size=test_size, seed=seed).items]
    shuffled = list(ids)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert test == [i["id"] for i in carve(dataset_of(shuffled), "test", test_size=test_size, seed=seed).items]
    # the test set is the lowest-ranked ids
    assert max(rank_key(seed, i) for i in test) < min(rank_key(seed, i) for i in pool)


@settings(max_examples=80, deadline=None)
@given(ids=ids_strategy, limit=st.integers(1, 70), seed=st.integers(0, 1000))
def test_limit_is_a_seeded_prefix_sample(ids, limit, seed):
    ds = dataset_of(ids)
    small = [i["id"] for i in take(ds, limit, seed=seed).items]
    bigger = [i["id"] for i in take(ds, limit + 1, seed=seed).items]
    assert len(small) == min(limit, len(ids))
    assert small == bigger[:limit]
    if limit >= len(ids):
        assert sorted(small) == sorted(ids)
    else:
        reversed_ds = dataset_of(list(reversed(ids)))
        assert small == [i["id"] for i in take(reversed_ds, limit, seed=seed).items]


def test_held_out_count_rules():
    assert held_out_count(0.1, 95) == 10  # 9.5 rounds half up
    assert held_out_count(0.0, 10) == 0
    assert held_out_count(3, 10) == 3 and held_out_count(3.0, 10) == 3
    for bad in (-1, 2.5, float("nan"), True, "x"):
        with pytest.raises(RaitError):
            held_out_count(bad, 10)


def test_empty_part_is_an_error_and_unknown_part():
    ds = dataset_of(["a", "b"])
    with pytest.raises(RaitError, match="the test part is empty"):
        carve(ds, "test", test_size=0, seed=0)
    with pytest.raises(RaitError, match="part must be one of"):
        carve(ds, "train", test_size=1, seed=0)
    assert carve(ds, "all", test_size=1, seed=0) is ds


def test_carving_changes_seed_and_fingerprint():
    ds = dataset_of([f"id{i}" for i in range(200)])
    a = carve(ds, "test", test_size=20, seed=1)
    b = carve(ds, "test", test_size=20, seed=2)
    assert {i["id"] for i in a.items} != {i["id"] for i in b.items}
    assert len({a.fingerprint, b.fingerprint, carve(ds, "pool", test_size=20, seed=1).fingerprint}) == 3
    assert a.name == "d-test" and a.notes[-1].startswith("carved the test part: 20 of 200")


def test_load_with_options_end_to_end(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": f"i{n}", "question": f"q{n}?", "answers": ["a"]}
                                               for n in range(50)])
    opts = DataOptions(part="pool", test_size=0.2, split_seed=7, limit=5)
    ds = load_with_options(str(path), opts)
    test = load_with_options(str(path), DataOptions(part="test", test_size=0.2, split_seed=7))
    full_pool = load_with_options(str(path), DataOptions(part="pool", test_size=0.2, split_seed=7))
    assert len(ds) == 5 and len(test) == 10 and len(full_pool) == 40
    assert [i["id"] for i in ds.items] == [i["id"] for i in full_pool.items[:5]]
    assert not {i["id"] for i in full_pool.items} & {i["id"] for i in test.items}


# ------------------------------------------------------------------------- carving few-shot examples

def write_arc(path: Path, n: int, *, order_seed: int | None = None) -> Path:
    """An ARC-Challenge-format file of n four-option science questions (ids arc-00, arc-01, ...)."""
    rows = [arc_row(f"arc-{i:02d}", "ABCD", "ABCD"[i % 4]) for i in range(n)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl(path, rows)


def ids_of(dataset) -> list[str]:
    return [item["id"] for item in dataset.items]


def test_shots_carved_out_of_a_file_are_disjoint_from_the_rest_cover_it_and_are_stable(tmp_path):
    """ARC has one split here (dev): its shots are carved out of it, and the test set is the rest."""
    path = write_arc(tmp_path / "ARC-Challenge-Dev.jsonl", 30)
    full = load_dataset(str(path))
    shots, rest = carve_shots(full, 5, seed=0)
    assert len(shots) == 5 and len(rest) == 25
    assert not set(ids_of(shots)) & set(ids_of(rest))
    assert sorted(ids_of(shots) + ids_of(rest)) == sorted(ids_of(full))
    # the pool / test carving itself: the shots are its test part, the rest its pool part
    assert ids_of(shots) == ids_of(carve(full, "test", test_size=5, seed=0))
    assert ids_of(rest) == ids_of(carve(full, "pool", test_size=5, seed=0))
    # the same carve on every run and whatever the file order; another seed, another carve
    shuffled = load_dataset(str(write_arc(tmp_path / "shuffled" / "ARC-Challenge-Dev.jsonl", 30, order_seed=3)))
    assert ids_of(carve_shots(shuffled, 5, seed=0)[0]) == ids_of(shots)
    assert ids_of(carve_shots(load_dataset(str(path)), 5, seed=0)[0]) == ids_of(shots)
    assert set(ids_of(carve_shots(full, 5, seed=1)[0])) != set(ids_of(shots))
    assert shots.fingerprint != rest.fingerprint
    assert rest.name == full.name and "without its 5 carved few-shot examples" in rest.notes[-1]
    # the test set as loaded: without its shots, then --limit (N items are still tested)
    test = load_with_options(str(path), DataOptions(), without_shots=(5, 0))
    assert ids_of(test) == ids_of(rest)
    limited = load_with_options(str(path), DataOptions(limit=7), without_shots=(5, 0))
    assert len(limited) == 7 and not set(ids_of(limited)) & set(ids_of(shots))


@settings(max_examples=100, deadline=None)
@given(ids=ids_strategy, size=st.integers(1, 60), seed=st.integers(0, 2**32))
def test_carved_shots_property(ids, size, seed):
    ds = dataset_of(ids)
    if size > len(ids):
        with pytest.raises(RaitError, match=f"{size} shots asked for, but it holds only {len(ids)} items"):
            carve_shots(ds, size, seed=seed)
        return
    shots, rest = carve_shots(ds, size, seed=seed)
    assert len(shots) == size and sorted(ids_of(shots) + ids_of(rest)) == sorted(ids)
    assert not set(ids_of(shots)) & set(ids_of(rest))
    assert ids_of(shots) == [i for i in sorted(ids, key=lambda i: rank_key(seed, i))[:size]]


def test_shot_carving_bad_input_is_one_clear_error(tmp_path):
    path = write_arc(tmp_path / "arc.jsonl", 6)
    full = load_dataset(str(path))
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(RaitError, match="the number of shots to carve must be a whole number >= 1"):
            carve_shots(full, bad, seed=0)
    with pytest.raises(RaitError, match="7 shots asked for, but it holds only 6 items"):
        load_with_options(str(path), DataOptions(), without_shots=(7, 0))
    with pytest.raises(RaitError, match="6 shots carved out of its 6 items leave nothing to test"):
        load_with_options(str(path), DataOptions(), without_shots=(6, 0))
    with pytest.raises(RaitError, match="need the whole dataset \\(part all\\), not its test part"):
        load_with_options(str(path), DataOptions(part="test", test_size=3), without_shots=(2, 0))


# ----------------------------------------------------------------------- real shared data files

@pytest.mark.parametrize("relpath, split, n, task, fmt", [
    ("mmlu", "dev", 285, "mcqa", "mmlu"),
    ("mmlu", "val", 1531, "mcqa", "mmlu"),
    ("mmlu", None, 14042, "mcqa", "mmlu"),
    ("arc/ARC-c/ARC-Challenge-Dev.jsonl", None, 299, "mcqa", "arc"),
    ("nq/NQ-open.dev.jsonl", None, 3610, "oeqa", "nq-open"),
    ("nq/dev.json", None, 3610, "oeqa", "generic"),
    ("nq/dev.csv", None, 3610, "oeqa", "generic"),
    ("triviaqa/topics.dpr.trivia.dev.txt", None, 8837, "oeqa", "triviaqa-tsv"),
])
def test_shared_data_files_load_exactly(shared_data, relpath, split, n, task, fmt):
    spec = str(shared_data / relpath)
    ds = load_dataset(spec, split=split)
    assert (len(ds), ds.task, ds.skipped) == (n, task, [])
    assert detect_format(spec, split=split) == fmt
    assert len({i["id"] for i in ds.items}) == n


def test_arc_challenge_dev_gives_up_its_carved_shots(shared_data):
    """configs/study/mmlu.yaml: 5 ARC shots carved out of the dev file, the other 294 tested."""
    path = str(shared_data / "arc/ARC-c/ARC-Challenge-Dev.jsonl")
    shots, rest = carve_shots(load_dataset(path), 5, seed=0)
    assert (len(shots), len(rest)) == (5, 294)
    assert {item["subject"] for item in shots.items} == {"science"}
    assert ids_of(load_with_options(path, DataOptions(), without_shots=(5, 0))) == ids_of(rest)


def test_shared_data_details(shared_data):
    nones = sum(text == "None" for split in ("dev", "val", "test")
                for item in load_dataset(str(shared_data / "mmlu"), split=split).items
                for text in item["choices"].values())
    assert nones == 12
    dev = load_dataset(str(shared_data / "mmlu"), split="dev")
    assert len({i["subject"] for i in dev.items}) == 57
    arc = load_dataset(str(shared_data / "arc/ARC-c/ARC-Challenge-Dev.jsonl"))
    assert sorted(arc.notes) == ["1 item with 5 choices, kept with labels A-E",
                                 "3 items with 3 choices, kept with labels A-C",
                                 "4 items with numeric labels 1-4, mapped by position to letters"]
    csv_items = load_dataset(str(shared_data / "nq/dev.csv")).items
    json_items = load_dataset(str(shared_data / "nq/dev.json")).items
    assert csv_items == json_items
    tq = load_dataset(str(shared_data / "triviaqa/topics.dpr.trivia.dev.txt"))
    belize = next(i for i in tq.items if "Belize" in i["question"] and "registration" in i["question"])
    assert belize["answers"][0] == "Bh." and "BH (disambiguation)" in belize["answers"]
    assert {i["answer_source"] for i in tq.items} == {"aliases"}
    assert {i.get("answer_source") for i in json_items} == {"primary"}  # nq/dev.json has `answer`
