"""Model options, device/dtype resolution, local-vs-hub rules, chat templates and adapters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import types
from pathlib import Path

import huggingface_hub
import pytest
import torch

from rait import config, models, options
from rait.errors import RaitError


@pytest.fixture
def no_hub(monkeypatch):
    """Any request to the hub (or its cache lookup) fails the test."""
    def fail(*args, **kwargs):
        pytest.fail(f"the hub was asked: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "model_info", fail)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.setattr(models, "resolve_hub_model", fail)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own; `add(repo)` puts a snapshot with a config.json in it."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    models._HUB_CONFIRMED.clear()

    def add(repo_id: str, commit: str = "a" * 40) -> Path:
        root = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(commit)
        return snapshot

    yield add
    models._HUB_CONFIRMED.clear()


def hub_error(cls, message="nope"):
    """A hub error instance without an HTTP response (their constructors want one)."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


# ---- options -----------------------------------------------------------------------------------

def test_model_options_defaults_flags_and_inheritance():
    opts = options.ModelOptions()
    assert (opts.model, opts.dtype, opts.device, opts.revision, opts.trust_remote_code, opts.chat_template) == \
        (None, "auto", "auto", None, False, None)

    @dataclasses.dataclass
    class StageConfig(options.ModelOptions):
        data: str  # a required field after inherited defaults: ModelOptions is keyword-only
        limit: int = config.option(0, "limit")

    parser = argparse.ArgumentParser()
    config.add_arguments(parser, StageConfig)
    cli = parser.parse_args(["--device", "cuda:1", "--trust-remote-code", "--revision", "v2"])
    cfg = config.build(StageConfig, {"data": "x.jsonl", "dtype": "bfloat16", "chat_template": "gemma"}, cli)
    assert (cfg.data, cfg.dtype, cfg.device, cfg.revision, cfg.trust_remote_code, cfg.chat_template) == \
        ("x.jsonl", "bfloat16", "cuda:1", "v2", True, "gemma")
    with pytest.raises(RaitError, match="dtype"):
        config.build(StageConfig, {"data": "x", "dtype": "int8"})


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_check_device_accepts(name):
    assert models.check_device(name) == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CUDA", "cuda0", "tpu", "", "cpu:0"])
def test_check_device_rejects(name):
    with pytest.raises(RaitError, match="cuda:N"):
        models.check_device(name)


def test_model_option_problems(tmp_path):
    good = options.ModelOptions(device="cuda:1", chat_template="gemma")
    assert config.value_problems(good, "probe") == []
    bad = options.ModelOptions(device="gpu", chat_template=str(tmp_path / "none.jinja"))
    problems = config.value_problems(bad, "probe")
    assert len(problems) == 2
    assert problems[0].startswith("probe.device: ") and problems[1].startswith("probe.chat_template: ")


# ---- device and dtype --------------------------------------------------------------------------

def fake_hardware(monkeypatch, *, gpus=0, mps=False, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(models, "_mps_available", lambda: mps)


def test_resolve_device_auto(monkeypatch):
    fake_hardware(monkeypatch, gpus=0)
    assert models.resolve_device() == "cpu" and models.resolve_device(None) == "cpu"
    fake_hardware(monkeypatch, gpus=0, mps=True)
    assert models.resolve_device("auto") == "mps"
    fake_hardware(monkeypatch, gpus=2, mps=True)
    assert models.resolve_device("auto") == "cuda"


def test_resolve_device_requested(monkeypatch):
    fake_hardware(monkeypatch, gpus=2)
    assert [models.resolve_device(n) for n in ("cpu", "cuda", "cuda:0", "cuda:1")] == ["cpu", "cuda", "cuda:0", "cuda:1"]
    with pytest.raises(RaitError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        models.resolve_device("cuda:2")
    with pytest.raises(RaitError, match="Metal"):
        models.resolve_device("mps")
    fake_hardware(monkeypatch, gpus=0)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(RaitError, match="no CUDA GPU"):
            models.resolve_device(name)
    with pytest.raises(RaitError, match="cuda:N"):
        models.resolve_device("gpu")


def test_resolve_dtype(monkeypatch):
    fake_hardware(monkeypatch, gpus=1, bf16=True)
    assert models.resolve_dtype("auto") is torch.bfloat16
    assert models.resolve_dtype("auto", "cuda:0") is torch.bfloat16
    fake_hardware(monkeypatch, gpus=1, bf16=False)
    assert models.resolve_dtype("auto", "cuda") is torch.float16
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert models.resolve_dtype("auto", "cpu") is torch.float32  # a GPU elsewhere does not matter
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: major <= 14)
    assert models.resolve_dtype("auto", "mps") is torch.bfloat16
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    assert models.resolve_dtype("auto", "mps") is torch.float32
    assert models.resolve_dtype("bf16") is torch.bfloat16 and models.resolve_dtype("float16") is torch.float16
    with pytest.raises(RaitError, match="unknown dtype"):
        models.resolve_dtype("int4")


# ---- local or hub ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["./missing-model", "../missing-model", "/nowhere/missing-model",
                                  "~/missing-rait-model", "models/craft"])
