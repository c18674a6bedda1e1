"""`rait train`: the completion-head loss, per-sample weights, outputs, resumption, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait import config, models, sft
from rait.stages import train as training
from rait.errors import RaitError
from rait.stages.train import TrainConfig, train_sft

ANSWERS = [" Paris", " I don't know", " Mars", " Jane Austen"]


def make_rows(n: int = 16, weights: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        # prompts of different lengths, so batches are padded
        prompt = f"Question: What is the capital of {'France ' * (1 + i % 4)}?\nAnswer:"
        row = {"prompt": prompt, "completion": ANSWERS[i % len(ANSWERS)]}
        if weights:
            row["weight"] = [0.5, 1.0, 2.0, 3.0][i % 4]
        rows.append(row)
    return rows


def tiny_cfg(model_dir, **overrides) -> TrainConfig:
    base = dict(model=str(model_dir), dtype="float32", epochs=2, batch_size=4, learning_rate=1e-2,
                logging_steps=1, warmup_ratio=0.0)
    return TrainConfig(**{**base, **overrides})


def first_batch(trainer, n: int = 4) -> dict:
    trainer.model.eval()  # no dropout: the two losses must see the same network
    examples = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(examples)


def full_logit_loss(model, batch, weights=None):
    """The reference: every position's logits, per-token NLL, weighted token mean."""
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != -100).float()
    w = torch.ones(labels.shape[0]) if weights is None else weights
    return ((nll * mask).sum(1) * w).sum() / ((mask.sum(1)) * w).sum()


def randomise_lora(model) -> None:
    """LoRA B starts at zero (adapter = identity); make it matter for the comparison."""
    import torch

    gen = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.05


# ---- the completion head ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "full"])
def test_completion_head_loss_equals_standard_full_logit_loss(tiny_model_dir, tmp_path, method):
    import torch
    from trl import SFTTrainer

    cfg = tiny_cfg(tiny_model_dir, method=method)
    rows = make_rows(8)
    trainer = training.make_trainer(cfg, rows, str(tiny_model_dir), tmp_path / "ck", progress=False)
    if method == "lora":
        randomise_lora(trainer.model)
    batch = first_batch(trainer)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        reference = full_logit_loss(trainer.model, batch)
        transformers_loss = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                          labels=batch["labels"]).loss
        inputs = {k: v for k, v in batch.items() if k != "sample_weight"}
        trl_loss = SFTTrainer.compute_loss(trainer, trainer.model, inputs)
    assert abs(ours.item() - reference.item()) < 1e-4
    assert abs(ours.item() - transformers_loss.item()) < 1e-4
    assert abs(ours.item() - trl_loss.item()) < 1e-4


def test_completion_head_gradients_equal_standard(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, method="lora")
    trainer = training.make_trainer(cfg, make_rows(8), str(tiny_model_dir), tmp_path / "ck", progress=False)
    randomise_lora(trainer.model)
    batch = first_batch(trainer)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.compute_loss(trainer.model, dict(batch)).backward()
    ours = [p.grad.clone() for p in params]
    trainer.model.zero_grad()
    full_logit_loss(trainer.model, batch).backward()
    for mine, ref in zip(ours, [p.grad for p in params]):
        assert (mine - ref).abs().max().item() < 1e-5


