"""`rait eval`: how often a model answers correctly, wrongly, or refuses, and its THS.

Each test question gets one greedy answer (decoding pinned here, never the checkpoint's
generation config) which is classified correct / wrong / refused (MCQA also: unparsed).
Against a baseline result (the initial model with the basic prompt, "Init-Basic" in the paper)
the Truthful Helpfulness Score is computed with a bootstrap interval, plus how the refusals
split between questions the baseline knew (over-conservative) and did not (prudent).

An untuned model's few-shot examples follow rait.prompts.with_shot_source / plan_shots; they are
never test items (a shot source holding one is refused). A test set without a shot split of its
own gives up `--shot-size K` carved shots (`load_test_set`: the pool / test carving, so disjoint
and the same on every machine) and the rest is evaluated; the result records where its shots
came from (prompt_info.shot_examples, dataset_info.shots_carved_out).

    check the settings, the test set, the baseline and the output paths (nothing loaded or
    written yet) -> plan the prompts -> reuse a finished result made with the same settings, or
    answer every question (resumable) -> classify -> rates, THS -> write the items, then the
    result last

Files (a documented contract, also of old run directories): FILE (the result; written last, it
is its own marker: its `fingerprint` says which settings made it), FILE.items.jsonl (one row per
question) and, while running, FILE.partial.jsonl (answers so far, for resumption); a FILE ending
in .json loses that suffix in the other two (res.json: res.items.jsonl).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

from rait import config, io
from rait.layout import items_path
from rait.results import (check_eval_result, check_object, check_rates_cell, items_file_of, read_outcome_rows,
                          result_outcomes)
from rait.models import model_reference
from rait.config import option
from rait.data.mmlu_groups import GROUPS, group_of
from rait.errors import RaitError, input_error
from rait.metrics import OUTCOMES, percent
from rait.options import Generation, Overwrite
from rait.prompts import prompt_text, wants_shots, with_shot_source
from rait.scoring import STRATEGIES
from rait.stage import Output, existing_foreign, remove, result_output

DEFAULT_MAX_NEW_TOKENS = {"oeqa": 32, "mcqa": 16}
# A baseline share of wrong answers below this counts as none: THS divides by it, so against a
# smaller one it is undefined or overflows (a real share is at least 1 / the number of questions).
LEAST_PW = 1e-9


@dataclasses.dataclass
class EvalConfig(Generation, Overwrite):
    """Settings of `rait eval` (YAML section `eval`); model and generation options come from
    rait.options.Generation."""

    name: str | None = option(None, "display name in results and reports (default: from the model)")
    prompt: str | None = option(None, "prompt style; default: a tuned model's trained style, else basic",
                                choices=["basic", "refuse"])
    shots: int | None = option(None, "k-shot examples for an untuned model (default 3 OEQA, 5 MCQA with "
                                     "plain prompts, 0 in chat)", at_least=0)
    shot_source: str | None = option(None, "dataset the few-shot examples come from (default: the test "
                                           "set's shot split, e.g. MMLU dev, else built-in examples)")
    shot_split: str | None = option(None, "split of --shot-source")
    shot_size: int | None = option(None, "carve N few-shot examples out of the shot source by seeded hash (the "
                                         "first N in --shot-split-seed rank order, as --part test carves); "
                                         "without --shot-source, out of the test set itself, and only its "
                                         "other items are evaluated", at_least=1)
    shot_split_seed: int = option(0, "seed of the --shot-size carving", at_least=0)
    max_new_tokens: int | None = option(None, "answer length cap (default 32 OEQA, 16 MCQA)", at_least=1)
    match: str = option("contains", "OEQA answer matching: alias contained in the answer, or exact",
                        choices=list(STRATEGIES))
    refusal_phrases: list[str] | None = option(None, "comma-separated refusal phrases (default: built-in)")
    negation_guard: bool = option(True, "contains match: an alias right after a negator ('not Mark Twain') "
                                        "does not count as the answer")
    unparsed_as: str = option("wrong", "how unparseable MCQA answers count in Pc/Pw/THS",
                              choices=["wrong", "refused"])
    baseline: str | None = option(None, "eval result of the baseline model (Init-Basic) for THS")
    bootstrap: int = option(1000, "bootstrap resamples for the THS interval (0 = none)", at_least=0,
                            at_most=1_000_000)  # each resample is held in memory


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
    from rait.data.split import DataOptions

    cfg = config.build(EvalConfig, None, args, where="eval")
    cfg = dataclasses.replace(cfg, vllm=vllm_section(args, cfg.vllm, where="eval"))
    opts = config.build(DataOptions, None, args, where="eval")
    io.check_output_path(args.out, [args.dataset, cfg.baseline])
    cfg = with_shot_source(cfg, args.dataset, opts.split)
    dataset = load_test_set(args.dataset, opts, cfg)
    carved = carved_out_meta(cfg, args.dataset, opts.split)
    if carved:
        print(f"rait eval: {cfg.shot_size} few-shot examples carved out of {args.dataset} (shot_split_seed "
              f"{cfg.shot_split_seed}); the {len(dataset.items)} others are the test set", file=sys.stderr)
    meta = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint, **carved}
    result = evaluate(dataset.items, args.out, cfg, dataset_meta=meta)
    print_summary(result)
    return 0


# --------------------------------------------------------------------------- entry point

def evaluate(items: list[dict], out, cfg: EvalConfig, *, dataset_meta: dict | None = None,
             loaded=None, shots: list[dict] | None = None) -> dict:
    """Evaluate a model on `items`, write FILE + FILE.items.jsonl, return the result dict.

    `loaded` = (model, tokenizer, info) from `rait.backends.load_for` to reuse a loaded model;
    `shots` = few-shot examples to use instead of cfg.shot_source. A complete result made with
    the same settings is returned as is (unless cfg.overwrite). Every input, the baseline
    included, is checked before a model loads or a file is written.
    """
    output = eval_output(out)
    dataset_meta = dict(dataset_meta or {})
    config.check_values(cfg, "eval")
    task = check_items(items)
    items_fp = items_fingerprint(items)
    baseline = load_baseline(cfg.baseline, items, items_fp, cfg) if cfg.baseline else None
    check_outputs(output, input_paths(cfg, dataset_meta, baseline), cfg)
    plan, shots, run_fp, origin = plan_run(task, items, items_fp, cfg, loaded, shots,
                                           test=dataset_meta.get("name", "items"))
    done = finished_result(output, run_fp, items, cfg)
    if done is not None:
        return reuse_finished(output, *done, cfg, baseline)

    earlier = resumable_answers(output, run_fp, cfg)
    name = cfg.name or display_name(cfg.model or (loaded[2].get("model") if loaded else None))
    announce(name, items, task, plan, cfg, dataset_meta, output.path)
    started = time.time()
    prompts, shot_record = build_prompts(items, plan, shots)
    if shot_record is not None and origin is not None:  # where the given shots came from
        shot_record = {**shot_record, **origin,
                       "carved_from_test_set": "shots_carved_out" in dataset_meta}
    answers, tok, info = answer_all(output, run_fp, items, prompts, earlier, task, cfg, loaded)
    rows = classify_items(items, [prompt_text(tok, p) for p in prompts], answers, cfg)
    result = result_record(rows, cfg, name=name, model_path=info.get("path"), task=task,
                           plan={**plan, "shot_examples": shot_record},
                           example=prompt_text(tok, prompts[0]), dataset_meta=dataset_meta,
                           items_fp=items_fp, output=output, run_fp=run_fp, started=started)
    if baseline:
        result = attach_baseline(result, rows, cfg, baseline)
    write_result(output, rows, result)
    return result


def plan_run(task: str, items: list[dict], items_fp: str, cfg: EvalConfig, loaded, shots: list[dict] | None,
             *, test: str = "items"):
    """(prompt plan, few-shot examples, fingerprint of the run, where the shots came from: None
    unless from cfg.shot_source): what decides the answers. The shot source is read (and checked
    against the test set) before the model is looked at, so that a bad one fails first."""
    source_shots = (load_shots(cfg, task, items, test=test)
                    if shots is None and wants_shots(cfg.shots, cfg.template) else None)
    model_ref = model_reference(cfg, loaded)
    plan = prompt_plan(task, cfg, model_ref["train_info"])
    origin = None
    if shots is None and plan["kind"] != "instruction" and plan["shots"] > 0:
        shots = source_shots
        if source_shots is not None:
            check_shot_count(plan["shots"], cfg)
            origin = shot_origin(cfg)
    run_fp = io.fingerprint({"items": items_fp, "model": model_ref["identity"], "plan": plan,
                             "decoding": decoding(task, cfg), "shots": shots_fingerprint(shots),
                             "scoring": scoring_record(cfg)})
    return plan, shots, run_fp, origin


def scoring_record(cfg: EvalConfig) -> dict:
    """How answers were scored (in the result, and in its fingerprint: a finished result scored
    another way, or by an older scorer, is not reused)."""
    from rait.scoring import SCORING_VERSION

    return {"match": cfg.match, "refusal_phrases": cfg.refusal_phrases, "unparsed_as": cfg.unparsed_as,
            "negation_guard": cfg.negation_guard, "version": SCORING_VERSION}


def result_record(rows: list[dict], cfg: EvalConfig, *, name, model_path, task, plan, example, dataset_meta,
                  items_fp, output: Output, run_fp, started) -> dict:
    """The result file's content (the documented eval JSON), before any baseline comparison."""
    return {
        "model": name, "model_spec": cfg.model, "model_path": model_path,
        "dataset": dataset_meta.get("name", "items"),
        "dataset_info": {**dataset_meta, "items_fingerprint": items_fp, "n": len(rows), "task": task},
        "task": task,
        "prompt": plan["style"],
        "prompt_info": {**plan, "example": example},
        "decoding": decoding(task, cfg),
        "scoring": scoring_record(cfg),
        **outcome_metrics(rows, cfg.unparsed_as),
        "THS": None, "THS_ci": None, "baseline": None, "over_conservative": None, "prudence": None,
        "items_file": items_path(output.path).name,
        "config": config.to_dict(cfg),
        "fingerprint": run_fp,
        "seconds": round(time.time() - started, 2),
        "versions": io.package_versions(("rait", "torch", "transformers")),
    }