def test_missing_local_path_fails_without_the_hub(spec, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # `models/craft`: its first component is a local folder
    with pytest.raises(RaitError, match="no such local directory") as err:
        models.resolve_model(spec)
    assert spec in str(err.value)
    if spec == "models/craft":
        assert "'models' is a local folder" in str(err.value)
    with pytest.raises(RaitError, match="no such local directory"):
        models.load_model(spec, "float32")


def test_local_directory_rules(tmp_path, monkeypatch, no_hub, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    assert models.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    assert models.resolve_model("models/base") == "models/base"  # relative, no ./ needed
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaitError, match="not a Hugging Face model directory"):
        models.resolve_model("empty")
    with pytest.raises(RaitError, match="not a hub id"):
        models.resolve_model("a/b/c")
    with pytest.raises(RaitError, match="not a hub id"):
        models.resolve_model("no-such-model")
    with pytest.raises(RaitError, match="not a valid hub id"):
        models.resolve_model("owner/bad name")


def test_aliases_resolve_to_the_bundled_model(monkeypatch, no_hub, tmp_path):
    monkeypatch.setattr(models, "ensure_default_model", lambda: tmp_path / "bundled")
    for spec in (None, "", "gemma-3-270m", "gemma3-270m", "default"):
        assert models.resolve_model(spec) == str(tmp_path / "bundled")


def test_hub_id_offline(monkeypatch, hf_cache):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: pytest.fail("online request while offline"))
    with pytest.raises(RaitError, match="not in the local Hugging Face cache and offline mode"):
        models.resolve_model("someowner/missing")
    hf_cache("someowner/cached")
    assert models.resolve_model("someowner/cached") == "someowner/cached"  # transformers reads the cache
    with pytest.raises(RaitError, match="at revision 'v9'"):
        models.resolve_model("someowner/cached", revision="v9")


def test_hub_id_online(monkeypatch, hf_cache):
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def answer(outcome):
        def model_info(repo_id, *, revision=None, timeout=None):
            calls.append((repo_id, revision, timeout))
            if outcome is not None:
                raise outcome
        monkeypatch.setattr(huggingface_hub, "model_info", model_info)

    answer(None)
    assert models.resolve_model("owner/ok", revision="abc123") == "owner/ok"
    assert calls == [("owner/ok", "abc123", huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT)]
    assert models.resolve_model("owner/ok", revision="abc123") == "owner/ok" and len(calls) == 1  # asked once

    answer(hub_error(RepositoryNotFoundError))
    with pytest.raises(RaitError, match="not found on the hub"):
        models.resolve_model("owner/typo")
    answer(hub_error(RevisionNotFoundError))
    with pytest.raises(RaitError, match="no revision 'v9'"):
        models.resolve_model("owner/model", revision="v9")
    answer(hub_error(HfHubHTTPError))  # the hub answered otherwise: the download itself decides
    assert models.resolve_model("owner/busy") == "owner/busy"

    answer(ConnectionError("Name or service not known"))
    with pytest.raises(RaitError, match="cannot reach the hub .* not in the local Hugging Face cache"):
        models.resolve_model("owner/uncached")
    snapshot = hf_cache("owner/cached")
    assert models.resolve_model("owner/cached") == str(snapshot)  # load from the cache, no retries