def test_completion_nll_applies_final_logit_softcapping(tiny_model_dir):
    """Gemma caps its logits (cap * tanh(z / cap)); the head must do the same."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              final_logit_softcapping=2.0, pad_token_id=0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # large logits, so that the cap changes them
        model.lm_head.weight.mul_(40)
    input_ids = torch.randint(1, 64, (3, 9))
    labels = input_ids.clone()
    labels[:, :5] = -100
    labels[1, 7:] = -100
    sft.add_completion_head(model)
    with torch.no_grad():
        nll, mask = model(input_ids=input_ids, completion_labels=labels)
        reference = model(input_ids=input_ids, labels=labels).loss
    assert mask.sum().item() == nll.numel() == 3 * 4 - 2
    assert abs(nll.mean().item() - reference.item()) < 1e-5
    # without the cap the numbers would differ: the test would notice a missing cap
    uncapped = torch.nn.functional.cross_entropy(
        model.lm_head(model.model(input_ids=input_ids).last_hidden_state[:, :-1][mask]), labels[:, 1:][mask])
    assert abs(uncapped.item() - reference.item()) > 1e-3


# ---- per-sample weights -------------------------------------------------------------------------

def test_weighted_loss_equals_hand_computed_weighted_token_mean(tiny_model_dir, tmp_path):
    import torch

    cfg = tiny_cfg(tiny_model_dir, method="full")
    rows = make_rows(8, weights=True)
    trainer = training.make_trainer(cfg, rows, str(tiny_model_dir), tmp_path / "ck", progress=False)
    batch = first_batch(trainer)
    weights = batch["sample_weight"]
    assert len(set(weights.tolist())) > 1
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch)).item()
        by_hand = full_logit_loss(trainer.model, batch, weights).item()
        unweighted = full_logit_loss(trainer.model, batch).item()
    assert abs(ours - by_hand) < 1e-4
    assert abs(ours - unweighted) > 1e-3
    # the optimiser-step denominator is the weighted completion-token count
    count = trainer._get_num_items_in_batch([batch], "cpu").item()
    n_tokens = (batch["labels"][:, 1:] != -100).sum(1).float()
    assert abs(count - (n_tokens * weights).sum().item()) < 1e-6


@pytest.mark.parametrize("weighting", ["relative", "absolute"])
def test_relative_weights_act_within_a_step_absolute_ones_scale_it(tiny_model_dir, tmp_path, weighting):
    """At one row per optimiser step a relative weight cancels out (the step's loss is its
    weighted token mean); an absolute weight scales the row's loss."""
    import torch

    losses = {}
    for weight in (0.5, 1.0, 3.0):
        cfg = tiny_cfg(tiny_model_dir, method="full", batch_size=1, weighting=weighting)
        rows = [{**make_rows(1)[0], "weight": weight}]
        trainer = training.make_trainer(cfg, rows, str(tiny_model_dir), tmp_path / f"ck{weight}", progress=False)
        batch = first_batch(trainer, n=1)
        denominator = trainer._get_num_items_in_batch([batch], "cpu")
        with torch.no_grad():
            losses[weight] = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=denominator).item()
    if weighting == "relative":
        assert losses[0.5] == pytest.approx(losses[1.0], rel=1e-5) == pytest.approx(losses[3.0], rel=1e-5)
    else:
        assert losses[0.5] == pytest.approx(0.5 * losses[1.0], rel=1e-5)
        assert losses[3.0] == pytest.approx(3.0 * losses[1.0], rel=1e-5)


@settings(max_examples=60, deadline=None)
# weights: 0, or in the range a float32 loss resolves (a weight of 1e-43 is a subnormal float32,
# whose products keep only a few bits)
@given(st.lists(st.tuples(st.just(0.0) | st.floats(1e-6, 5), st.integers(0, 6)), min_size=1, max_size=6),
       st.integers(0, 2**16))
def test_weighted_token_loss_matches_naive_loop(rows, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    weights = torch.tensor([w for w, _ in rows], dtype=torch.float32)
    mask = torch.zeros(len(rows), 6, dtype=torch.bool)
    for i, (_, n) in enumerate(rows):
        mask[i, :n] = True
    nll = torch.rand(int(mask.sum()), generator=gen) * 5
    got = sft.weighted_token_loss(nll, mask, weights).item()
    num, den, k = 0.0, 0.0, 0
    for i, (_, n) in enumerate(rows):
        w = float(weights[i])  # the float32 weight the loss sees (a subnormal one is 0)
        num += w * float(nll[k:k + n].sum())
        den += w * n
        k += n
    expected = num / den if den > 0 else 0.0
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)
    if all(w == 1.0 for w, _ in rows) and den > 0:  # unit weights: the plain token mean
        assert got == pytest.approx(float(nll.mean()), rel=1e-5)


def test_weights_without_completion_head_are_refused(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, completion_head=False)
    with pytest.raises(RaitError, match="weights need the completion-head"):
        training.make_trainer(cfg, make_rows(8, weights=True), str(tiny_model_dir), tmp_path / "ck", False)