# --------------------------------------------------------------------------- output files

def partial_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl") if out.suffix != ".json" else out.with_suffix(".partial.jsonl")


def eval_output(out) -> Output:
    """The result (its own marker), its items file, and the partial answers of a run under way."""
    return result_output(out, companions=[items_path(out)], partials=[partial_path(out)])


def input_paths(cfg: EvalConfig, dataset_meta: dict, baseline: dict | None) -> list[str]:
    """Every file the evaluation reads: none of them may be one it writes."""
    paths = [dataset_meta.get("source"), cfg.shot_source]
    if baseline:
        paths += [baseline["path"], baseline["items_file"]]
    return [str(p) for p in paths if p]


def check_outputs(output: Output, inputs: list[str], cfg: EvalConfig) -> None:
    """The result, items and partial files may be (re)placed: none is an input, a folder or a
    device, and a file there that rait did not write is replaced only with --overwrite."""
    for path in [output.path, *output.companions, *output.partials]:
        io.check_output_path(path, inputs)
    if not cfg.overwrite and existing_foreign(output):
        raise RaitError(f"{output.path}: exists and is not a rait eval result; choose another --out "
                        "(or use --overwrite to replace it)")


def finished_result(output: Output, run_fp: str, items: list[dict], cfg: EvalConfig):
    """(result, item rows) of a finished evaluation with the same items, model and settings, or
    None. A damaged one (unreadable items, rates that are not rates) counts as not finished."""
    if cfg.overwrite:
        return None
    done = output.finished(run_fp)
    if done is None or not all(is_rate(done.get(key)) for key in ("Pc", "Pw")):
        return None
    try:
        rows = read_outcome_rows(items_path(output.path))
    except RaitError:
        return None
    if [row["id"] for row in rows] != [item["id"] for item in items]:
        return None
    return done, rows


