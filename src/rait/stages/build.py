"""`rait build`: turn a knowledge table into a RAIT training set.

    read the table -> select with the method -> render the training rows -> shuffle -> write the
    set, then its sidecar OUT.meta.json last (its presence marks the set complete)

The selection rules themselves live in rait.methods (built-ins and a user's own). The OEQA
vanilla targets follow `--target` (vanilla_target below); the sidecar counts each kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections import Counter
from pathlib import Path

from rait import config as config_mod
from rait import io, knowledge, prompts
from rait.config import option
from rait.data.loaders import alias_target
from rait.errors import RaitError, input_error
from rait.methods import FLOW_RULES, Selection, get_method
from rait.options import Seed
from rait.stage import meta_path, sidecar_output

FORMATS = ("trl", "messages", "alpaca", "xtuner")
TARGET_RULES = ("auto", "primary", "model")
MATCHES = ("contains", "exact")  # rait probe's --match: how a sample is scored against the aliases


@dataclasses.dataclass
class BuildConfig(Seed):
    method: str = option("craft", "selection rule: a registered name (vanilla, cor, corcer, corflow, "
                                  "craft) or module:function")
    size: int = option(1000, "number of training samples (vanilla + IdK)", at_least=1)
    idk_ratio: float = option(0.2, "share of IdK (refusal) samples; the paper uses 0.2", at_least=0, at_most=1)
    threshold: float = option(0.5, "correctness >= threshold keeps the answer, below becomes IdK",
                              at_least=0, at_most=1)
    vanilla_min: float | None = option(None, "correctness >= this keeps the answer (default: threshold); "
                                             "with --idk-max a dead band, the reference's is --vanilla-min "
                                             "0.51 --idk-max 0.49", at_least=0, at_most=1)
    idk_max: float | None = option(None, "correctness <= this becomes IdK (default: below threshold); items "
                                         "above it and below the vanilla bound are in neither set",
                                   at_least=0, at_most=1)
    target: str = option("auto", "OEQA vanilla target: auto (the source's primary answer, else the model's "
                                 "most frequent correct sample, else the alias ranking), model (the "
                                 "model's sample first), primary (answers[0] always, the old rule)",
                         choices=TARGET_RULES)
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

    def check(self) -> list[str]:
        """The two correctness bounds never overlap: no question is both vanilla and IdK."""
        vanilla_min = self.threshold if self.vanilla_min is None else self.vanilla_min
        if self.idk_max is not None and self.idk_max >= vanilla_min:
            return [f"idk_max: must be below the vanilla bound {vanilla_min:g} (vanilla_min, else "
                    f"threshold), got {self.idk_max:g}"]
        if self.idk_max is None and vanilla_min < self.threshold:
            return [f"vanilla_min: must be >= threshold {self.threshold:g} unless idk_max is set (IdK is "
                    f"correctness < threshold), got {vanilla_min:g}"]
        return []


# ---- from a selection to training rows -------------------------------------------------------

def vanilla_target(row: dict, rule: str, match: str = "contains") -> tuple[str, str]:
    """(target, kind) of a vanilla row. MCQA: the gold letter alone, as in the paper ("gold").
    OEQA, kind "primary", "model" or "alias":
      auto     answers[0] when the item says the source named it (answer_source "primary"); else
               the model's most frequent correct sample (rait.certainty.majority_correct_answer,
               the rehearsal's target: the model's own wording of what it knows); else the alias
               ranking (rait.data.loaders.alias_target);
      model    the model's sample first, then as auto;
      primary  answers[0] always (every build before answer_source existed).
    A row without answer_source (a table probed before the field) counts as not primary: for
    DPR's TriviaQA its answers[0] is often a redirect alias ("Chi-Beria" for Chicago)."""
    if knowledge.row_task(row) == "mcqa":
        return row["target"], "gold"
    answers = row["answers"]
    if rule == "primary":
        return answers[0], "primary"
    from rait.certainty import majority_correct_answer  # numpy: not at import time

    own = majority_correct_answer(row.get("samples") or [], answers, match)
    if own is not None and rule == "model":
        return own, "model"
    if row.get("answer_source") == "primary":
        return answers[0], "primary"
    if own is not None:
        return own, "model"
    return alias_target(answers), "alias"


def target_text(row: dict, label: str, cfg: BuildConfig, match: str = "contains") -> str:
    """The refusal (IdK) or the vanilla target under the config's target rule."""
    task = knowledge.row_task(row)
    if label == "idk":
        return cfg.refusal_text if cfg.refusal_text is not None else prompts.REFUSAL[task]
    return vanilla_target(row, cfg.target, match)[0]