def test_revision_and_trust_remote_code_pass_through(monkeypatch, tiny_model_dir):
    """A hub id's revision reaches both from_pretrained calls; remote code stays off unless asked."""
    import transformers

    seen = {}
    real_tok = transformers.AutoTokenizer.from_pretrained
    real_model = transformers.AutoModelForCausalLM.from_pretrained

    def capture(name, real):
        def from_pretrained(path, **kwargs):
            seen[name] = (path, kwargs)
            return real(str(tiny_model_dir), **{k: v for k, v in kwargs.items()
                                                if k not in ("revision", "trust_remote_code")})
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", capture("tokenizer", real_tok))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture("model", real_model))
    monkeypatch.setattr(models, "resolve_hub_model", lambda repo_id, revision=None: repo_id)

    _, _, info = models.load_model("owner/model", "float32", device="cpu", revision="3f2a9c1")
    for name in ("tokenizer", "model"):
        path, kwargs = seen[name]
        assert path == "owner/model" and kwargs["revision"] == "3f2a9c1" and kwargs["trust_remote_code"] is False
    assert seen["model"][1]["dtype"] is torch.float32 and seen["model"][1]["device_map"] == "cpu"
    assert info["path"] == "owner/model" and info["device"] == "cpu"

    models.load_model_from(types.SimpleNamespace(model="owner/model", dtype="float32", device="cpu",
                                                 trust_remote_code=True))
    assert seen["model"][1]["trust_remote_code"] is True and "revision" not in seen["model"][1]

    models.load_tokenizer(str(tiny_model_dir), revision="v1")  # a local directory has no revisions
    assert "revision" not in seen["tokenizer"][1] and seen["tokenizer"][1]["trust_remote_code"] is False


def test_load_model_tiny(tiny_model_dir):
    model, tokenizer, info = models.load_model(str(tiny_model_dir), "float32", device="cpu")
    assert info == {"model": str(tiny_model_dir), "path": str(tiny_model_dir), "dtype": "float32",
                    "device": "cpu", "train_info": None}
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype is torch.float32
    assert tokenizer.pad_token == "<pad>"
    _, _, info = models.load_model(str(tiny_model_dir), "float32")  # positional dtype, device auto
    assert info["device"] == models.resolve_device("auto")


# ---- chat templates ----------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France? "},
            {"role": "assistant", "content": "Paris"},
            {"role": "user", "content": "And of Italy?"}]


def test_builtin_gemma_template(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir), chat_template="gemma")
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nCapital of France?<end_of_turn>\n"
                    "<start_of_turn>model\nParis<end_of_turn>\n"
                    "<start_of_turn>user\nAnd of Italy?<end_of_turn>\n"
                    "<start_of_turn>model\n")
    no_prompt = tokenizer.apply_chat_template(MESSAGES[1:2], tokenize=False)
    assert no_prompt == "<bos><start_of_turn>user\nCapital of France?<end_of_turn>\n"
    ids = tokenizer.apply_chat_template(MESSAGES[1:2], tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template([MESSAGES[2]], tokenize=False)


def test_chat_template_from_file(tiny_model_dir, tmp_path):
    file = tmp_path / "plain.jinja"
    file.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}assistant:{% endif %}")
    tokenizer = models.load_tokenizer(str(tiny_model_dir), chat_template=str(file))
    assert tokenizer.chat_template == file.read_text()
    assert tokenizer.apply_chat_template(MESSAGES[1:3], tokenize=False, add_generation_prompt=True) == \
        "user: Capital of France? \nassistant: Paris\nassistant:"
    _, tokenizer, _ = models.load_model(str(tiny_model_dir), "float32", chat_template=str(file))
    assert tokenizer.chat_template == file.read_text()

    broken = tmp_path / "broken.jinja"
    broken.write_text("line one\n{% for m in messages %}{{ m }}")
    with pytest.raises(RaitError, match=r"broken.jinja, line \d+: not a valid Jinja chat template"):
        models.load_tokenizer(str(tiny_model_dir), chat_template=str(broken))
    with pytest.raises(RaitError, match="no such file, and not a built-in name \\(gemma\\)"):
        models.load_tokenizer(str(tiny_model_dir), chat_template="llama9")


@pytest.mark.slow
def test_gemma_template_on_the_bundled_model():
    tokenizer = models.load_tokenizer("gemma-3-270m", chat_template="gemma")
    for token in ("<start_of_turn>", "<end_of_turn>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids[0] == tokenizer.bos_token_id == 2 and ids.count(tokenizer.bos_token_id) == 1
    assert ids[-3:] == tokenizer.encode("<start_of_turn>model\n", add_special_tokens=False)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)