def reuse_finished(output: Output, done: dict, rows: list[dict], cfg: EvalConfig, baseline) -> dict:
    print(f"rait eval: {output.path} is complete with the same settings; skipping (--overwrite to redo)",
          file=sys.stderr)
    if baseline:  # a new baseline only changes the comparison, not the answers
        done = attach_baseline(done, rows, cfg, baseline)
        io.write_json_atomic(output.marker, done)
    return done


def write_result(output: Output, rows: list[dict], result: dict) -> None:
    """The old result goes first (it must never stand beside the new items), then the items are
    written, then the result last; the partial answers it replaces are dropped."""
    remove(output.marker)
    io.write_jsonl_atomic(items_path(output.path), rows)
    output.finish(result)


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
    return io.fingerprint([[i["id"], i["question"], i.get("answers"), i.get("choices"), i.get("target")]
                           for i in items])


def load_shots(cfg: EvalConfig, task: str, items: list[dict] | None = None, *,
               test: str = "items") -> list[dict] | None:
    """Few-shot examples from cfg.shot_source (matched by subject when they have one; with
    cfg.shot_size, the ones carved out of it), or None for the built-in examples. A source that
    holds any of the test `items` is refused (`check_disjoint_shots`)."""
    from rait.data.loaders import load_dataset
    from rait.data.split import carve_shots

    if not cfg.shot_source:
        return None
    source = load_dataset(cfg.shot_source, split=cfg.shot_split)
    shots = source.items
    if not shots:
        raise RaitError(f"shot source {cfg.shot_source!r} holds no items")
    if shots[0]["task"] != task:
        raise RaitError(f"shot source {cfg.shot_source!r} is {shots[0]['task'].upper()} but the test set "
                        f"is {task.upper()}")
    if cfg.shot_size is not None:
        shots = carve_shots(source, cfg.shot_size, seed=cfg.shot_split_seed)[0].items
    check_disjoint_shots(items or [], shots, test=test, source=cfg.shot_source)
    return shots


