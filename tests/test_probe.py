"""`rait probe` end to end on the tiny model: table contract, meta, resumption, refusal of mixing."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

from rait import config  # noqa: E402
from rait.cli import main  # noqa: E402
from rait.data.schema import make_mcqa_item, make_oeqa_item  # noqa: E402
from rait.errors import RaitError  # noqa: E402
from rait.stages import probe  # noqa: E402
from tiny import CharEmbedder  # noqa: E402

OEQA = [make_oeqa_item(q, a) for q, a in [
    ("What is the capital of France?", ["Paris"]), ("Who wrote Hamlet?", ["Shakespeare"]),
    ("What is 2+2?", ["4", "four"]), ("Which planet has rings?", ["Saturn"]),
    ("What colour is the sky?", ["blue"])]]
MCQA = [make_mcqa_item(q, c, t, subject=s) for q, c, t, s in [
    ("Largest planet?", {"A": "Mars", "B": "Jupiter", "C": "Venus", "D": "Earth"}, "B", "astronomy"),
    ("Smallest planet?", {"A": "Mercury", "B": "Jupiter", "C": "Venus", "D": "Earth"}, "A", "astronomy"),
    ("H2O is?", {"A": "Salt", "B": "Water", "C": "Air"}, "B", "chemistry")]]
MCQA_SHOTS = [make_mcqa_item(f"Astronomy shot {i}?", {"A": "x", "B": "y", "C": "z", "D": "w"}, "A",
                             subject="astronomy", id=f"astro-{i}") for i in range(3)]




@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    from rait import certainty

    monkeypatch.setattr(certainty, "load_embedder", lambda name=None, device="cpu": CharEmbedder())


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from rait.models import load_model

    return load_model(str(tiny_model_dir), "float32")


def cfg(tiny_model_dir, **kw):
    base = {"model": str(tiny_model_dir), "dtype": "float32", "samples": 4, "max_new_tokens": 6}
    return config.build(probe.ProbeConfig, {**base, **kw})


def test_oeqa_table_and_meta(tmp_path, tiny_model_dir, loaded):
    out = tmp_path / "k.jsonl"
    rows = probe.probe(cfg(tiny_model_dir), OEQA, out, dataset_meta={"name": "t", "fingerprint": "f"},
                             loaded=loaded)
    stored = [json.loads(line) for line in out.read_text().splitlines()]
    assert stored == rows and [r["id"] for r in rows] == [i["id"] for i in OEQA]
    for item, row in zip(OEQA, rows):
        assert {k: row[k] for k in item} == item
        assert row["task"] == "oeqa" and len(row["samples"]) == 4
        assert 0 <= row["correctness"] <= 1 and 0 <= row["certainty"] <= 1
        assert row["correctness"] * 4 == pytest.approx(round(row["correctness"] * 4))
    meta = json.loads((tmp_path / "k.jsonl.meta.json").read_text())
    assert meta["shots"]["ids"] == ["shot-oeqa-1", "shot-oeqa-2", "shot-oeqa-3"]
    assert meta["decoding"]["samples"] == 4 and meta["decoding"]["temperature"] == 1.0
    assert meta["summary"]["n"] == 5 and sum(map(sum, meta["summary"]["histogram"])) == 5
    assert meta["summary"]["mean_correctness"] == pytest.approx(sum(r["correctness"] for r in rows) / 5, abs=1e-4)
    assert set(meta["versions"]) == {"torch", "transformers", "rait"}
    assert meta["config"]["samples"] == 4 and meta["dataset"]["fingerprint"] == "f"
    assert not (tmp_path / ".k.jsonl.progress.json").exists()


def test_mcqa_table_subject_shots_and_fallback(tmp_path, tiny_model_dir, loaded):
    out = tmp_path / "m.jsonl"
    rows = probe.probe(cfg(tiny_model_dir, shots=2), MCQA, out, shots=MCQA_SHOTS, loaded=loaded)
    for item, row in zip(MCQA, rows):
        assert list(row["probs"]) == list(item["choices"])
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["correctness"] == row["probs"][item["target"]]
        assert 0 <= row["certainty"] <= 1 and row["entropy"] >= 0
    shots = json.loads((tmp_path / "m.jsonl.meta.json").read_text())["shots"]
    assert shots["ids"]["astronomy"] == ["astro-0", "astro-1"]
    assert shots["fallback_to_builtin"] == ["chemistry"]
    assert shots["ids"]["chemistry"] == ["shot-mcqa-1", "shot-mcqa-2"]


def reference_entropy(probs):  # opencompass_CRaFT: entropy of the raw letter probabilities
    return -sum(p * math.log(p) for p in probs if p > 0)


@pytest.mark.parametrize("rule", ["normalised", "raw-entropy"])
def test_mcqa_rows_keep_the_raw_letter_mass_and_the_chosen_certainty(tmp_path, tiny_model_dir, loaded, rule):
    from rait.certainty import entropy_certainty

    out = tmp_path / "m.jsonl"
    rows = probe.probe(cfg(tiny_model_dir, mcqa_certainty=rule), MCQA, out, loaded=loaded)
    for row in rows:
        mass = row["option_mass"]
        assert list(mass) == list(row["choices"]) and "no_letter_mass" not in row
        assert 0 < row["letter_mass"] <= 1 and row["letter_mass"] == pytest.approx(sum(mass.values()), rel=1e-8)
        for label, p in row["probs"].items():
            assert p == pytest.approx(mass[label] / row["letter_mass"], abs=1e-6)
        assert row["entropy_raw"] == pytest.approx(reference_entropy(mass.values()), rel=1e-7)
        expected = (math.exp(-row["entropy_raw"]) if rule == "raw-entropy"
                    else entropy_certainty(list(mass.values())))
        assert row["certainty"] == pytest.approx(expected, abs=1e-6)
    meta = json.loads((tmp_path / "m.jsonl.meta.json").read_text())
    assert meta["decoding"]["certainty"] == rule and meta["config"]["mcqa_certainty"] == rule
    assert meta["summary"]["items_no_letter_mass"] == 0 and 0 < meta["summary"]["mean_letter_mass"] <= 1


def test_mcqa_certainty_is_in_the_fingerprint_of_mcqa_tables_only(tiny_model_dir):
    def fingerprint(items, rule):
        return probe.plan_probe(cfg(tiny_model_dir, mcqa_certainty=rule), items).fingerprint

    assert fingerprint(MCQA, "normalised") != fingerprint(MCQA, "raw-entropy")
    assert fingerprint(OEQA, "normalised") == fingerprint(OEQA, "raw-entropy")


def test_mcqa_row_without_letter_mass_is_flagged_and_counted():
    item = MCQA[0]
    for rule in ("normalised", "raw-entropy"):
        row = probe.mcqa_row(item, dict.fromkeys(item["choices"], 0.0), rule)
        assert row["no_letter_mass"] is True and row["letter_mass"] == 0.0
        assert row["probs"] == dict.fromkeys(item["choices"], 0.25) and row["correctness"] == 0.25
        assert row["certainty"] == 0.0  # not 1.0, which the raw entropy of nothing would give
    fine = probe.mcqa_row(MCQA[1], {"A": 0.5, "B": 0.1, "C": 0.1, "D": 0.05}, "raw-entropy")
    assert "no_letter_mass" not in fine and fine["correctness"] == pytest.approx(0.5 / 0.75, abs=1e-6)
    summary = probe.summarize([row, fine], 1.0, 2)
    assert summary["items_no_letter_mass"] == 1 and summary["mean_letter_mass"] == pytest.approx(0.375)
    assert "warning: 1 items gave the option letters no probability" in probe.format_summary(summary, Path("m.jsonl"))


def test_probe_of_a_model_that_gives_the_letters_no_mass(tmp_path, tiny_model_dir, loaded):
    """End to end: the rows are written, flagged and counted in the meta (not a silent uniform)."""
    import torch

    from rait.backends import hf

    model, tok, info = loaded

    class LettersImpossible(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.config = model, model.config

        def forward(self, **kwargs):
            out = self.model(**kwargs)
            out.logits[..., [t for label in "ABCD" for t in hf.option_token_ids(tok, label)]] = float("-inf")
            return out

    rows = probe.probe(cfg(tiny_model_dir), MCQA, tmp_path / "z.jsonl", loaded=(LettersImpossible(), tok, info))
    assert all(row["no_letter_mass"] and row["certainty"] == 0.0 for row in rows)
    meta = json.loads((tmp_path / "z.jsonl.meta.json").read_text())
    assert meta["summary"]["items_no_letter_mass"] == len(MCQA)


def test_shots_disjoint_from_pool():
    source = [OEQA[0], make_oeqa_item("Other question?", ["x"], id=OEQA[1]["id"]),
              make_oeqa_item("Fresh question?", ["y"], id="fresh")]
    from rait.prompts import plan_shots

    plan, record = plan_shots(OEQA, "oeqa", 1, source, stage="probe")
    assert record["ids"] == ["fresh"]
    with pytest.raises(RaitError, match="only 1"):
        plan_shots(OEQA, "oeqa", 2, source, stage="probe")


def test_same_seed_identical_and_resume_after_interrupt_is_byte_identical(tmp_path, tiny_model_dir, loaded,
                                                                        monkeypatch):
    monkeypatch.setattr(probe, "ROWS_PER_WRITE", 2)
    whole = tmp_path / "whole.jsonl"
    probe.probe(cfg(tiny_model_dir), OEQA, whole, loaded=loaded)
    again = tmp_path / "again.jsonl"
    probe.probe(cfg(tiny_model_dir, batch_size=3), OEQA, again, loaded=loaded)
    assert again.read_bytes() == whole.read_bytes()

    real_chunk, calls = probe.probe_chunk, []

    def dying_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real_chunk(*args, **kwargs)

    cut = tmp_path / "cut.jsonl"
    monkeypatch.setattr(probe, "probe_chunk", dying_chunk)
    with pytest.raises(KeyboardInterrupt):
        probe.probe(cfg(tiny_model_dir), OEQA, cut, loaded=loaded)
    assert len(cut.read_text().splitlines()) == 4 and not (tmp_path / "cut.jsonl.meta.json").exists()
    # a kill in the middle of the next write: half a line
    with cut.open("a") as handle:
        handle.write('{"id": "torn", "quest')
    monkeypatch.setattr(probe, "probe_chunk", real_chunk)
    computed = []
    monkeypatch.setattr(probe, "run_chunks", lambda items, out, done, *a: (computed.append(done),
                                                                           real_run(items, out, done, *a)))
    probe.probe(cfg(tiny_model_dir), OEQA, cut, loaded=loaded)
    assert computed == [4]  # resumed after the 4 finished rows
    assert cut.read_bytes() == whole.read_bytes()


real_run = probe.run_chunks


def test_partial_chunk_is_recomputed(tmp_path, tiny_model_dir, loaded, monkeypatch):
    monkeypatch.setattr(probe, "ROWS_PER_WRITE", 2)
    whole = tmp_path / "whole.jsonl"
    probe.probe(cfg(tiny_model_dir), OEQA, whole, loaded=loaded)
    part = tmp_path / "part.jsonl"
    lines = whole.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]))  # 1.5 chunks
    fp_state = json.loads((tmp_path / "whole.jsonl.meta.json").read_text())["fingerprint"]
    (tmp_path / ".part.jsonl.progress.json").write_text(json.dumps({"fingerprint": fp_state}))
    probe.probe(cfg(tiny_model_dir), OEQA, part, loaded=loaded)
    assert part.read_bytes() == whole.read_bytes()


def test_changed_setting_refused_complete_skipped_overwrite(tmp_path, tiny_model_dir, loaded, capsys):
    out = tmp_path / "k.jsonl"
    probe.probe(cfg(tiny_model_dir), OEQA[:2], out, loaded=loaded)
    before = out.read_bytes()
    rows = probe.probe(cfg(tiny_model_dir, batch_size=1), OEQA[:2], out, loaded=loaded)
    assert "already complete" in capsys.readouterr().err and len(rows) == 2
    with pytest.raises(RaitError, match="--overwrite"):
        probe.probe(cfg(tiny_model_dir, temperature=0.5), OEQA[:2], out, loaded=loaded)
    with pytest.raises(RaitError, match="--overwrite"):
        probe.probe(cfg(tiny_model_dir), OEQA[:3], out, loaded=loaded)
    assert out.read_bytes() == before
    rows = probe.probe(cfg(tiny_model_dir, temperature=0.0, overwrite=True), OEQA[:2], out, loaded=loaded)
    assert all(len(set(r["samples"])) == 1 for r in rows)  # greedy: all samples equal
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("{}\n")
    with pytest.raises(RaitError, match="not written by"):
        probe.probe(cfg(tiny_model_dir), OEQA[:2], foreign, loaded=loaded)


def test_bad_config_and_pool(tmp_path, tiny_model_dir):
    with pytest.raises(RaitError, match="samples"):
        probe.probe(cfg(tiny_model_dir, samples=0), OEQA, tmp_path / "x.jsonl")
    with pytest.raises(RaitError, match="mixes tasks"):
        probe.probe(cfg(tiny_model_dir), OEQA + MCQA, tmp_path / "x.jsonl")
    with pytest.raises(RaitError, match="empty"):
        probe.probe(cfg(tiny_model_dir), [], tmp_path / "x.jsonl")


def test_cli_end_to_end_and_vllm_hint(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"question": i["question"], "answers": i["answers"]}) + "\n"
                            for i in OEQA[:3]))
    out = tmp_path / "k.jsonl"
    status = main(["probe", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--samples", "2",
                   "--max-new-tokens", "4", "--dtype", "float32", "--shots", "1"])
    assert status == 0
    captured = capsys.readouterr()
    assert "1-shot plain prompts" in captured.err and "mean correctness" in captured.out
    assert len(out.read_text().splitlines()) == 3
    meta = json.loads((tmp_path / "k.jsonl.meta.json").read_text())
    assert meta["dataset"]["spec"] == str(data) and meta["shots"]["ids"] == ["shot-oeqa-1"]
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert main(["probe", str(data), "--out", str(tmp_path / "v.jsonl"), "--backend", "vllm"]) == 2
        assert "not installed" in capsys.readouterr().err


def test_sharded_probe_merges_to_the_unsharded_table(tmp_path, tiny_model_dir):
    """--shard I/N in separate processes + --merge-shards N == one unsharded probe."""
    import json

    from rait.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"s{i}", "question": f"Question number {i}?",
                                        "answers": [f"a{i}"]}) + "\n" for i in range(10)))
    common = [str(pool), "--model", str(tiny_model_dir), "--dtype", "float32", "--samples", "3",
              "--max-new-tokens", "3", "--batch-size", "4"]
    assert main(["probe", *common, "--out", str(tmp_path / "whole.jsonl")]) == 0
    for index in range(3):
        assert main(["probe", *common, "--out", str(tmp_path / "k.jsonl"), "--shard", f"{index}/3"]) == 0
    assert (tmp_path / "k.shard-1-of-3.jsonl").exists()
    assert main(["probe", *common, "--out", str(tmp_path / "k.jsonl"), "--merge-shards", "3"]) == 0
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    merged = [json.loads(line) for line in (tmp_path / "k.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == [f"s{i}" for i in range(10)]
    assert merged == whole
    (tmp_path / "k.shard-2-of-3.jsonl.meta.json").unlink()
    assert main(["probe", *common, "--out", str(tmp_path / "k.jsonl"), "--merge-shards", "3"]) == 2


def test_summary_counts_empty_samples():
    rows = [{"task": "oeqa", "correctness": 0.0, "certainty": 1.0, "samples": ["", " ", ""]},
            {"task": "oeqa", "correctness": 0.5, "certainty": 0.4, "samples": ["Paris", "", "Rome"]}]
    summary = probe.summarize(rows, 1.0, 2)
    assert (summary["empty_samples"], summary["samples_total"], summary["items_all_empty"]) == (4, 6, 1)
    assert "empty answers: 4 of 6 samples; 1 items answered nothing" in probe.format_summary(summary, Path("k.jsonl"))
    mcqa = probe.summarize([{"task": "mcqa", "correctness": 0.3, "certainty": 0.2, "probs": {}}], 1.0, 1)
    assert "empty_samples" not in mcqa
