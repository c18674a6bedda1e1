"""CUDA checks on tiny models built in code: training in bf16, probing and evaluation, each
compared with the same computation on the CPU. Run by `tests/gpu/run.sh` on a machine with a GPU;
skipped everywhere else.

Stage configs get `device="cuda"` where they have a `device` field; otherwise the stage's own
default applies (CUDA when present), and the tests check that the model really sits on CUDA.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")

from rait.stages import train as training  # noqa: E402
from rait.data.loaders import load_dataset  # noqa: E402
from rait.stages.eval import EvalConfig, evaluate  # noqa: E402
from rait.backends import load_for  # noqa: E402
from rait.stages import probe  # noqa: E402
from rait.stages.train import TrainConfig  # noqa: E402
from tiny import CharEmbedder  # noqa: E402

DEVICE = os.environ.get("RAIT_TEST_CUDA_DEVICE", "cuda")  # e.g. cuda:1 on a machine with several GPUs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ANSWERS = [" Paris", " I don't know", " Mars", " Jane Austen"]


def on_device(cls, **kwargs):
    """A stage config with device=DEVICE when the config has that field."""
    if "device" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["device"] = DEVICE
    return cls(**kwargs)


def device_type(model) -> str:
    return next(model.parameters()).device.type


def cpu_copy(loaded):
    model, tok, info = loaded
    return copy.deepcopy(model).to("cpu"), tok, {**info, "device": "cpu"}




@pytest.fixture(scope="module")
def taught_model_dir(tmp_path_factory):
    """The tiny model after 100 AdamW steps on 16 demo questions with their answers: a random tiny
    model answers every greedy prompt with the same string, which would make comparing tables
    across devices meaningless; this one answers each question differently (some correctly)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-taught"))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(DEVICE)
    texts = [f"Question: {it['question']}\nAnswer: {it['answers'][0]}\n" for it in load_dataset("demo-oeqa").items[:8]]
    texts += [f"Question: {it['question']}\nAnswer: {it['target']}\n" for it in load_dataset("demo-mcqa").items[:8]]
    batch = tok(texts, return_tensors="pt", padding=True).to(DEVICE)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(100):
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 1.0
    model.to("cpu").save_pretrained(path)
    return path


def training_rows() -> list[dict]:
    return [{"prompt": f"Question: What is the capital of {'France ' * (1 + i)}?\nAnswer:",
             "completion": ANSWERS[i], "weight": [0.5, 1.0, 2.0, 3.0][i]} for i in range(4)]


def full_logit_loss(model, batch) -> float:
    """Weighted token-mean NLL of the completion tokens with every position's logits, float32."""
    import torch.nn.functional as F

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != -100).float()
    w = batch["sample_weight"].to(nll.device)
    return (((nll * mask).sum(1) * w).sum() / (mask.sum(1) * w).sum()).item()