# ---- adapters ----------------------------------------------------------------------------------

def test_adapter_base_reference(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    assert models.adapter_base_reference("meta-llama/Meta-Llama-3-8B-Instruct",
                                         "meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert models.adapter_base_reference("owner/name", "/cache/snapshots/abc") == "owner/name"
    cached = tmp_path / "cache" / "gemma-3-270m"
    for alias in ("gemma-3-270m", "default", None):
        assert models.adapter_base_reference(alias, str(cached)) == str(cached)
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    assert models.adapter_base_reference("base", "base") == str(tmp_path / "base")
    assert models.adapter_base_reference("./base", "base") == str(tmp_path / "base")


def test_adapter_round_trip(tmp_path, tiny_model_dir):
    """A rait adapter loads with stock PEFT and with rait, both equal to the merged model."""
    from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch = tmp_path / "scratch-base"  # where "training" read the base; gone afterwards
    shutil.copytree(tiny_model_dir, scratch)
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(scratch, dtype=torch.float32),
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)  # README.md + adapter_config.json, as training writes them
    AutoTokenizer.from_pretrained(scratch).save_pretrained(adapter)
    assert str(scratch) in (adapter / "README.md").read_text()

    models.record_adapter_base(adapter, models.adapter_base_reference(str(tiny_model_dir), str(tiny_model_dir)))
    shutil.rmtree(scratch)
    recorded = json.loads((adapter / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(tiny_model_dir)
    card = (adapter / "README.md").read_text()
    assert f"base_model: {tiny_model_dir}" in card and str(scratch) not in card
    assert f"base_model:adapter:{tiny_model_dir}" in card
    assert huggingface_hub.ModelCard.load(adapter / "README.md").data.base_model == str(tiny_model_dir)

    ids = torch.tensor([[2, 5, 17, 42, 99, 7]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        base_logits = base(ids).logits
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        expected = merged(ids).logits
        stock = AutoPeftModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32)
        stock_logits = stock(ids).logits
        ours, tokenizer, info = models.load_model(str(adapter), "float32", device="cpu")
        ours_logits = ours(ids).logits
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter changes the model
    assert torch.allclose(stock_logits, expected, atol=1e-5)
    assert torch.allclose(ours_logits, expected, atol=1e-5)
    assert info["path"] == str(adapter) and tokenizer.pad_token == "<pad>"


def test_record_adapter_base_revision_and_no_card(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gemma-3-270m",
                                                            "revision": None, "r": 4}))
    models.record_adapter_base(adapter, "owner/base", revision="abc123")
    assert json.loads((adapter / "adapter_config.json").read_text()) == \
        {"base_model_name_or_path": "owner/base", "revision": "abc123", "r": 4}
    assert models.adapter_base(str(adapter)) == ("owner/base", "abc123")
    models.record_adapter_base(adapter, str(tmp_path), revision="ignored")  # local bases have no revisions
    assert models.adapter_base(str(adapter)) == (str(tmp_path), None)
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json"]  # no temporary left behind


def test_record_adapter_base_rewrites_alias_in_card(tmp_path):
    """An old name that the new one contains is replaced once, not again inside the new name."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gemma-3-270m"}))
    (adapter / "README.md").write_text("---\nbase_model: gemma-3-270m\nlibrary_name: peft\ntags:\n"
                                       "- base_model:adapter:gemma-3-270m\n- lora\n---\n\n# Card\n\n"
                                       "Tuned from gemma-3-270m.\n")
    new = "/cache/rait/models/gemma-3-270m"
    models.record_adapter_base(adapter, new)
    card = huggingface_hub.ModelCard.load(adapter / "README.md")
    assert card.data.base_model == new and card.data.tags == [f"base_model:adapter:{new}", "lora"]
    assert "Tuned from /cache/rait/models/gemma-3-270m." in card.text


def test_adapter_base_falls_back_to_the_noted_alias(tmp_path):
    """An adapter copied from another machine: its recorded cache path is gone, the alias is not."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/elsewhere/.cache/rait/models/gemma-3-270m"}))
    assert models.adapter_base(str(adapter)) == ("/elsewhere/.cache/rait/models/gemma-3-270m", None)
    (adapter / models.TRAIN_INFO).write_text(json.dumps({"base_model": "gemma-3-270m"}))
    assert models.adapter_base(str(adapter)) == ("gemma-3-270m", None)