def training_row(row: dict, label: str, cfg: BuildConfig, target: str | None = None) -> dict:
    """One RAIT sample in the chosen output format, with the fields that decided its label;
    `target` defaults to target_text's."""
    target = target_text(row, label, cfg) if target is None else target
    row = {**row, "task": knowledge.row_task(row)}  # a table row may leave its task implicit
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
    known = {field: row[field] for field in knowledge.FIELDS if row.get(field) is not None}
    return {"id": row["id"], **body, "label": label, "task": knowledge.row_task(row),
            "question": row["question"], **known}


def check_selection(selection: Selection, table: list[dict], method: str) -> None:
    """A method (perhaps a user's) must return a Selection of distinct rows of the table."""
    if not isinstance(selection, Selection):
        raise RaitError(f"method {method!r} returned {type(selection).__name__}, not a rait.methods.Selection")
    for label in ("vanilla", "idk"):
        rows = getattr(selection, label)
        if not isinstance(rows, list) or not all(isinstance(row, dict) and "id" in row for row in rows):
            raise RaitError(f"method {method!r}: Selection.{label} must be a list of knowledge-table rows")
    by_id = {row["id"]: row for row in table}
    chosen = [row["id"] for row in selection.vanilla + selection.idk]
    if len(chosen) != len(set(chosen)):
        raise RaitError(f"method {method!r} chose an item twice")
    stray = next((i for i in chosen if i not in by_id), None)
    if stray is not None:
        raise RaitError(f"method {method!r} returned item {stray!r}, which is not in the knowledge table")
    altered = next((row["id"] for row in selection.vanilla + selection.idk if row != by_id[row["id"]]), None)
    if altered is not None:
        raise RaitError(f"method {method!r} returned a changed row for item {altered!r}; return the "
                        "knowledge table's rows themselves")


def build_rait_set(table: list[dict], cfg: BuildConfig, *, source: str = "the knowledge table",
                   match: str = "contains") -> tuple[list[dict], dict]:
    """(rows, summary): select with the method, render the training rows, shuffle (seeded).
    `table` is checked (knowledge.check_table); `source` names the file it came from; `match` is
    how the probe scored samples (its --match), used to find the model's correct samples."""
    knowledge.check_table(table, source)
    method = get_method(cfg.method)
    for field in method.needs:
        if any(row.get(field) is None for row in table):
            raise RaitError(f"{source}: method {cfg.method!r} needs '{field}' in every row; "
                            f"run `rait rehearse` first and build from its knowledge table")
    selection = run_method(method, table, cfg)
    vanilla = [vanilla_target(row, cfg.target, match) for row in selection.vanilla]
    rows = ([training_row(r, "vanilla", cfg, target) for r, (target, _) in zip(selection.vanilla, vanilla)]
            + [training_row(r, "idk", cfg) for r in selection.idk])
    random.Random(f"shuffle-{cfg.seed}").shuffle(rows)
    summary = summarize(selection, cfg, len(table))
    summary["targets"] = {"rule": cfg.target, "match": match,
                          "kinds": dict(sorted(Counter(kind for _, kind in vanilla).items()))}
    return rows, summary


def run_method(method, table: list[dict], cfg: BuildConfig) -> Selection:
    """Call a (perhaps user's) method; whatever goes wrong in it is one error naming it."""
    try:
        selection = method.fn(table, cfg, random.Random(cfg.seed))
    except RaitError:
        raise
    except TypeError as exc:
        raise RaitError(f"method {cfg.method!r}: {exc} (a method is fn(table, cfg, rng) -> Selection)") from None
    except Exception as exc:  # a user's code: report it as theirs, without a traceback
        raise RaitError(f"method {cfg.method!r} failed: {type(exc).__name__}: {exc}") from None
    check_selection(selection, table, cfg.method)
    return selection


def summarize(selection: Selection, cfg: BuildConfig, pool: int) -> dict:
    labels = {"vanilla": selection.vanilla, "idk": selection.idk}
    stats = {label: knowledge.field_distributions(rows) for label, rows in labels.items()}
    counts = {label: len(rows) for label, rows in labels.items()}
    notes = []
    if sum(counts.values()) < cfg.size:
        notes.append(f"allow-fewer: built {sum(counts.values())} of the {cfg.size} samples requested "
                     f"(too few candidates)")
    return {"method": cfg.method, "pool": pool, "counts": counts, "requested": cfg.size,
            "removed": dict(selection.removed), "stats": stats, "notes": notes}