def test_completions_end_with_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    trainer = training.make_trainer(tiny_cfg(tiny_model_dir), make_rows(4), str(tiny_model_dir),
                                    tmp_path / "ck", progress=False)
    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    for example in trainer.train_dataset:
        assert example["input_ids"][-1] == eos and example["labels"][-1] == eos


# ---- training and outputs -----------------------------------------------------------------------

def loss_on(model_dir, rows) -> float:
    """Mean completion-token loss of a saved model on rows (fresh load, full logits)."""
    import torch

    model, tokenizer, _ = models.load_model(str(model_dir), "float32")
    total, count = 0.0, 0
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        ids = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
        labels = torch.tensor([[-100] * len(prompt_ids) + ids[len(prompt_ids):]])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=labels)
        n = len(ids) - len(prompt_ids)
        total, count = total + out.loss.item() * n, count + n
    return total / count


def test_training_lowers_loss_and_writes_merged_model(tiny_model_dir, tmp_path):
    rows = make_rows(16)
    out = train_sft(rows, tmp_path / "out", tiny_cfg(tiny_model_dir, epochs=4), progress=False,
                    prompt_format={"task": "oeqa", "style": "refuse", "template": "plain"})
    assert loss_on(out, rows) < loss_on(tiny_model_dir, rows) - 0.3  # 5.93 -> 5.51 measured
    info = json.loads((out / models.TRAIN_INFO).read_text())
    assert info["final_loss"] < info["first_loss"]
    assert info["output"] == "merged" and info["steps"] == 16
    assert info["base_model"] == str(tiny_model_dir)
    assert info["prompt_format"] == {"task": "oeqa", "style": "refuse", "template": "plain"}
    assert info["recipe"]["learning_rate"] == 1e-2 and info["recipe"]["lora_r"] == 16
    assert info["data"]["rows"] == 16 and len(info["data"]["fingerprint"]) == 16
    assert set(info["versions"]) >= {"torch", "transformers", "trl", "peft"}
    assert info["timing"]["seconds"] > 0
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert not (out / "adapter_config.json").exists()
    assert not (out / training.CHECKPOINTS).exists() and not (out / training.PARTIAL).exists()
    assert set(info["files"]) <= {p.name for p in out.iterdir()}


def generate(model_dir) -> str:
    import torch

    model, tokenizer, info = models.load_model(str(model_dir), "float32")
    ids = tokenizer("Question: What is the capital of France ?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 or tokenizer.eos_token_id in out[0].tolist()
    assert info["train_info"] is not None
    return tokenizer.decode(out[0][ids["input_ids"].shape[1]:])


def test_adapter_output_loads_and_matches_merged(tiny_model_dir, tmp_path):
    import torch

    rows = make_rows(8)
    merged = train_sft(rows, tmp_path / "merged", tiny_cfg(tiny_model_dir, epochs=1), progress=False)
    adapter = train_sft(rows, tmp_path / "adapter", tiny_cfg(tiny_model_dir, epochs=1, merge=False), progress=False)
    assert (adapter / "adapter_config.json").exists() and not (adapter / "config.json").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    assert json.loads((adapter / models.TRAIN_INFO).read_text())["output"] == "adapter"
    assert generate(merged) == generate(adapter)
    ids = torch.tensor([[5, 6, 7, 8]])
    a, *_ = models.load_model(str(merged), "float32")
    b, *_ = models.load_model(str(adapter), "float32")
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits, atol=1e-5)


def test_full_fine_tuning_output_loads(tiny_model_dir, tmp_path):
    out = train_sft(make_rows(8), tmp_path / "full", tiny_cfg(tiny_model_dir, method="full", epochs=1,
                                                               learning_rate=1e-3), progress=False)
    assert json.loads((out / models.TRAIN_INFO).read_text())["output"] == "full"
    generate(out)


