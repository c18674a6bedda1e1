"""`rait eval`: how often a model answers correctly, wrongly, or refuses, and its THS.

Each test question gets one greedy answer (decoding pinned here, never the checkpoint's
generation config) which is classified correct / wrong / refused (MCQA also: unparsed).
Against a baseline result (the initial model with the basic prompt, "Init-Basic" in the paper)
the Truthful Helpfulness Score is computed with a bootstrap interval, plus how the refusals
split between questions the baseline knew (over-conservative) and did not (prudent).

Files: FILE (the result, written last: it marks the evaluation complete), FILE.items.jsonl
(one row per question) and, while running, FILE.partial.jsonl (answers so far, for resumption).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from rait import config
from rait.config import option
from rait.data.mmlu_groups import GROUPS, group_of
from rait.errors import RaitError
from rait.io import (JsonlAppender, fingerprint, package_versions, read_json, read_jsonl,
                     recover_jsonl, write_json_atomic, write_jsonl_atomic)
from rait.knowledge.scoring import STRATEGIES
from rait.models import ModelOptions, model_option_problems
from rait.prompts import prompt_text, wants_shots

OUTCOMES = ("correct", "wrong", "refused", "unparsed")
DEFAULT_MAX_NEW_TOKENS = {"oeqa": 32, "mcqa": 16}


@dataclasses.dataclass
class EvalConfig(ModelOptions):
    name: str | None = option(None, "display name in results and reports (default: from the model)")
    batch_size: int = option(8, "prompts per generation batch")
    backend: str = option("hf", "generation backend (vllm needs the optional extra)", choices=["hf", "vllm"])
    vllm: dict = option(default_factory=dict, flag=False,
                        help="vLLM engine options (see rait.backends.vllm.VllmOptions)")
    seed: int = option(0, "seed (bootstrap resampling)")
    prompt: str | None = option(None, "prompt style; default: a tuned model's trained style, else basic",
                                choices=["basic", "refuse"])
    template: str = option("plain", "how an untuned model is asked: plain k-shot text (base models) or "
                                    "its chat template with the instruction, zero-shot (instruct models); "
                                    "a tuned model uses the template it was trained with",
                           choices=["plain", "chat"])
    shots: int | None = option(None, "k-shot examples for an untuned model (default 3 OEQA, 5 MCQA with "
                                     "plain prompts, 0 in chat)")
    shot_source: str | None = option(None, "dataset the few-shot examples come from (default: the test "
                                           "set's shot split, e.g. MMLU dev, else built-in examples)")
    shot_split: str | None = option(None, "split of --shot-source")
    max_new_tokens: int | None = option(None, "answer length cap (default 32 OEQA, 16 MCQA)")
    match: str = option("contains", "OEQA answer matching: alias contained in the answer, or exact",
                        choices=list(STRATEGIES))
    refusal_phrases: list[str] | None = option(None, "comma-separated refusal phrases (default: built-in)")
    unparsed_as: str = option("wrong", "how unparseable MCQA answers count in Pc/Pw/THS",
                              choices=["wrong", "refused"])
    baseline: str | None = option(None, "eval result of the baseline model (Init-Basic) for THS")
    bootstrap: int = option(1000, "bootstrap resamples for the THS interval (0 = none)")
    overwrite: bool = option(False, "recompute even if a complete result with the same settings exists")


# --------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    from rait.backends import add_vllm_arguments
    from rait.data.split import DataOptions

    parser.add_argument("dataset", metavar="DATASET", help="test set: built-in name, file/folder or hf:REPO")
    parser.add_argument("--out", required=True, help="result file (.json); items go to FILE.items.jsonl")
    config.add_arguments(parser, DataOptions)
    config.add_arguments(parser, EvalConfig)
    add_vllm_arguments(parser)


def run(args) -> int:
    from rait.backends import vllm_section
    from rait.data.loaders import default_shot_source
    from rait.data.split import DataOptions, load_with_options

    cfg = config.build(EvalConfig, None, args, where="eval")
    cfg = dataclasses.replace(cfg, vllm=vllm_section(args, cfg.vllm, where="eval"))
    opts = config.build(DataOptions, None, args, where="eval")
    dataset = load_with_options(args.dataset, opts)
    meta = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint}
    # the test set's own shot split (MMLU dev), if it has one
    if cfg.shot_source is None and wants_shots(cfg.shots, cfg.template):
        found = default_shot_source(args.dataset, opts.split)
        if found:
            cfg = dataclasses.replace(cfg, shot_source=found[0], shot_split=found[1])
    result = evaluate(dataset.items, args.out, cfg, dataset_meta=meta)
    print_summary(result)
    return 0


def load_shots(cfg: EvalConfig, task: str) -> list[dict] | None:
    """Few-shot examples from cfg.shot_source (matched by subject when they have one), or None
    for the built-in examples."""
    from rait.data.loaders import load_dataset

    if not cfg.shot_source:
        return None
    shots = load_dataset(cfg.shot_source, split=cfg.shot_split).items
    if not shots:
        raise RaitError(f"shot source {cfg.shot_source!r} holds no items")
    if shots[0]["task"] != task:
        raise RaitError(f"shot source {cfg.shot_source!r} is {shots[0]['task'].upper()} but the test set "
                        f"is {task.upper()}")
    return shots


# --------------------------------------------------------------------------- entry point

def evaluate(items: list[dict], out, cfg: EvalConfig, *, dataset_meta: dict | None = None,
             loaded=None, shots: list[dict] | None = None) -> dict:
    """Evaluate a model on `items`, write FILE + FILE.items.jsonl, return the result dict.

    `loaded` = (model, tokenizer, info) from `rait.models.load_model` to reuse a loaded model.
    A complete result made with the same settings is returned as is (unless cfg.overwrite).
    """
    from rait.backends import release

    out = Path(out)
    problems = model_option_problems(cfg, "eval")
    if problems:
        raise RaitError("\n".join(problems))
    task = check_items(items)
    dataset_meta = dict(dataset_meta or {})
    items_fp = items_fingerprint(items)
    baseline = load_baseline(cfg.baseline, items, items_fp) if cfg.baseline else None

    model_ref = model_reference(cfg, loaded)
    plan = prompt_plan(task, cfg, model_ref["train_info"])
    if shots is None and plan["kind"] != "instruction" and plan["shots"] > 0:
        shots = load_shots(cfg, task)
    run_fp = fingerprint({"items": items_fp, "model": model_ref["identity"], "plan": plan,
                          "decoding": decoding(task, cfg), "shots": shots_fingerprint(shots)})
    done = complete_result(out, run_fp, cfg)
    if done is not None:
        print(f"rait eval: {out} is complete with the same settings; skipping (--overwrite to redo)",
              file=sys.stderr)
        if baseline:  # a new baseline only changes the comparison, not the answers
            done = attach_baseline(done, out, cfg, baseline)
            write_json_atomic(out, done)
        return done

    name = cfg.name or display_name(cfg.model or (loaded[2].get("model") if loaded else None))
    print(f"rait eval: {name} on {dataset_meta.get('name', 'items')} ({len(items)} {task.upper()} "
          f"questions), {plan['kind']} prompt '{plan['style']}', greedy, "
          f"max {decoding(task, cfg)['max_new_tokens']} new tokens -> {out}", file=sys.stderr)
    started = time.time()
    own = loaded is None
    model, tok, info = loaded or load_model_for(cfg)
    prompts = build_prompts(items, plan, shots)
    try:
        answers = generate_resumable(out, run_fp, items, prompts, model, tok, task, cfg)
    finally:
        if own:
            release((model, tok, info))
    rows = classify_items(items, [prompt_text(tok, p) for p in prompts], answers, cfg)
    write_jsonl_atomic(items_path(out), rows)

    result = {
        "model": name, "model_spec": cfg.model, "model_path": info.get("path"),
        "dataset": dataset_meta.get("name", "items"),
        "dataset_info": {**dataset_meta, "items_fingerprint": items_fp, "n": len(items), "task": task},
        "task": task,
        "prompt": plan["style"],
        "prompt_info": {**plan, "example": prompt_text(tok, prompts[0])},
        "decoding": decoding(task, cfg),
        "scoring": {"match": cfg.match, "refusal_phrases": cfg.refusal_phrases,
                    "unparsed_as": cfg.unparsed_as},
        **outcome_metrics(rows, cfg.unparsed_as),
        "THS": None, "THS_ci": None, "baseline": None, "over_conservative": None, "prudence": None,
        "items_file": items_path(out).name,
        "config": config.to_dict(cfg),
        "fingerprint": run_fp,
        "seconds": round(time.time() - started, 2),
        "versions": package_versions(("rait", "torch", "transformers")),
    }
    if baseline:
        result = attach_baseline(result, out, cfg, baseline, rows=rows)
    write_json_atomic(out, result)
    partial_path(out).unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------- inputs

def check_items(items: list[dict]) -> str:
    """The task shared by all items; an empty or mixed set is an error."""
    if not items:
        raise RaitError("the test set is empty: nothing to evaluate")
    tasks = {item["task"] for item in items}
    if len(tasks) != 1:
        raise RaitError(f"the test set mixes tasks ({', '.join(sorted(tasks))}); evaluate them separately")
    return tasks.pop()


def items_fingerprint(items: list[dict]) -> str:
    """What makes two test sets the same: ids, questions and gold answers, in order."""
    return fingerprint([[i["id"], i["question"], i.get("answers"), i.get("choices"), i.get("target")]
                        for i in items])


def items_path(out: Path) -> Path:
    return out.with_name(out.name + ".items.jsonl") if out.suffix != ".json" else out.with_suffix(".items.jsonl")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl") if out.suffix != ".json" else out.with_suffix(".partial.jsonl")


def complete_result(out: Path, run_fp: str, cfg: EvalConfig) -> dict | None:
    """The existing result if it was made with the same items, model and settings."""
    if cfg.overwrite or not out.exists() or not items_path(out).exists():
        return None
    try:
        result = read_json(out)
    except RaitError:
        return None
    return result if isinstance(result, dict) and result.get("fingerprint") == run_fp else None


def model_reference(cfg, loaded) -> dict:
    """Identity (for resumption) and train info of the model, without loading its weights.
    `cfg`: any object with ModelOptions' fields. The identity covers what changes the model's
    answers: its files (or hub id and revision) and the chat template it is given."""
    from rait.models import read_train_info, resolve_model

    if loaded is not None:
        info = loaded[2]
        path = info.get("path") or info.get("model")
        train_info = info.get("train_info")
    else:
        path = resolve_model(cfg.model, revision=getattr(cfg, "revision", None))
        train_info = read_train_info(path) if Path(path).is_dir() else None
    extra = [getattr(cfg, "revision", None), getattr(cfg, "chat_template", None)]
    identity = model_identity(path) if not any(extra) else fingerprint([model_identity(path), extra])
    return {"path": path, "identity": identity, "train_info": train_info}


def model_identity(path) -> str:
    """Names, sizes and modification times of a model directory's files (a retrained model in the
    same folder is a different model); a hub id stands for itself."""
    folder = Path(str(path))
    if not folder.is_dir():
        return str(path)
    stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.iterdir()) if p.is_file()]
    return fingerprint([str(folder.resolve()), stats])


def display_name(spec: str | None) -> str:
    from rait.models import DEFAULT_MODEL

    if not spec:
        return DEFAULT_MODEL
    return Path(spec).name if Path(spec).exists() else spec


def load_model_for(cfg: EvalConfig):
    from rait.backends import load_for

    return load_for(cfg)


# --------------------------------------------------------------------------- prompts

def prompt_plan(task: str, cfg: EvalConfig, train_info: dict | None) -> dict:
    """How questions are put to the model. A tuned model: the instruction format it was trained
    with (its task must match the test set's). An untuned one: k-shot plain text (base models),
    or its chat template with the instruction, zero-shot unless shots are asked for (instruct
    models, as the paper evaluates Init-Basic and Init-Refuse)."""
    from rait.prompts import default_shots

    if train_info:
        trained = train_info.get("prompt_format") or {}
        if trained.get("task") and trained["task"] != task:
            raise RaitError(f"the model was tuned on {trained['task'].upper()} but the test set is "
                            f"{task.upper()}; evaluate it on a {trained['task'].upper()} test set")
        return {"kind": "instruction", "style": cfg.prompt or trained.get("style", "refuse"),
                "template": trained.get("template", "plain"), "shots": 0}
    shots = default_shots(task, cfg.template) if cfg.shots is None else cfg.shots
    if shots < 0:
        raise RaitError(f"eval.shots: must be >= 0, got {shots}")
    kind = "fewshot" if cfg.template == "plain" else "chat"
    return {"kind": kind, "style": cfg.prompt or "basic", "template": cfg.template, "shots": shots}


def decoding(task: str, cfg: EvalConfig) -> dict:
    max_new = cfg.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    return {"do_sample": False, "max_new_tokens": max_new, "stop_at_newline": True,
            "stop": "first newline after some text, eos or end of turn",
            "batch_size": cfg.batch_size}


def shots_fingerprint(shots: list[dict] | None) -> str | None:
    return fingerprint([s["id"] for s in shots]) if shots else None


def build_prompts(items: list[dict], plan: dict, shots: list[dict] | None) -> list:
    """One prompt per item: text (plain) or a conversation (chat), tokenised by the backend."""
    from rait.prompts import instruction_prompt, untuned_prompt

    if plan["kind"] == "instruction":
        return [instruction_prompt(item, plan["style"], plan["template"]) for item in items]
    return [untuned_prompt(item, pick_shots(item, shots, plan["shots"]), plan["style"], plan["template"])
            for item in items]


def pick_shots(item: dict, shots: list[dict] | None, k: int) -> list[dict]:
    """k examples for `item`: from the same subject when the source has it (MMLU dev), never the
    item itself; the built-in examples when no source is given."""
    from rait.prompts import BUILTIN_MCQA_SHOTS, BUILTIN_OEQA_SHOTS

    if k == 0:
        return []
    pool = shots or (BUILTIN_OEQA_SHOTS if item["task"] == "oeqa" else BUILTIN_MCQA_SHOTS)
    pool = [s for s in pool if s["id"] != item["id"] and s["question"] != item["question"]]
    same = [s for s in pool if item.get("subject") and s.get("subject") == item.get("subject")]
    chosen = (same + [s for s in pool if s not in same])[:k]
    return chosen


# --------------------------------------------------------------------------- generation

def generate_resumable(out: Path, run_fp: str, items, prompts, model, tok, task, cfg) -> list[str]:
    """Greedy answers for every prompt, appended chunk by chunk to FILE.partial.jsonl so an
    interrupted evaluation resumes where it stopped (only if the settings are the same)."""
    from tqdm.auto import tqdm

    from rait.backends import get_backend

    backend = get_backend(cfg.backend)
    partial = partial_path(out)
    rows = recover_jsonl(partial)
    if rows and rows[0].get("run_fingerprint") != run_fp:
        partial.unlink()
        rows = []
    answers = {row["id"]: row["answer"] for row in rows[1:]}
    todo = [i for i, item in enumerate(items) if item["id"] not in answers]
    max_new = decoding(task, cfg)["max_new_tokens"]
    chunk = max(1, cfg.batch_size) * 4
    with JsonlAppender(partial) as sink, tqdm(total=len(items), initial=len(items) - len(todo),
                                              desc="eval", unit="q", file=sys.stderr) as bar:
        if not rows:
            sink.write([{"run_fingerprint": run_fp}])
        for start in range(0, len(todo), chunk):
            batch = todo[start:start + chunk]
            texts = backend.greedy(model, tok, [prompts[i] for i in batch], max_new_tokens=max_new,
                              batch_size=cfg.batch_size, stop_at_newline=True)
            new = [{"id": items[i]["id"], "answer": text} for i, text in zip(batch, texts)]
            sink.write(new)
            answers.update((row["id"], row["answer"]) for row in new)
            bar.update(len(batch))
    return [answers[item["id"]] for item in items]


def first_line(text: str) -> str:
    """The answer proper: generation stops at the end of the line, but a backend may return more."""
    from rait.backends import answer_text

    return answer_text(text)


# --------------------------------------------------------------------------- scoring

def classify_items(items, prompts, answers, cfg: EvalConfig) -> list[dict]:
    """One row per question with its outcome (refusal is checked first by the scorers)."""
    from rait.knowledge.scoring import classify_mcqa, classify_oeqa

    rows = []
    for item, prompt, raw in zip(items, prompts, answers):
        answer = first_line(raw)
        row = {"id": item["id"], "prompt": prompt, "answer": answer}
        if item["task"] == "oeqa":
            row["outcome"] = classify_oeqa(answer, item["answers"], strategy=cfg.match,
                                           refusal_phrases=cfg.refusal_phrases)
            row["aliases"] = item["answers"]
        else:
            row["outcome"] = classify_mcqa(answer, item["choices"], item["target"],
                                           refusal_phrases=cfg.refusal_phrases)
            row["target"] = item["target"]
            row["subject"] = item.get("subject")
        rows.append(row)
    return rows


def outcome_metrics(rows: list[dict], unparsed_as: str) -> dict:
    """Micro rates overall, per subject, per MMLU group, and the macro average over subjects."""
    from rait.metrics import macro_average, rates

    result = rates([r["outcome"] for r in rows], unparsed_as=unparsed_as)
    by_subject = breakdown(rows, lambda r: r.get("subject"), unparsed_as)
    by_group = breakdown(rows, lambda r: group_of(r.get("subject")), unparsed_as)
    by_group = {g: by_group[g] for g in GROUPS if g in by_group}
    macro = None
    if len(by_subject) > 1:
        macro = {"over": "subjects", **macro_average(by_subject)}
    return {**result, "by_subject": by_subject, "by_group": by_group, "macro": macro}


def breakdown(rows, key, unparsed_as: str) -> dict:
    from rait.metrics import rates

    groups: dict[str, list[str]] = {}
    for row in rows:
        name = key(row)
        if name is not None:
            groups.setdefault(name, []).append(row["outcome"])
    return {name: rates(outcomes, unparsed_as=unparsed_as) for name, outcomes in sorted(groups.items())}


def effective(outcome: str, unparsed_as: str) -> str:
    return unparsed_as if outcome == "unparsed" else outcome


# --------------------------------------------------------------------------- baseline and THS

def load_baseline(path, items: list[dict], items_fp: str) -> dict:
    """The baseline result and its per-item outcomes; it must be on the same test set."""
    path = Path(path)
    if not path.exists():
        raise RaitError(f"{path}: baseline result not found (run `rait eval` with the initial model first)")
    result = read_json(path)
    if not isinstance(result, dict) or "Pc" not in result or "Pw" not in result:
        raise RaitError(f"{path}: not a rait eval result (no Pc / Pw)")
    theirs = (result.get("dataset_info") or {}).get("items_fingerprint")
    outcomes = baseline_outcomes(path, result)
    ids = [i["id"] for i in items]
    if outcomes is not None and set(outcomes) != set(ids):
        missing, extra = len(set(ids) - set(outcomes)), len(set(outcomes) - set(ids))
        raise RaitError(f"{path}: baseline was evaluated on a different test set ({missing} of these "
                        f"questions missing from it, {extra} not in this test set)")
    if theirs is not None and theirs != items_fp:
        raise RaitError(f"{path}: baseline was evaluated on a different test set (fingerprint "
                        f"{theirs} != {items_fp}): evaluate both on the same data")
    if not result["Pw"]:
        raise RaitError(f"{path}: the baseline never answered wrongly (Pw = 0), so THS is undefined "
                        "against it; use the initial model with the basic prompt as baseline")
    if theirs is None and outcomes is None and result.get("n") != len(items):
        raise RaitError(f"{path}: baseline has n={result.get('n')} but this test set has {len(items)}")
    return {"path": str(path), "result": result, "outcomes": outcomes}


def baseline_outcomes(path: Path, result: dict) -> dict | None:
    """id -> outcome from the baseline's items file, or None when that file is absent."""
    file = path.parent / result.get("items_file", items_path(path).name)
    if not file.exists():
        return None
    return {row["id"]: row["outcome"] for _, row in read_jsonl(file)}


def attach_baseline(result: dict, out: Path, cfg: EvalConfig, baseline: dict, rows=None) -> dict:
    """THS, its interval, over-conservativeness and prudence against the baseline."""
    from rait.metrics import bootstrap_ths_ci, rates, ths

    if rows is None:
        rows = [row for _, row in read_jsonl(items_path(out))]
    base = baseline["result"]
    mine = [r["outcome"] for r in rows]
    paired = baseline["outcomes"] is not None
    if paired:
        theirs = [baseline["outcomes"][r["id"]] for r in rows]
        base_rates = rates(theirs, unparsed_as=cfg.unparsed_as)  # same unparsed rule on both sides
    else:
        theirs = [o for o in OUTCOMES for _ in range(int(base.get(o) or 0))]
        base_rates = {"Pc": base["Pc"], "Pw": base["Pw"]}
    result = dict(result)
    result["THS"] = ths(result["Pc"], result["Pw"], base_rates["Pc"], base_rates["Pw"])
    result["THS_ci"] = None
    if cfg.bootstrap > 0 and theirs:
        lo, hi = bootstrap_ths_ci(mine, theirs, paired=paired, n_boot=cfg.bootstrap, seed=cfg.seed,
                                  unparsed_as=cfg.unparsed_as, alpha=0.05)
        result["THS_ci"] = [lo, hi]
    result["baseline"] = {"path": baseline["path"], "model": base.get("model"),
                          "dataset": base.get("dataset"), "prompt": base.get("prompt"),
                          "Pc": base_rates["Pc"], "Pw": base_rates["Pw"], "paired": paired}
    if paired:
        result.update(refusal_split(rows, baseline["outcomes"], cfg.unparsed_as))
        result = subject_ths(result, base, ths)
    return result


def refusal_split(rows, base_outcomes: dict, unparsed_as: str) -> dict:
    """Refusals on questions the baseline answered correctly (over-conservative: knowledge the
    tuning taught the model to hide) vs. ones it got wrong (prudence: errors turned into refusals)."""
    refused = [r["id"] for r in rows if effective(r["outcome"], unparsed_as) == "refused"]
    base = {i: effective(o, unparsed_as) for i, o in base_outcomes.items()}
    base_correct = sum(1 for r in rows if base[r["id"]] == "correct")
    base_wrong = sum(1 for r in rows if base[r["id"]] == "wrong")
    over = sum(1 for i in refused if base[i] == "correct")
    prudent = sum(1 for i in refused if base[i] == "wrong")

    def share(count, total):
        return count / total if total else None

    return {
        "over_conservative": {"count": over, "share": share(over, base_correct),
                              "of_refused": share(over, len(refused)), "baseline_correct": base_correct},
        "prudence": {"count": prudent, "share": share(prudent, base_wrong),
                     "of_refused": share(prudent, len(refused)), "baseline_wrong": base_wrong},
    }


def subject_ths(result: dict, base: dict, ths) -> dict:
    """THS per subject / group / macro against the baseline's matching breakdown."""
    def with_ths(mine: dict | None, theirs: dict | None) -> dict | None:
        if not mine or not theirs or not theirs.get("Pw"):
            return mine
        return {**mine, "THS": ths(mine["Pc"], mine["Pw"], theirs["Pc"], theirs["Pw"])}

    for key in ("by_subject", "by_group"):
        result[key] = {name: with_ths(row, (base.get(key) or {}).get(name))
                       for name, row in (result.get(key) or {}).items()}
    result["macro"] = with_ths(result.get("macro"), base.get("macro"))
    return result


# --------------------------------------------------------------------------- summary

def fmt_pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_summary(result: dict) -> None:
    ci = result.get("THS_ci")
    ths_text = fmt_pct(result.get("THS")) + (f" [{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]" if ci else "")
    unparsed = result["unparsed"] / result["n"] if result["n"] else 0.0
    lines = [
        f"{result['model']} on {result['dataset']} (prompt {result['prompt']}, n={result['n']})",
        f"  {'Pc':>6} {'Pw':>6} {'Pr':>6} {'unparsed':>9}  THS (95% CI), percent",
        f"  {fmt_pct(result['Pc']):>6} {fmt_pct(result['Pw']):>6} {fmt_pct(result['Pr']):>6} "
        f"{fmt_pct(unparsed):>9}  {ths_text}",
    ]
    if result.get("baseline"):
        b = result["baseline"]
        lines.append(f"  baseline: {b['model']} (Pc {fmt_pct(b['Pc'])}, Pw {fmt_pct(b['Pw'])}) from {b['path']}")
    for key, label in (("over_conservative", "refused but baseline correct"),
                       ("prudence", "refused and baseline wrong")):
        part = result.get(key)
        if part:
            lines.append(f"  {label}: {part['count']} ({fmt_pct(part['share'])}% of those)")
    for group, row in (result.get("by_group") or {}).items():
        lines.append(f"  {group:<16} n={row['n']:<5} Pc {fmt_pct(row['Pc'])} Pw {fmt_pct(row['Pw'])}"
                     + (f" THS {fmt_pct(row['THS'])}" if row.get("THS") is not None else ""))
    print("\n".join(lines))