def cpu_reference_loss(model_dir, rows, tmp_path) -> float:
    """The initial model's loss on all rows, in float32 on the CPU."""
    from transformers import AutoModelForCausalLM

    cfg = TrainConfig(model=str(model_dir), method="full", dtype="float32", batch_size=len(rows))
    trainer = training.make_trainer(cfg, training.load_rows(rows)[0], str(model_dir), tmp_path / "ref", False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return full_logit_loss(model, batch)


def safetensors_of(path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


# ---- training ------------------------------------------------------------------------------------

def test_completion_head_loss_on_cuda_equals_cpu_full_logit_loss(tiny_model_dir, tmp_path):
    cfg = on_device(TrainConfig, model=str(tiny_model_dir), method="full", dtype="float32", batch_size=4)
    rows = training.load_rows(training_rows())[0]
    trainer = training.make_trainer(cfg, rows, str(tiny_model_dir), tmp_path / "ck", False)
    assert device_type(trainer.model) == "cuda"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    reference = full_logit_loss(copy.deepcopy(trainer.model).to("cpu").eval(), batch)
    trainer.model.eval()  # no dropout, as in the reference
    inputs = {k: v.to(trainer.args.device) for k, v in batch.items()}
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs).item()
    assert loss == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize("method, dtype, lr", [("full", "auto", 1e-3), ("lora", "bfloat16", 1e-2)])
def test_bf16_training_on_cuda_learns(tiny_model_dir, tmp_path, method, dtype, lr):
    """full + auto: float32 weights with bf16 autocast; lora + bfloat16: bf16 base weights."""
    assert torch.cuda.is_bf16_supported()
    rows = training_rows()
    cfg = on_device(TrainConfig, model=str(tiny_model_dir), method=method, dtype=dtype, batch_size=4,
                    epochs=8, learning_rate=lr, warmup_ratio=0.0, lr_scheduler="constant", logging_steps=1,
                    lora_dropout=0.0, seed=0)
    assert training.device_arguments(cfg, training.training_dtype(cfg)) == {"bf16": True}
    out = training.train_sft(rows, tmp_path / "out", cfg, progress=False)
    info = json.loads((out / "rait_train.json").read_text())
    losses = [loss for _, loss in info["losses"]]
    assert info["steps"] == 8 and len(losses) == 8 and all(math.isfinite(x) for x in losses)
    # each step sees all 4 rows, so the first loss is the initial model's loss on them: bf16 vs fp32 CPU
    assert losses[0] == pytest.approx(cpu_reference_loss(tiny_model_dir, rows, tmp_path), abs=0.05)
    assert losses[-1] < losses[0] - 0.05  # it learns
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 5  # and mostly step by step
    before, after = safetensors_of(tiny_model_dir), safetensors_of(out)
    assert sorted(before) == sorted(after)
    assert max((after[k].float() - before[k].float()).abs().max().item() for k in before) > 1e-3
    assert all(torch.isfinite(t.float()).all() for t in after.values())


# ---- probe ---------------------------------------------------------------------------------------

@pytest.fixture
def hash_embedder(monkeypatch):
    from rait import certainty

    monkeypatch.setattr(certainty, "load_embedder", lambda name=None, device="cpu": CharEmbedder())


def test_probe_on_cuda_is_seeded_and_matches_cpu(taught_model_dir, tmp_path, hash_embedder):
    items = load_dataset("demo-oeqa").items[:6]
    cfg = on_device(probe.ProbeConfig, model=str(taught_model_dir), dtype="float32", samples=4,
                    max_new_tokens=6, batch_size=3)
    loaded = load_for(cfg)
    assert device_type(loaded[0]) == "cuda"
    first = probe.probe(cfg, items, tmp_path / "cuda1.jsonl")  # the stage loads its own model
    second = probe.probe(cfg, items, tmp_path / "cuda2.jsonl", loaded=loaded)
    # the seeded sampler on CUDA: the same table, byte for byte
    assert (tmp_path / "cuda1.jsonl").read_bytes() == (tmp_path / "cuda2.jsonl").read_bytes()
    assert first == second
    cpu = probe.probe(cfg, items, tmp_path / "cpu.jsonl", loaded=cpu_copy(loaded))
    # the uniforms come from CPU generators, so both devices draw the same tokens unless float32
    # rounding moves a cumulative probability across a uniform: allow one sample in ten to differ
    pairs = [(a, b) for g, c in zip(first, cpu) for a, b in zip(g["samples"], c["samples"])]
    assert len(pairs) == 24 and len({a for a, _ in pairs}) > 1
    assert sum(a == b for a, b in pairs) >= 0.9 * len(pairs)
    for g, c in zip(first, cpu):
        if g["samples"] == c["samples"]:
            assert g["correctness"] == c["correctness"] and g["certainty"] == pytest.approx(c["certainty"], abs=1e-6)


def test_mcqa_probe_option_probabilities_on_cuda_match_cpu(taught_model_dir, tmp_path):
    items = load_dataset("demo-mcqa").items[:6]
    cfg = on_device(probe.ProbeConfig, model=str(taught_model_dir), dtype="float32", batch_size=4)
    loaded = load_for(cfg)
    assert device_type(loaded[0]) == "cuda"
    gpu = probe.probe(cfg, items, tmp_path / "cuda.jsonl", loaded=loaded)
    cpu = probe.probe(cfg, items, tmp_path / "cpu.jsonl", loaded=cpu_copy(loaded))
    for g, c in zip(gpu, cpu):
        assert list(g["probs"]) == list(c["probs"])
        for letter in g["probs"]:
            assert g["probs"][letter] == pytest.approx(c["probs"][letter], abs=1e-4)
        assert sum(g["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert g["certainty"] == pytest.approx(c["certainty"], abs=1e-4)


# ---- evaluation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["demo-oeqa", "demo-mcqa"])
def test_eval_on_cuda_gives_the_cpu_table(taught_model_dir, tmp_path, dataset):
    """Greedy decoding in float32: the same answers, outcomes and metrics on both devices."""
    items = load_dataset(dataset).items[:8]
    cfg = on_device(EvalConfig, model=str(taught_model_dir), dtype="float32", max_new_tokens=6, batch_size=4,
                    bootstrap=0)
    loaded = evaluation_loaded(cfg)
    gpu = evaluate(items, tmp_path / "cuda.json", cfg, loaded=loaded)
    cpu = evaluate(items, tmp_path / "cpu.json", cfg, loaded=cpu_copy(loaded))
    read = lambda name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]  # noqa: E731
    gpu_rows, cpu_rows = read("cuda.items.jsonl"), read("cpu.items.jsonl")
    assert len(gpu_rows) == len(items) and len({r["answer"] for r in gpu_rows}) > 1  # not a constant model
    assert [r["answer"] for r in gpu_rows] == [r["answer"] for r in cpu_rows]
    assert [r["outcome"] for r in gpu_rows] == [r["outcome"] for r in cpu_rows]
    for key in ("correct", "wrong", "refused", "unparsed", "Pc", "Pw", "Pr"):
        assert gpu[key] == cpu[key]
    # the stage loads onto CUDA by itself too, and gets the same answers
    again = evaluate(items, tmp_path / "cuda2.json", cfg)
    assert [r["answer"] for r in read("cuda2.items.jsonl")] == [r["answer"] for r in gpu_rows]
    assert again["Pc"] == gpu["Pc"]


def evaluation_loaded(cfg):
    loaded = load_for(cfg)
    assert device_type(loaded[0]) == "cuda"
    return loaded