def weights_of(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_same_seed_same_weights(tiny_model_dir, tmp_path):
    import torch

    rows = make_rows(12)
    a = weights_of(train_sft(rows, tmp_path / "a", tiny_cfg(tiny_model_dir, epochs=1), progress=False))
    b = weights_of(train_sft(rows, tmp_path / "b", tiny_cfg(tiny_model_dir, epochs=1), progress=False))
    c = weights_of(train_sft(rows, tmp_path / "c", tiny_cfg(tiny_model_dir, epochs=1, seed=1), progress=False))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_after_interruption(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    rows = make_rows(16)
    cfg = tiny_cfg(tiny_model_dir, save_steps=3)  # 8 steps; checkpoints at 3 and 6
    cls = sft.completion_trainer_class()
    original = cls.training_step
    calls = {"n": 0, "stop_at": 5}

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "training_step", counted)
    with pytest.raises(KeyboardInterrupt):
        train_sft(rows, tmp_path / "out", cfg, progress=False)
    out = tmp_path / "out"
    assert not (out / models.TRAIN_INFO).exists() and not (out / "config.json").exists()
    assert (out / training.CHECKPOINTS / "checkpoint-3").is_dir()
    calls.update(n=0, stop_at=None)
    train_sft(rows, out, cfg, progress=False)
    assert calls["n"] == 5  # only steps 4..8 ran again: resumed from checkpoint-3
    info = json.loads((out / models.TRAIN_INFO).read_text())
    assert info["steps"] == 8 and [step for step, _ in info["losses"]] == list(range(1, 9))
    monkeypatch.setattr(cls, "training_step", original)
    straight = weights_of(train_sft(rows, tmp_path / "straight", cfg, progress=False))
    resumed = weights_of(out)
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)


def test_run_stopped_before_its_first_checkpoint_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    cls = sft.completion_trainer_class()

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cls, "training_step", stop)
    with pytest.raises(KeyboardInterrupt):
        train_sft(make_rows(8), tmp_path / "out", tiny_cfg(tiny_model_dir, save_steps=3), progress=False)
    assert not (tmp_path / "out").exists()


def test_complete_output_is_not_retrained_and_other_runs_are_refused(tiny_model_dir, tmp_path, monkeypatch,
                                                                     capsys):
    rows = make_rows(8)
    cfg = tiny_cfg(tiny_model_dir, epochs=1)
    out = train_sft(rows, tmp_path / "out", cfg, progress=False)
    monkeypatch.setattr(training, "make_trainer", lambda *a, **k: pytest.fail("must not train again"))
    assert train_sft(rows, out, cfg, progress=False) == out
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(RaitError, match="other data or settings"):
        train_sft(rows, out, tiny_cfg(tiny_model_dir, epochs=1, lora_r=4), progress=False)
    monkeypatch.undo()
    train_sft(rows, out, tiny_cfg(tiny_model_dir, epochs=1, lora_r=4, overwrite=True), progress=False)
    assert json.loads((out / models.TRAIN_INFO).read_text())["recipe"]["lora_r"] == 4