def check_disjoint_shots(items: list[dict], shots: list[dict], *, test: str, source) -> None:
    """The shots are never test items: a shot source holding any item of the test set (the same
    id) is refused. (A shot that only repeats a test question's text under another id, as one
    MMLU dev question repeats a val one, is left out of the prompts by rait.prompts.plan_shots.)"""
    ids = {item["id"] for item in items}
    overlap = sum(1 for shot in shots if shot["id"] in ids)
    if overlap:
        raise RaitError(f"eval: the test set {test!r} overlaps its shot source {str(source)!r}: {overlap} of its "
                        f"{len(items)} items are among the {len(shots)} shots; carve the shots out of it "
                        "(--shot-size N without --shot-source; in a config, the test's shots: {size: N}) or "
                        "give another shot source")


def check_shot_count(k: int, cfg: EvalConfig) -> None:
    """A prompt cannot have more shots than were carved (--shot-size): an error, not a fallback."""
    if cfg.shot_size is not None and k > cfg.shot_size:
        raise RaitError(f"eval: {k} shots per prompt asked for, but only {cfg.shot_size} are carved out of "
                        f"{cfg.shot_source!r} (shot_size); carve at least {k} or ask for fewer shots")


def shot_origin(cfg: EvalConfig) -> dict:
    """Where the shots of cfg.shot_source come from, for the result's prompt_info.shot_examples."""
    carve = {"size": cfg.shot_size, "split_seed": cfg.shot_split_seed} if cfg.shot_size is not None else None
    return {"dataset": cfg.shot_source, "split": cfg.shot_split, "carve": carve}