def split_words(cfg: BuildConfig) -> str:
    """The correctness split in words: "threshold 0.5" or "vanilla >= 0.51, IdK <= 0.49"."""
    if cfg.vanilla_min is None and cfg.idk_max is None:
        return f"threshold {cfg.threshold:g}"
    vanilla_min = cfg.threshold if cfg.vanilla_min is None else cfg.vanilla_min
    idk = f"< {cfg.threshold:g}" if cfg.idk_max is None else f"<= {cfg.idk_max:g}"
    return f"vanilla >= {vanilla_min:g}, IdK {idk}"


def format_summary(summary: dict) -> str:
    counts = summary["counts"]
    lines = [f"method {summary['method']}: {counts['vanilla']} vanilla + {counts['idk']} IdK "
             f"= {sum(counts.values())} samples from a pool of {summary['pool']}"]
    for name, removed in summary["removed"].items():
        what = "candidates in neither set" if name == "dead_band" else "IdK candidates"
        lines.append(f"  filter {name}: removed {removed} {what}")
    if summary.get("targets", {}).get("kinds"):
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary["targets"]["kinds"].items())
        lines.append(f"  vanilla targets (rule {summary['targets']['rule']}): {kinds}")
    lines.append(f"  {'':8} {'field':12} {'mean':>6} {'q1':>6} {'median':>6} {'q3':>6}")
    for label, fields in summary["stats"].items():
        for field, dist in fields.items():
            if dist:
                lines.append(f"  {label:8} {field:12} {dist['mean']:6.3f} {dist['q1']:6.3f} "
                             f"{dist['median']:6.3f} {dist['q3']:6.3f}")
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


# ---- the stage -------------------------------------------------------------------------------

def build(cfg: BuildConfig, knowledge_path: str | Path, out: str | Path) -> dict:
    """`rait build` and the run's build stage: knowledge table file in, RAIT set file out.
    Returns the sidecar's content."""
    knowledge_path, output = Path(knowledge_path), sidecar_output(out)
    io.check_output_path(output.path, [knowledge_path])
    io.check_output_path(output.marker, [knowledge_path])
    started = time.perf_counter()
    table = knowledge.read_table(knowledge_path)
    rows, summary = build_rait_set(table, cfg, source=str(knowledge_path), match=probe_match(knowledge_path))
    meta = {"method": cfg.method, "config": config_mod.to_dict(cfg), "task": knowledge.table_task(table),
            "prompt_format": prompts.prompt_format(knowledge.table_task(table), cfg.style, cfg.template),
            "format": cfg.format,
            "knowledge": {"path": str(knowledge_path), "fingerprint": io.file_fingerprint(knowledge_path)},
            "counts": summary["counts"], "summary": summary, "fingerprint": io.fingerprint(config_mod.to_dict(cfg))}
    output.clear()
    io.write_jsonl_atomic(output.path, rows)
    if cfg.format == "alpaca":
        write_dataset_info(output.path)
    output.finish({**meta, "seconds": round(time.perf_counter() - started, 3)})
    return meta


def probe_match(knowledge_path: Path) -> str:
    """How the table's samples were scored (`rait probe --match`, kept in its sidecar and in
    `rait rehearse`'s), so the model's correct samples are found as the probe counted them;
    the probe's default when the table has no sidecar."""
    sidecar = meta_path(knowledge_path)
    if not sidecar.exists():
        return "contains"
    meta = io.read_json(sidecar)
    config = meta.get("config") if isinstance(meta, dict) else None
    match = config.get("match", "contains") if isinstance(config, dict) else "contains"
    if match not in MATCHES:
        raise input_error(sidecar, f"must be one of {', '.join(MATCHES)}, got {match!r}", field="config.match")
    return match


def write_dataset_info(out: Path) -> None:
    """LLaMA-Factory finds alpaca files through dataset_info.json; add (or update) our entry."""
    info_path = out.parent / "dataset_info.json"
    info = io.read_json(info_path) if info_path.exists() else {}
    if not isinstance(info, dict):
        raise RaitError(f"{info_path}: expected a JSON object (LLaMA-Factory's dataset_info.json)")
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
    cfg = config_mod.build(BuildConfig, None, args, where=config_mod.CLI)
    print(f"rait build: method {cfg.method}, size {cfg.size} (IdK ratio {cfg.idk_ratio}, {split_words(cfg)}, "
          f"flow rule {cfg.flow_rule}, targets {cfg.target}) from {args.knowledge} -> {args.out} [{cfg.format}]")
    meta = build(cfg, args.knowledge, args.out)
    print(format_summary(meta["summary"]))
    print(f"wrote {sum(meta['counts'].values())} rows to {args.out} (+ {meta_path(args.out).name})")
    return 0
