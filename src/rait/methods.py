"""Selection methods: which knowledge-table rows a RAIT set keeps the answer for, which it
teaches to refuse. The `rait build` stage (rait.stages.build) calls them.

A *method* is a small pure function `fn(table, cfg, rng) -> Selection` registered by name. It
chooses which rows keep their answer ("vanilla") and which get the refusal as target ("IdK").
The built-ins (Zhu et al. 2025, section 4 and the ablations of table 3) are registered exactly
like a user's own:

    vanilla  random sample of the pool, original answers, no refusals   (Van-Tuning)
    cor      correctness >= threshold -> vanilla, else IdK; random      (Cor-RAIT / R-Tuning)
             (with vanilla_min / idk_max a dead band between them is in neither set)
    corcer   as cor, vanilla = most certain, IdK = least certain         (CRaFT w/o flow)
    corflow  as cor, flow filter on IdK candidates, random              (CRaFT w/o certainty)
    craft    as cor, flow filter on IdK candidates, certainty ranking   (CRaFT)

A user's method is found by `--method module:function` (or `path/to/file.py:function`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import random
import sys
from pathlib import Path
from typing import Any, Callable

from rait.errors import RaitError
from rait.knowledge import flow_direction

FLOW_RULES = ("drop-rose", "keep-fell")


@dataclasses.dataclass
class Selection:
    """What a method chose: knowledge-table rows (unchanged) for each label, and how many
    candidates each filter removed (e.g. {"flow": 12})."""

    vanilla: list[dict]
    idk: list[dict]
    removed: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Method:
    name: str
    fn: Callable[[list[dict], Any, random.Random], Selection]  # (table, BuildConfig, rng)
    needs: tuple[str, ...] = ()  # row fields the method requires (e.g. "flow")


METHODS: dict[str, Method] = {}


def register_method(name: str, *, needs: tuple[str, ...] = ()):
    """Decorator registering `fn(table, cfg, rng) -> Selection` under `name`."""
    def decorate(fn):
        if name in METHODS:
            raise RaitError(f"method {name!r} is already registered (by {METHODS[name].fn.__module__})")
        METHODS[name] = Method(name, fn, tuple(needs))
        return fn
    return decorate


def get_method(name: str) -> Method:
    """A registered method, or `module:function` / `file.py:function` imported on demand."""
    if name in METHODS:
        return METHODS[name]
    if ":" in name:
        return _import_method(name)
    close = difflib.get_close_matches(name, list(METHODS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise RaitError(f"unknown method {name!r}{hint} (registered: {', '.join(sorted(METHODS))}; "
                    f"a method of your own: --method module:function)")


def method_names() -> list[str]:
    return sorted(METHODS)


def method_uses_flow(name: str) -> bool:
    """Whether the method needs a rehearsed knowledge table (so `rait run` must rehearse)."""
    return "flow" in get_method(name).needs


def _import_method(spec: str) -> Method:
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise RaitError(f"method {spec!r}: file {path} not found")
            module = _load_file_module(path)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # a module beside the user, as `python -m` would
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RaitError(f"method {spec!r}: cannot import {module_name!r} ({exc})") from None
    except SyntaxError as exc:  # includes a file that is not UTF-8
        where = f"{exc.filename}, line {exc.lineno}" if exc.lineno else str(exc.filename or module_name)
        raise RaitError(f"method {spec!r}: {where}: {exc.msg}; fix the file") from None
    except Exception as exc:  # the user's module failed while it was imported
        raise RaitError(f"method {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    if attr in METHODS:  # the module registered it with @register_method(attr)
        return METHODS[attr]
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RaitError(f"method {spec!r}: {module_name} has no function {attr!r}")
    registered = next((m for m in METHODS.values() if m.fn is fn), None)
    return registered or Method(spec, fn)


def _load_file_module(path: Path):
    """Import a .py file once per process (a second import would register its methods twice)."""
    name = "rait_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


# ---- building blocks for methods -------------------------------------------------------------

def tie_key(seed: int, item_id: str) -> str:
    """Deterministic, seed-dependent order among equal scores (never the table's row order)."""
    return hashlib.sha1(f"{seed}\x1f{item_id}".encode()).hexdigest()


def split_by_correctness(table: list[dict], threshold: float, *, vanilla_min: float | None = None,
                         idk_max: float | None = None) -> tuple[list[dict], list[dict]]:
    """(vanilla candidates, IdK candidates): correctness >= vanilla_min (default: threshold) keeps
    the answer; correctness <= idk_max (default: below threshold) becomes IdK. A gap between the
    two is a dead band whose items are in neither set: the reference keeps vanilla >= 0.51 and
    IdK <= 0.49, so a question answered right 5 times of 10 is neither."""
    low = threshold if vanilla_min is None else vanilla_min
    vanilla = [row for row in table if row["correctness"] >= low]
    if idk_max is None:
        idk = [row for row in table if row["correctness"] < threshold]
    else:
        idk = [row for row in table if row["correctness"] <= idk_max]
    return vanilla, idk


def correctness_split(table: list[dict], cfg) -> tuple[list[dict], list[dict], dict[str, int]]:
    """The config's split (threshold, vanilla_min, idk_max) and what it removed: {"dead_band": N}
    whenever the config sets either bound, {} otherwise (the plain threshold leaves no gap)."""
    vanilla, idk = split_by_correctness(table, cfg.threshold, vanilla_min=cfg.vanilla_min,
                                        idk_max=cfg.idk_max)
    if cfg.vanilla_min is None and cfg.idk_max is None:
        return vanilla, idk, {}
    return vanilla, idk, {"dead_band": len(table) - len(vanilla) - len(idk)}


def flow_filter(rows: list[dict], rule: str) -> tuple[list[dict], int]:
    """(kept, number removed) of IdK candidates under the flow rule.

    drop-rose: a question whose correctness rose after rehearsal is one the model is learning
    anyway (dynamic conflict), so it must not be taught to refuse it.
    keep-fell: the reference's OEQA rule, stricter: only questions whose correctness fell stay.
    """
    missing = next((row["id"] for row in rows if row.get("flow") is None), None)
    if missing is not None:
        raise RaitError(f"item {missing!r} has no knowledge flow: run `rait rehearse` first")
    if rule == "drop-rose":
        kept = [row for row in rows if flow_direction(row["flow"]) != "rose"]
    elif rule == "keep-fell":
        kept = [row for row in rows if flow_direction(row["flow"]) == "fell"]
    else:
        raise RaitError(f"unknown flow rule {rule!r} (choose {', '.join(FLOW_RULES)})")
    return kept, len(rows) - len(kept)


def targets(cfg, *, refusals: bool = True) -> dict[str, int]:
    """How many samples of each label the config asks for."""
    n_idk = round(cfg.size * cfg.idk_ratio) if refusals else 0
    return {"vanilla": cfg.size - n_idk, "idk": n_idk}


def fit_counts(cfg, needed: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """The counts to take: `needed`, or (allow_fewer) what exists. Never more than available —
    the reference silently samples with replacement; rait refuses or shrinks."""
    short = {label: n for label, n in needed.items() if available[label] < n}
    if short and not cfg.allow_fewer:
        detail = "; ".join(f"{label}: need {needed[label]}, have {available[label]}" for label in short)
        raise RaitError(f"too few candidates for method {cfg.method!r} at size {cfg.size} ({detail}). "
                        f"Lower --size or --idk-ratio, change --threshold, or pass --allow-fewer")
    return {label: min(n, available[label]) for label, n in needed.items()}


def random_sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n rows without replacement; independent of the table's row order."""
    return rng.sample(sorted(rows, key=lambda row: row["id"]), n)


def most_certain(rows: list[dict], n: int, seed: int) -> list[dict]:
    return sorted(rows, key=lambda row: (-row["certainty"], tie_key(seed, row["id"])))[:n]


def least_certain(rows: list[dict], n: int, seed: int) -> list[dict]:
    return sorted(rows, key=lambda row: (row["certainty"], tie_key(seed, row["id"])))[:n]


# ---- the built-in methods --------------------------------------------------------------------

@register_method("vanilla")
def vanilla_method(table, cfg, rng):
    counts = fit_counts(cfg, targets(cfg, refusals=False), {"vanilla": len(table), "idk": 0})
    return Selection(random_sample(table, counts["vanilla"], rng), [])


@register_method("cor")
def cor_method(table, cfg, rng):
    vanilla, idk, removed = correctness_split(table, cfg)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(random_sample(vanilla, counts["vanilla"], rng), random_sample(idk, counts["idk"], rng),
                     removed)


@register_method("corcer")
def corcer_method(table, cfg, rng):
    vanilla, idk, removed = correctness_split(table, cfg)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(most_certain(vanilla, counts["vanilla"], cfg.seed),
                     least_certain(idk, counts["idk"], cfg.seed), removed)


@register_method("corflow", needs=("flow",))
def corflow_method(table, cfg, rng):
    vanilla, idk, removed = correctness_split(table, cfg)
    idk, dropped = flow_filter(idk, cfg.flow_rule)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(random_sample(vanilla, counts["vanilla"], rng), random_sample(idk, counts["idk"], rng),
                     {**removed, "flow": dropped})


@register_method("craft", needs=("flow",))
def craft_method(table, cfg, rng):
    vanilla, idk, removed = correctness_split(table, cfg)
    idk, dropped = flow_filter(idk, cfg.flow_rule)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(most_certain(vanilla, counts["vanilla"], cfg.seed),
                     least_certain(idk, counts["idk"], cfg.seed), {**removed, "flow": dropped})