def shots_from_test_set(cfg: EvalConfig, spec: str, split: str | None) -> bool:
    """Whether the shots are carved (shot_size) out of the test set's own dataset (the same spec
    and split): then they leave the test set (`load_test_set`)."""
    return cfg.shot_size is not None and cfg.shot_source is not None and cfg.shot_split == split \
        and same_dataset(cfg.shot_source, spec)


def same_dataset(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def load_test_set(spec: str, opts, cfg: EvalConfig):
    """The test set as the data options say, without the shots carved out of it when they come
    from it (the pool / test carving: disjoint by construction, the same on every machine)."""
    from rait.data.split import load_with_options

    if not shots_from_test_set(cfg, spec, opts.split):
        return load_with_options(spec, opts)
    return load_with_options(spec, opts, without_shots=(cfg.shot_size, cfg.shot_split_seed))


def carved_out_meta(cfg: EvalConfig, spec: str, split: str | None) -> dict:
    """{"shots_carved_out": ...} for the result's dataset_info when the test set gave up its shots."""
    if not shots_from_test_set(cfg, spec, split):
        return {}
    return {"shots_carved_out": {"size": cfg.shot_size, "split_seed": cfg.shot_split_seed}}


def display_name(spec: str | None) -> str:
    from rait.models import DEFAULT_MODEL

    if not spec:
        return DEFAULT_MODEL
    return Path(spec).name if Path(spec).exists() else spec


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
    kind = "fewshot" if cfg.template == "plain" else "chat"
    return {"kind": kind, "style": cfg.prompt or "basic", "template": cfg.template, "shots": shots}


def decoding(task: str, cfg: EvalConfig) -> dict:
    max_new = DEFAULT_MAX_NEW_TOKENS[task] if cfg.max_new_tokens is None else cfg.max_new_tokens
    return {"do_sample": False, "max_new_tokens": max_new, "stop_at_newline": True,
            "stop": "first newline after some text, eos or end of turn",
            "batch_size": cfg.batch_size}


def shots_fingerprint(shots: list[dict] | None) -> str | None:
    return io.fingerprint([s["id"] for s in shots]) if shots else None


def build_prompts(items: list[dict], plan: dict, shots: list[dict] | None) -> tuple[list, dict | None]:
    """(one prompt per item: text (plain) or a conversation (chat), tokenised by the backend;
    the record of the few-shot examples used, None for a tuned model's instruction prompts)."""
    from rait.prompts import instruction_prompt, plan_shots, shots_for, untuned_prompt, warn_shot_fallback

    if plan["kind"] == "instruction":
        return [instruction_prompt(item, plan["style"], plan["template"]) for item in items], None
    by_subject, record = plan_shots(items, items[0]["task"], plan["shots"], shots, stage="eval")
    warn_shot_fallback(record, "eval")
    return [untuned_prompt(item, shots_for(item, by_subject), plan["style"], plan["template"])
            for item in items], record


# --------------------------------------------------------------------------- generation

def announce(name, items, task, plan, cfg, dataset_meta, out) -> None:
    print(f"rait eval: {name} on {dataset_meta.get('name', 'items')} ({len(items)} {task.upper()} "
          f"questions), {plan['kind']} prompt '{plan['style']}', greedy, "
          f"max {decoding(task, cfg)['max_new_tokens']} new tokens -> {out}", file=sys.stderr)


def answer_all(output: Output, run_fp: str, items, prompts, earlier, task, cfg: EvalConfig, loaded):
    """(answers, tokenizer, model info): the given model's answers, or those of one loaded (and
    released) here."""
    from rait.backends import load_for, release

    own = loaded is None
    model, tok, info = loaded or load_for(cfg)
    try:
        answers = generate_resumable(output, run_fp, items, prompts, earlier, model, tok, task, cfg)
    finally:
        if own:
            release((model, tok, info))
    return answers, tok, info


def resumable_answers(output: Output, run_fp: str, cfg: EvalConfig) -> dict[str, str] | None:
    """id -> answer from FILE.partial.jsonl of an interrupted run with the same settings, read
    before any model loads; None (and the file gone) when there is nothing to resume: no file,
    other settings, or --overwrite (start afresh)."""
    partial = output.partials[0]
    if cfg.overwrite:
        remove(partial)
    rows = io.recover_jsonl(partial)
    if not rows or rows[0].get("run_fingerprint") != run_fp:
        remove(partial)
        return None
    answers = {}
    for number, row in enumerate(rows[1:], start=2):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("answer"), str):
            raise input_error(partial, "expected an answer row {id, answer}; the file is damaged: remove it "
                                       "(or use --overwrite) to start again", line=number)
        answers[row["id"]] = row["answer"]
    return answers


