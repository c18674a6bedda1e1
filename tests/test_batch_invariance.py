"""The README's promise, tested as it is written: "Each item's numbers depend only on the item and
the seed, so the merged table equals an unsharded one". The same items probed with another
--limit, as shards, or with batch sizes 1, 3 and 8 give identical rows (samples, correctness,
certainty, every number), in float32 and in bfloat16, where padding changed logits.

The model is tests/tiny.py's with its weight matrices redrawn at std 0.3: a chaotic random net
amplifies rounding the way a deep real model does. On it, the former batching (left-padded
batches, `batch_invariant=False`) changed 3 of 24 bf16 rows at batch size 3 and 6 at batch size 8.
"""

import json

import pytest

torch = pytest.importorskip("torch")

from rait import config  # noqa: E402
from rait.backends import hf  # noqa: E402
from rait.cli import main  # noqa: E402
from rait.data.schema import make_mcqa_item, make_oeqa_item  # noqa: E402
from rait.stages import probe  # noqa: E402
from tiny import CharEmbedder  # noqa: E402

WORDS = "the quick brown fox jumps over lazy dog Mars Jane Austen Pacific Ocean Eight Piano Carbon".split()


def question(i: int) -> str:
    """Questions of 1 to 9 words, so a batch of them would need padding."""
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 9)) + "?"


OEQA = [make_oeqa_item(question(i), [WORDS[i % len(WORDS)]], id=f"o{i}") for i in range(40)]
MCQA = [make_mcqa_item(question(i), {"A": "Mars", "B": "Jane", "C": "Piano", "D": "Ocean"}, "ABCD"[i % 4],
                       subject=("astronomy", "music")[i % 2], id=f"m{i}") for i in range(40)]


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    from rait import certainty

    monkeypatch.setattr(certainty, "load_embedder", lambda name=None, device="cpu": CharEmbedder())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forwards are all overhead; several threads only fight over the cores (and a shared CI
    machine), so one is much faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    out = tmp_path_factory.mktemp("sharp-tiny")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def loaded(request, sharp_model_dir):
    from rait.models import load_model

    return request.param, load_model(str(sharp_model_dir), request.param)


def probe_table(tmp_path, loaded, items, name, batch_size):
    dtype, model = loaded
    cfg = config.build(probe.ProbeConfig, {"model": "tiny", "dtype": dtype, "samples": 5, "max_new_tokens": 8,
                                           "batch_size": batch_size, "seed": 3})
    return probe.probe(cfg, items, tmp_path / f"{name}.jsonl", loaded=model)


@pytest.mark.parametrize("pool", [OEQA, MCQA], ids=["oeqa", "mcqa"])
def test_rows_do_not_depend_on_limit_shards_or_batch_size(tmp_path, loaded, pool):
    reference = probe_table(tmp_path, loaded, pool[:24], "limit24-batch8", 8)
    assert probe_table(tmp_path, loaded, pool[:40], "limit40-batch8", 8)[:24] == reference
    for batch_size in (1, 3):
        assert probe_table(tmp_path, loaded, pool[:24], f"limit24-batch{batch_size}", batch_size) == reference
    shards = [probe_table(tmp_path, loaded, probe.shard_items(pool[:24], index, 2), f"shard{index}", 3)
              for index in range(2)]
    by_id = {row["id"]: row for rows in shards for row in rows}
    assert [by_id[item["id"]] for item in pool[:24]] == reference
    # the comparison has teeth: the rows differ from each other
    key = "samples" if pool is OEQA else "probs"
    assert len({json.dumps(row[key]) for row in reference}) > 12


def test_padding_changes_bf16_logits_on_the_tiny_model(sharp_model_dir):
    """Why prompts run alone: on this very model a left-padded bf16 batch (with its attention mask
    and position ids) does not give the logits of the prompts run one by one."""
    from rait.models import load_model

    model, tok, _ = load_model(str(sharp_model_dir), "bfloat16")
    rows = hf.encode(tok, [question(i) for i in range(8)])
    assert len({len(row) for row in rows}) > 1
    padded = hf._last_logits(model, rows, hf.pad_id(tok))
    alone = torch.cat([hf._last_logits(model, [row], hf.pad_id(tok)) for row in rows])
    assert not torch.equal(padded, alone)


def test_cli_limit_and_shards_give_the_rows_of_the_whole_table(tmp_path, sharp_model_dir):
    """`rait probe --limit 24` == the first 24 rows of `--limit 40` == `--shard 0/2` + `1/2` merged,
    in bfloat16, through the command line."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": item["id"], "question": item["question"],
                                        "answers": item["answers"]}) + "\n" for item in OEQA))
    common = [str(pool), "--model", str(sharp_model_dir), "--dtype", "bfloat16", "--samples", "4",
              "--max-new-tokens", "6"]

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    assert main(["probe", *common, "--limit", "24", "--batch-size", "8", "--out", str(tmp_path / "a.jsonl")]) == 0
    assert main(["probe", *common, "--limit", "40", "--batch-size", "3", "--out", str(tmp_path / "b.jsonl")]) == 0
    for index in range(2):
        assert main(["probe", *common, "--limit", "24", "--batch-size", "1", "--out", str(tmp_path / "s.jsonl"),
                     "--shard", f"{index}/2"]) == 0
    assert main(["probe", *common, "--limit", "24", "--out", str(tmp_path / "s.jsonl"), "--merge-shards", "2"]) == 0
    assert rows("b.jsonl")[:24] == rows("a.jsonl")
    assert rows("s.jsonl") == rows("a.jsonl")
