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
            raise RaitError("backend 'vllm' is not installed (pip install vllm, in its own "
                            "environment); use --backend hf")
        if importlib.util.find_spec(BACKENDS[name]) is None:
            raise RaitError("backend 'vllm' is installed but rait has no vllm backend in this "
                            "version; use --backend hf")
    return importlib.import_module(BACKENDS[name])