def generate_resumable(output: Output, run_fp: str, items, prompts, earlier: dict[str, str] | None,
                       model, tok, task, cfg) -> list[str]:
    """Greedy answers for every prompt not answered `earlier`, appended chunk by chunk to
    FILE.partial.jsonl (after a first line with the settings' fingerprint) so that an
    interrupted evaluation resumes where it stopped."""
    from tqdm.auto import tqdm

    from rait.backends import get_backend

    backend = get_backend(cfg.backend)
    answers = dict(earlier or {})
    todo = [i for i, item in enumerate(items) if item["id"] not in answers]
    max_new = decoding(task, cfg)["max_new_tokens"]
    chunk = max(1, cfg.batch_size) * 4
    with io.JsonlAppender(output.partials[0]) as sink, tqdm(total=len(items), initial=len(items) - len(todo),
                                                            desc="eval", unit="q", file=sys.stderr) as bar:
        if earlier is None:
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


# --------------------------------------------------------------------------- scoring

def classify_items(items, prompts, answers, cfg: EvalConfig) -> list[dict]:
    """One row per question with its outcome (refusal is checked first by the scorers)."""
    from rait.backends import answer_text
    from rait.scoring import classify_mcqa, classify_oeqa

    rows = []
    for item, prompt, raw in zip(items, prompts, answers):
        answer = answer_text(raw)  # generation stops at the end of the line, but a backend may return more
        row = {"id": item["id"], "prompt": prompt, "answer": answer}
        if item["task"] == "oeqa":
            row["outcome"] = classify_oeqa(answer, item["answers"], strategy=cfg.match,
                                           refusal_phrases=cfg.refusal_phrases, negation_guard=cfg.negation_guard)
            row["aliases"] = item["answers"]
        else:
            row["outcome"] = classify_mcqa(answer, item["choices"], item["target"],
                                           refusal_phrases=cfg.refusal_phrases)
            row["target"] = item["target"]
            row["subject"] = item.get("subject")
        rows.append(row)
    return rows


AVERAGES = {  # recorded in every result, so that no table leaves its averaging unsaid
    "headline": "micro: every question counts once",
    "by_group": "micro within each group: every question of the group counts once",
    "by_group_macro": "unweighted mean over the group's subjects (each subject counts once)",
    "macro": "unweighted mean over all subjects (each subject counts once), as the paper reports MMLU",
}


def outcome_metrics(rows: list[dict], unparsed_as: str) -> dict:
    """Micro rates overall, per subject and per MMLU group; the macro average over subjects,
    overall and within each group."""
    from rait.metrics import macro_average, rates

    result = rates([r["outcome"] for r in rows], unparsed_as=unparsed_as)
    by_subject = breakdown(rows, lambda r: r.get("subject"), unparsed_as)
    by_group = breakdown(rows, lambda r: group_of(r.get("subject")), unparsed_as)
    by_group = {g: by_group[g] for g in GROUPS if g in by_group}
    macro, by_group_macro = None, {}
    if len(by_subject) > 1:
        macro = {"over": "subjects", **macro_average(by_subject)}
        for group in by_group:
            subjects = {s: cell for s, cell in by_subject.items() if group_of(s) == group}
            by_group_macro[group] = {"over": "subjects", **macro_average(subjects)}
    return {**result, "by_subject": by_subject, "by_group": by_group, "by_group_macro": by_group_macro,
            "macro": macro, "averages": AVERAGES}


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