def test_foreign_output_directory_is_refused(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(RaitError, match="not a `rait train` output"):
        train_sft(make_rows(4), tmp_path / "out", tiny_cfg(tiny_model_dir), progress=False)


# ---- data, config and CLI -----------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad, field", [
    ({"prompt": "Q?\nAnswer:"}, "completion"),
    ({"completion": " A"}, "prompt"),
    ({"prompt": "Q?", "completion": ""}, "completion"),
    ({"prompt": "Q?", "completion": " A", "weight": -1}, "weight"),
    ({"prompt": "Q?", "completion": " A", "weight": "heavy"}, "weight"),
    ({"prompt": [{"role": "user", "content": "Q?"}], "completion": " A"}, "completion"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, field):
    path = write_jsonl(tmp_path / "set.jsonl", make_rows(3) + [bad])
    with pytest.raises(RaitError) as err:
        training.load_rows(path)
    assert str(err.value).startswith(f"{path}, line 4, field '{field}'")


def test_rows_accept_conversational_and_default_weight(tmp_path):
    chat = [{"prompt": [{"role": "user", "content": "Q?"}], "completion": [{"role": "assistant", "content": "A"}]}]
    rows, _ = training.load_rows(chat)
    assert rows[0]["weight"] == 1.0
    with pytest.raises(RaitError, match="line 2.*mixes"):
        training.load_rows(chat + make_rows(1))


def test_prompt_format_is_read_from_meta_sidecar(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", make_rows(2))
    assert training.read_prompt_format(path) is None
    fmt = {"task": "mcqa", "style": "refuse", "template": "plain"}
    (tmp_path / "set.jsonl.meta.json").write_text(json.dumps({"prompt_format": fmt}))
    assert training.read_prompt_format(path) == fmt


def test_config_defaults_validation_and_dtype():
    import torch

    cfg = TrainConfig()
    assert training.learning_rate(cfg) == 2e-4
    assert training.learning_rate(TrainConfig(method="full")) == 1e-5
    assert training.training_dtype(TrainConfig(method="full")) == torch.float32
    assert training.training_dtype(TrainConfig(dtype="bfloat16")) == torch.bfloat16
    with pytest.raises(RaitError) as err:
        config.check_values(TrainConfig(batch_size=0, lora_dropout=1.5, method="full", dtype="float16"), "train")
    assert "batch_size" in str(err.value) and "lora_dropout" in str(err.value) and "float16" in str(err.value)
    assert training.planned_steps(16, TrainConfig(batch_size=4, epochs=2)) == 8
    assert training.planned_steps(17, TrainConfig(batch_size=4, grad_accum=2, epochs=1)) == 3


def test_cli_train_with_yaml_and_flags(tiny_model_dir, tmp_path, capsys):
    from rait.cli import main

    data = write_jsonl(tmp_path / "set.jsonl", make_rows(8))
    (tmp_path / "set.jsonl.meta.json").write_text(json.dumps(
        {"prompt_format": {"task": "oeqa", "style": "refuse", "template": "plain"}}))
    (tmp_path / "cfg.yaml").write_text("train:\n  epochs: 1\n  lora_r: 4\n  batch_size: 2\n")
    status = main(["train", str(data), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                   "--config", str(tmp_path / "cfg.yaml"), "--batch-size", "4", "--dtype", "float32",
                   "--no-merge"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "LoRA r=4" in printed and "effective batch 4" in printed and "~2 steps" in printed
    assert "loss" in printed and "(first)" in printed
    info = json.loads((tmp_path / "out" / models.TRAIN_INFO).read_text())
    assert info["recipe"]["batch_size"] == 4 and info["recipe"]["lora_r"] == 4 and info["steps"] == 2
    assert info["prompt_format"]["task"] == "oeqa" and info["output"] == "adapter"
    status = main(["train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o2")])
    assert status == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_bundled_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import ClusterConfig

    expected = {"deepspeed_zero2": ("DEEPSPEED", 2), "deepspeed_zero3": ("DEEPSPEED", 3), "fsdp": ("FSDP", None)}
    found = [training.accelerate_config(name) for name in training.ACCELERATE_CONFIGS]
    assert len(found) == 3 and all(path.exists() for path in found)
    assert sorted(p.stem for p in found[0].parent.glob("*.yaml")) == sorted(expected)
    for path in found:
        config = ClusterConfig.from_yaml_file(str(path))
        kind, stage = expected[path.stem]
        assert config.distributed_type.value == kind and config.num_processes == 4
        if stage:
            assert config.deepspeed_config["zero_stage"] == stage
    with pytest.raises(RaitError, match="unknown accelerate config"):
        training.accelerate_config("zero9")


def test_warmup_rounds_down_so_short_runs_learn_from_the_first_step():
    from rait.stages.train import TrainConfig, warmup_steps

    assert warmup_steps(TrainConfig(batch_size=8, epochs=1.0, warmup_ratio=0.03), 8) == 0
    assert warmup_steps(TrainConfig(batch_size=8, epochs=3.0, warmup_ratio=0.1), 800) == 30


def test_rows_cut_by_max_length_are_counted_and_said(tiny_model_dir, tmp_path, capsys):
    rows = make_rows(8)
    full = training.make_trainer(tiny_cfg(tiny_model_dir), rows, str(tiny_model_dir), tmp_path / "a", progress=False)
    lengths = sorted(len(ids) for ids in full.train_dataset["input_ids"])
    assert full.rait_row_counts == {"dropped_beyond_max_length": 0, "at_max_length": 0}
    limit = lengths[len(lengths) // 2]  # the longer half reaches the limit
    cut = training.make_trainer(tiny_cfg(tiny_model_dir, max_length=limit), rows, str(tiny_model_dir),
                                tmp_path / "b", progress=False)
    expected = sum(length >= limit for length in lengths)
    assert cut.rait_row_counts["at_max_length"] == expected > 0
    assert f"{expected} of 8 rows reach --max-length {limit} tokens" in capsys.readouterr().out
