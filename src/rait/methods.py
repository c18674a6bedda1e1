"""`rait build`: turn a knowledge table into a RAIT training set.

A *method* is a small pure function `fn(table, cfg, rng) -> Selection` registered by name. It
chooses which rows keep their answer ("vanilla") and which get the refusal as target ("IdK").
The built-ins (Zhu et al. 2025, section 4 and the ablations of table 3) are registered exactly
like a user's own:

    vanilla  random sample of the pool, original answers, no refusals   (Van-Tuning)
    cor      correctness >= threshold -> vanilla, else IdK; random      (Cor-RAIT / R-Tuning)
    corcer   as cor, vanilla = most certain, IdK = least certain         (CRaFT w/o flow)
    corflow  as cor, flow filter on IdK candidates, random              (CRaFT w/o certainty)
    craft    as cor, flow filter on IdK candidates, certainty ranking   (CRaFT)

A user's method is found by `--method module:function` (or `path/to/file.py:function`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import random
import sys
import time
from pathlib import Path
from typing import Callable

from rait import config as config_mod
from rait import io, prompts
from rait.config import option
from rait.errors import RaitError, input_error
from rait.knowledge.flow import FLOW_EPS

FLOW_RULES = ("drop-rose", "keep-fell")
FORMATS = ("trl", "messages", "alpaca", "xtuner")
KNOWLEDGE_FIELDS = ("correctness", "certainty", "flow")


@dataclasses.dataclass
class BuildConfig:
    method: str = option("craft", "selection rule: a registered name (vanilla, cor, corcer, corflow, "
                                  "craft) or module:function")
    size: int = option(1000, "number of training samples (vanilla + IdK)")
    idk_ratio: float = option(0.2, "share of IdK (refusal) samples; the paper uses 0.2")
    threshold: float = option(0.5, "correctness >= threshold keeps the answer, below becomes IdK")
    flow_rule: str = option("drop-rose", "drop-rose: drop IdK candidates whose correctness rose after "
                                         "rehearsal (flow > 0); keep-fell: keep IdK only if it fell "
                                         "(flow < 0, the reference's OEQA rule)", choices=FLOW_RULES)
    refusal_text: str | None = option(None, "refusal target (default: \"I don't know\" for OEQA, "
                                            "\"I don't know.\" for MCQA)")
    style: str = option("refuse", "instruction prompt: refuse (with the refusal instruction) or basic",
                        choices=("refuse", "basic"))
    template: str = option("plain", "plain text prompts (base models) or chat conversations",
                           choices=("plain", "chat"))
    format: str = option("trl", "output format", choices=FORMATS)
    allow_fewer: bool = option(False, "build a smaller set when there are too few candidates")
    seed: int = option(0, "random seed (sampling, tie-breaking, shuffling)")


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
    fn: Callable[[list[dict], BuildConfig, random.Random], Selection]
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


def split_by_correctness(table: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """(vanilla candidates, IdK candidates): correctness >= threshold keeps the answer."""
    vanilla = [row for row in table if row["correctness"] >= threshold]
    idk = [row for row in table if row["correctness"] < threshold]
    return vanilla, idk


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
        kept = [row for row in rows if row["flow"] <= FLOW_EPS]
    elif rule == "keep-fell":
        kept = [row for row in rows if row["flow"] < -FLOW_EPS]
    else:
        raise RaitError(f"unknown flow rule {rule!r} (choose {', '.join(FLOW_RULES)})")
    return kept, len(rows) - len(kept)


def targets(cfg: BuildConfig, *, refusals: bool = True) -> dict[str, int]:
    """How many samples of each label the config asks for."""
    n_idk = round(cfg.size * cfg.idk_ratio) if refusals else 0
    return {"vanilla": cfg.size - n_idk, "idk": n_idk}


def fit_counts(cfg: BuildConfig, needed: dict[str, int], available: dict[str, int]) -> dict[str, int]:
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
    vanilla, idk = split_by_correctness(table, cfg.threshold)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(random_sample(vanilla, counts["vanilla"], rng), random_sample(idk, counts["idk"], rng))


@register_method("corcer")
def corcer_method(table, cfg, rng):
    vanilla, idk = split_by_correctness(table, cfg.threshold)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(most_certain(vanilla, counts["vanilla"], cfg.seed),
                     least_certain(idk, counts["idk"], cfg.seed))


@register_method("corflow", needs=("flow",))
def corflow_method(table, cfg, rng):
    vanilla, idk = split_by_correctness(table, cfg.threshold)
    idk, dropped = flow_filter(idk, cfg.flow_rule)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(random_sample(vanilla, counts["vanilla"], rng), random_sample(idk, counts["idk"], rng),
                     {"flow": dropped})


@register_method("craft", needs=("flow",))
def craft_method(table, cfg, rng):
    vanilla, idk = split_by_correctness(table, cfg.threshold)
    idk, dropped = flow_filter(idk, cfg.flow_rule)
    counts = fit_counts(cfg, targets(cfg), {"vanilla": len(vanilla), "idk": len(idk)})
    return Selection(most_certain(vanilla, counts["vanilla"], cfg.seed),
                     least_certain(idk, counts["idk"], cfg.seed), {"flow": dropped})


# ---- knowledge tables ------------------------------------------------------------------------

def check_table(table: list[dict], source: str = "<knowledge>", lines: list[int] | None = None) -> None:
    """Every row is a valid item with correctness/certainty in [0, 1]; ids unique; one task."""
    from rait.data.schema import item_from_row

    seen: set[str] = set()
    for index, row in enumerate(table):
        line = lines[index] if lines else index + 1
        item_from_row(row, path=source, line=line)
        for field in ("correctness", "certainty"):
            value = row.get(field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise input_error(source, f"must be a number in [0, 1], got {value!r}", line=line, field=field)
        flow = row.get("flow")
        if flow is not None and (isinstance(flow, bool) or not isinstance(flow, (int, float))):
            raise input_error(source, f"must be a number, got {flow!r}", line=line, field="flow")
        if row["id"] in seen:
            raise input_error(source, f"duplicate id {row['id']!r}", line=line, field="id")
        seen.add(row["id"])
    tasks = sorted({row_task(row) for row in table})
    if len(tasks) > 1:
        raise RaitError(f"{source}: mixes tasks ({', '.join(tasks)}); build one RAIT set per task")


def load_knowledge(path: str | Path) -> list[dict]:
    numbered = list(io.read_jsonl(path))
    if not numbered:
        raise RaitError(f"{path}: the knowledge table is empty")
    table = [row for _, row in numbered]
    check_table(table, str(path), [line for line, _ in numbered])
    return table


def row_task(row: dict) -> str:
    return row.get("task") or ("mcqa" if "choices" in row else "oeqa")


def table_task(table: list[dict]) -> str:
    return row_task(table[0])


# ---- from a selection to training rows -------------------------------------------------------

def target_text(row: dict, label: str, cfg: BuildConfig) -> str:
    """Vanilla: the preferred answer (OEQA) or the gold letter alone, as in the paper (MCQA)."""
    task = row_task(row)
    if label == "idk":
        return cfg.refusal_text if cfg.refusal_text is not None else prompts.REFUSAL[task]
    return row["answers"][0] if task == "oeqa" else row["target"]


def training_row(row: dict, label: str, cfg: BuildConfig) -> dict:
    """One RAIT sample in the chosen output format, with the fields that decided its label."""
    target = target_text(row, label, cfg)
    text = prompts.instruction_text(row, cfg.style)
    if cfg.format == "trl" and cfg.template == "plain":
        body = {"prompt": prompts.instruction_prompt(row, cfg.style, "plain"),
                "completion": prompts.completion_text(target, "plain")}
    elif cfg.format == "trl":  # TRL conversational prompt/completion: the prompt a tuned model is asked with
        body = {"prompt": prompts.instruction_prompt(row, cfg.style, "chat"),
                "completion": [{"role": "assistant", "content": target}]}
    elif cfg.format == "messages":
        body = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": target}]}
    elif cfg.format == "alpaca":
        body = {"instruction": text, "input": "", "output": target}
    elif cfg.format == "xtuner":
        body = {"conversation": [{"input": text, "output": target}]}
    else:
        raise RaitError(f"unknown format {cfg.format!r} (choose {', '.join(FORMATS)})")
    known = {field: row[field] for field in KNOWLEDGE_FIELDS if row.get(field) is not None}
    return {"id": row["id"], **body, "label": label, "task": row_task(row),
            "question": row["question"], **known}


def check_selection(selection: Selection, table: list[dict], method: str) -> None:
    """A method (perhaps a user's) must return distinct rows of the table."""
    ids = {row["id"] for row in table}
    chosen = [row["id"] for row in selection.vanilla + selection.idk]
    if len(chosen) != len(set(chosen)):
        raise RaitError(f"method {method!r} chose an item twice")
    stray = next((i for i in chosen if i not in ids), None)
    if stray is not None:
        raise RaitError(f"method {method!r} returned item {stray!r}, which is not in the knowledge table")


def build_rait_set(table: list[dict], cfg: BuildConfig, *, source: str = "<knowledge>") -> tuple[list[dict], dict]:
    """(rows, summary): select with the method, render the training rows, shuffle (seeded)."""
    if cfg.size < 1 or not 0 <= cfg.idk_ratio <= 1:
        raise RaitError(f"build: size must be >= 1 and idk_ratio in [0, 1] (got {cfg.size}, {cfg.idk_ratio})")
    check_table(table, source)
    method = get_method(cfg.method)
    for field in method.needs:
        if any(row.get(field) is None for row in table):
            raise RaitError(f"{source}: method {cfg.method!r} needs '{field}' in every row; "
                            f"run `rait rehearse` first and build from its knowledge table")
    selection = method.fn(table, cfg, random.Random(cfg.seed))
    check_selection(selection, table, cfg.method)
    rows = ([training_row(r, "vanilla", cfg) for r in selection.vanilla]
            + [training_row(r, "idk", cfg) for r in selection.idk])
    random.Random(f"shuffle-{cfg.seed}").shuffle(rows)
    return rows, summarize(selection, cfg, len(table))


# ---- summary ---------------------------------------------------------------------------------

def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def distribution(values: list[float]) -> dict | None:
    """mean and quartiles, or None for no values."""
    if not values:
        return None
    values = sorted(values)
    return {"mean": sum(values) / len(values), "min": values[0], "q1": quantile(values, 0.25),
            "median": quantile(values, 0.5), "q3": quantile(values, 0.75), "max": values[-1]}


def summarize(selection: Selection, cfg: BuildConfig, pool: int) -> dict:
    labels = {"vanilla": selection.vanilla, "idk": selection.idk}
    stats = {label: {field: distribution([r[field] for r in rows if r.get(field) is not None])
                     for field in KNOWLEDGE_FIELDS} for label, rows in labels.items()}
    counts = {label: len(rows) for label, rows in labels.items()}
    notes = []
    if sum(counts.values()) < cfg.size:
        notes.append(f"allow-fewer: built {sum(counts.values())} of the {cfg.size} samples requested "
                     f"(too few candidates)")
    return {"method": cfg.method, "pool": pool, "counts": counts, "requested": cfg.size,
            "removed": dict(selection.removed), "stats": stats, "notes": notes}


def format_summary(summary: dict) -> str:
    counts = summary["counts"]
    lines = [f"method {summary['method']}: {counts['vanilla']} vanilla + {counts['idk']} IdK "
             f"= {sum(counts.values())} samples from a pool of {summary['pool']}"]
    for name, removed in summary["removed"].items():
        lines.append(f"  filter {name}: removed {removed} IdK candidates")
    lines.append(f"  {'':8} {'field':12} {'mean':>6} {'q1':>6} {'median':>6} {'q3':>6}")
    for label, fields in summary["stats"].items():
        for field, dist in fields.items():
            if dist:
                lines.append(f"  {label:8} {field:12} {dist['mean']:6.3f} {dist['q1']:6.3f} "
                             f"{dist['median']:6.3f} {dist['q3']:6.3f}")
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


# ---- writing ---------------------------------------------------------------------------------

def write_rait_set(rows: list[dict], out: str | Path, cfg: BuildConfig, meta: dict) -> Path:
    """Write the rows (atomic), the alpaca dataset_info.json entry if needed, then the sidecar
    OUT.meta.json last (its presence marks the set complete)."""
    out = Path(out)
    io.write_jsonl_atomic(out, rows)
    if cfg.format == "alpaca":
        write_dataset_info(out)
    task = meta.get("task") or (rows[0]["task"] if rows else "oeqa")
    full_meta = {"method": cfg.method, "config": config_mod.to_dict(cfg),
                 "prompt_format": prompts.prompt_format(task, cfg.style, cfg.template),
                 "format": cfg.format, **meta}
    io.write_json_atomic(meta_path(out), full_meta)
    return out


def meta_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def write_dataset_info(out: Path) -> None:
    """LLaMA-Factory finds alpaca files through dataset_info.json; add (or update) our entry."""
    info_path = out.parent / "dataset_info.json"
    info = io.read_json(info_path) if info_path.exists() else {}
    if not isinstance(info, dict):
        raise RaitError(f"{info_path}: expected a JSON object")
    info[out.stem] = {"file_name": out.name,
                      "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    io.write_json_atomic(info_path, info)


# ---- CLI -------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--knowledge", required=True, metavar="FILE",
                        help="knowledge table from `rait probe` (or `rait rehearse` for flow methods)")
    parser.add_argument("--out", required=True, metavar="FILE", help="RAIT set to write (.jsonl)")
    config_mod.add_arguments(parser, BuildConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.build(BuildConfig, None, args, where="build")
    start = time.perf_counter()
    print(f"rait build: method {cfg.method}, size {cfg.size} (IdK ratio {cfg.idk_ratio}, threshold "
          f"{cfg.threshold}, flow rule {cfg.flow_rule}) from {args.knowledge} -> {args.out} [{cfg.format}]")
    table = load_knowledge(args.knowledge)
    rows, summary = build_rait_set(table, cfg, source=args.knowledge)
    meta = {"task": table_task(table),
            "knowledge": {"path": str(args.knowledge), "fingerprint": io.file_fingerprint(args.knowledge)},
            "counts": summary["counts"], "summary": summary,
            "seconds": round(time.perf_counter() - start, 3)}
    write_rait_set(rows, args.out, cfg, meta)
    print(format_summary(summary))
    print(f"wrote {len(rows)} rows to {args.out} (+ {meta_path(args.out).name})")
    return 0