# --------------------------------------------------------------------------- the baseline

def load_baseline(path, items: list[dict], items_fp: str, cfg: EvalConfig) -> dict:
    """The baseline result, checked completely before anything runs, so that a bad one cannot
    fail an evaluation at its end: a rait eval result with finite Pc/Pw (and breakdowns) in
    [0, 1], on the same test set, with some wrong answer, and a readable items file (a paired
    comparison) or else outcome counts (an unpaired one).

    Returns {path, result, items_file, outcomes (id -> outcome, None when unpaired), rates (the
    Pc/Pw THS is computed against), unpaired (the outcome list an unpaired bootstrap resamples)}.
    """
    from rait.metrics import rates

    path = Path(path)
    if not path.exists():
        raise RaitError(f"{path}: baseline result not found (run `rait eval` with the initial model first)")
    result = check_eval_result(io.read_json(path), path)
    for subject, cell in check_object(result.get("by_subject") or {}, path, "by_subject").items():
        check_rates_cell(cell, path, f"by_subject.{subject}")
    file = items_file_of(path, result)
    outcomes = result_outcomes(path, result)
    check_same_test_set(path, result, outcomes, items, items_fp)
    unpaired = []
    if outcomes is None:
        unpaired = unpaired_outcomes(path, result, len(items), cfg)
        # from its counts where it has them, so THS and its interval use this run's unparsed rule
        base_rates = (rates(unpaired, unparsed_as=cfg.unparsed_as) if unpaired
                      else {"Pc": result["Pc"], "Pw": result["Pw"]})
    else:  # the same unparsed rule on both sides
        base_rates = rates([outcomes[item["id"]] for item in items], unparsed_as=cfg.unparsed_as)
    if base_rates["Pw"] < LEAST_PW:
        raise RaitError(f"{path}: the baseline never answered wrongly (Pw = 0), so THS is undefined "
                        "against it; use the initial model with the basic prompt as baseline")
    return {"path": str(path), "result": result, "items_file": str(file), "outcomes": outcomes,
            "rates": {"Pc": base_rates["Pc"], "Pw": base_rates["Pw"]}, "unpaired": unpaired}


def baseline_outcomes(path, result: dict) -> dict | None:
    """id -> outcome from an eval result's items file, or None when that file is absent."""
    return result_outcomes(Path(path), result)


def check_same_test_set(path: Path, result: dict, outcomes: dict | None, items: list[dict],
                        items_fp: str) -> None:
    """The baseline was evaluated on these very questions: its items' ids, else its recorded
    fingerprint, else at least its size."""
    info = result.get("dataset_info")
    if info is not None and not isinstance(info, dict):
        raise input_error(path, f"must be an object, got {type(info).__name__}", field="dataset_info")
    theirs = (info or {}).get("items_fingerprint")
    ids = {item["id"] for item in items}
    if outcomes is not None and set(outcomes) != ids:
        missing, extra = len(ids - set(outcomes)), len(set(outcomes) - ids)
        raise RaitError(f"{path}: baseline was evaluated on a different test set ({missing} of these "
                        f"questions missing from it, {extra} not in this test set)")
    if theirs is not None and theirs != items_fp:
        raise RaitError(f"{path}: baseline was evaluated on a different test set (fingerprint "
                        f"{theirs} != {items_fp}): evaluate both on the same data")
    if theirs is None and outcomes is None and result.get("n") != len(items):
        raise RaitError(f"{path}: baseline has n={result.get('n')!r} but this test set has {len(items)}")


def unpaired_outcomes(path: Path, result: dict, n: int, cfg: EvalConfig) -> list[str]:
    """The baseline's outcomes rebuilt from its counts (no items file: the bootstrap resamples
    both sides independently); empty when it records no counts. Counts are whole numbers adding
    up to the test set's size, with a wrong answer among them when a bootstrap is asked for."""
    counts = {}
    for name in OUTCOMES:
        value = result.get(name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise input_error(path, f"must be a whole number >= 0, got {value!r}", field=name)
        counts[name] = value or 0
    total = sum(counts.values())
    if total == 0:
        return []
    if total != n:
        raise RaitError(f"{path}: its outcome counts (correct, wrong, refused, unparsed) add up to {total} "
                        f"but this test set has {n} questions")
    wrong = counts["wrong"] + (counts["unparsed"] if cfg.unparsed_as == "wrong" else 0)
    if cfg.bootstrap > 0 and wrong == 0:
        raise input_error(path, f"is 0 (and unparsed counts as {cfg.unparsed_as}), but Pw = {result['Pw']}: "
                                "the counts contradict Pw; fix the file or use --bootstrap 0", field="wrong")
    return [outcome for outcome in OUTCOMES for _ in range(counts[outcome])]


def is_rate(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and 0 <= value <= 1


# --------------------------------------------------------------------------- THS

def attach_baseline(result: dict, rows: list[dict], cfg: EvalConfig, baseline: dict) -> dict:
    """THS, its interval, over-conservativeness and prudence against the (checked) baseline."""
    from rait.metrics import bootstrap_ths_ci, ths

    base, base_rates = baseline["result"], baseline["rates"]
    mine = [r["outcome"] for r in rows]
    paired = baseline["outcomes"] is not None
    theirs = [baseline["outcomes"][r["id"]] for r in rows] if paired else baseline["unpaired"]
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
        # the baseline's breakdowns again from its outcomes, under this run's unparsed rule
        base_rows = [{**r, "outcome": baseline["outcomes"][r["id"]]} for r in rows]
        result = subject_ths(result, outcome_metrics(base_rows, cfg.unparsed_as), ths)
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
    """THS per subject / group / macro against the baseline's matching breakdown (none where the
    baseline has no wrong answer there)."""
    def with_ths(mine: dict | None, theirs: dict | None) -> dict | None:
        if not mine or not theirs or theirs.get("Pw") is None or theirs["Pw"] < LEAST_PW:
            return mine
        return {**mine, "THS": ths(mine["Pc"], mine["Pw"], theirs["Pc"], theirs["Pw"])}

    for key in ("by_subject", "by_group", "by_group_macro"):
        result[key] = {name: with_ths(row, (base.get(key) or {}).get(name))
                       for name, row in (result.get(key) or {}).items()}
    result["macro"] = with_ths(result.get("macro"), base.get("macro"))
    return result


# --------------------------------------------------------------------------- summary

def print_summary(result: dict) -> None:
    ci = result.get("THS_ci")
    ths_text = percent(result.get("THS")) + (f" [{percent(ci[0])}, {percent(ci[1])}]" if ci else "")
    unparsed = result["unparsed"] / result["n"] if result["n"] else 0.0
    lines = [
        f"{result['model']} on {result['dataset']} (prompt {result['prompt']}, n={result['n']})",
        f"  {'Pc':>6} {'Pw':>6} {'Pr':>6} {'unparsed':>9}  THS (95% CI), percent",
        f"  {percent(result['Pc']):>6} {percent(result['Pw']):>6} {percent(result['Pr']):>6} "
        f"{percent(unparsed):>9}  {ths_text}",
    ]
    if result.get("baseline"):
        b = result["baseline"]
        lines.append(f"  baseline: {b['model']} (Pc {percent(b['Pc'])}, Pw {percent(b['Pw'])}) from {b['path']}")
    for key, label in (("over_conservative", "refused but baseline correct"),
                       ("prudence", "refused and baseline wrong")):
        part = result.get(key)
        if part:
            lines.append(f"  {label}: {part['count']} ({percent(part['share'])}% of those)")
    for group, row in (result.get("by_group") or {}).items():
        lines.append(f"  {group:<16} n={row['n']:<5} Pc {percent(row['Pc'])} Pw {percent(row['Pw'])}"
                     + (f" THS {percent(row['THS'])}" if row.get("THS") is not None else ""))
    print("\n".join(lines))
