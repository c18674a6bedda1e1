"""`rait probe DATASET --out FILE`: the knowledge state of a model on a pool (CRaFT stage 1).

OEQA (Zhu et al. 2025, sec. 3.1): a k-shot prompt (base models) or the chat template with the
paper's basic instruction, zero-shot (instruct models, `template: chat`); `samples` answers
sampled per question;
correctness = share of correct samples, certainty = mean pairwise cosine similarity of their
sentence embeddings. MCQA: the same prompts, one next-token distribution over the option letters;
correctness = p(gold), certainty = 1 - entropy / log(k).

Output: the knowledge table (one row per item, in item order) and `FILE.meta.json`, written last.
Work is appended in fixed chunks of items; an interrupted run resumes from the last complete
chunk, and `.FILE.progress.json` holds the settings fingerprint so a changed setting is refused
instead of mixed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

from rait import config, io
from rait.errors import RaitError
from rait.models import ModelOptions, model_option_problems

ROWS_PER_WRITE = 32  # items per resumable chunk: rows are appended when a chunk is finished
# settings that do not change a single number of the table (so resuming with them changed is fine)
NOT_IN_FINGERPRINT = {"batch_size", "overwrite", "device"}
SAMPLING_ONLY = {"samples", "temperature", "top_p", "max_new_tokens", "embedder", "match", "refusal_phrases"}


@dataclasses.dataclass
class ProbeConfig(ModelOptions):
    """Settings of `rait probe` (YAML section `probe`); the model options come from ModelOptions."""

    backend: str = config.option("hf", "generation backend", choices=["hf", "vllm"])
    vllm: dict = config.option(default_factory=dict, flag=False,
                               help="vLLM engine options (see rait.backends.vllm.VllmOptions)")
    batch_size: int = config.option(8, "prompts per forward pass")
    seed: int = config.option(0, "sampling seed (each item draws from its own generator)")
    samples: int = config.option(10, "sampled answers per OEQA question")
    template: str = config.option("plain", "how the model is asked: plain k-shot text (base models) or "
                                  "its chat template with the instruction (instruct models)",
                                  choices=["plain", "chat"])
    shots: int | None = config.option(None, "few-shot examples (default: 3 OEQA, 5 MCQA with plain "
                                            "prompts, 0 in chat; 0 allowed)")
    shot_source: str | None = config.option(None, "dataset spec of the few-shot examples "
                                                   "(default: the dataset's own shot split or built-in shots)")
    shot_split: str | None = config.option(None, "split of --shot-source")
    temperature: float = config.option(1.0, "OEQA sampling temperature (0 = greedy)")
    top_p: float = config.option(1.0, "OEQA nucleus sampling mass")
    max_new_tokens: int = config.option(32, "OEQA answer length limit (answers end at the first newline)")
    match: str = config.option("contains", "how a sampled answer matches a gold alias", choices=["contains", "exact"])
    embedder: str | None = config.option(None, "sentence embedder for OEQA certainty (default all-MiniLM-L6-v2)")
    refusal_phrases: list[str] | None = config.option(None, "phrases that make an answer a refusal "
                                                            "(comma-separated; default: the built-in list)")
    overwrite: bool = config.option(False, "replace an existing table made with other settings")


def check_config(cfg: ProbeConfig) -> None:
    problems = model_option_problems(cfg, "probe")
    if cfg.batch_size < 1:
        problems.append("batch_size must be >= 1")
    if cfg.samples < 1:
        problems.append("samples must be >= 1")
    if cfg.shots is not None and cfg.shots < 0:
        problems.append("shots must be >= 0")
    if cfg.temperature < 0:
        problems.append("temperature must be >= 0")
    if not 0 < cfg.top_p <= 1:
        problems.append("top_p must be in (0, 1]")
    if cfg.max_new_tokens < 1:
        problems.append("max_new_tokens must be >= 1")
    if problems:
        raise RaitError("probe: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# shots


def pool_task(items: list[dict]) -> str:
    if not items:
        raise RaitError("probe: the pool is empty")
    tasks = {item["task"] for item in items}
    if len(tasks) > 1:
        raise RaitError(f"probe: the pool mixes tasks ({', '.join(sorted(tasks))}); probe them separately")
    return tasks.pop()


def load_shot_items(cfg: ProbeConfig) -> list[dict] | None:
    if cfg.shot_source is None:
        return None
    from rait.data.loaders import load_dataset

    return load_dataset(cfg.shot_source, split=cfg.shot_split).items


def disjoint(shots: list[dict], items: list[dict]) -> list[dict]:
    """Shots that are not pool questions (by id or by question text)."""
    ids = {item["id"] for item in items}
    questions = {item["question"].strip().lower() for item in items}
    return [s for s in shots if s["id"] not in ids and s["question"].strip().lower() not in questions]


def plan_shots(items: list[dict], task: str, k: int, source: list[dict] | None) -> tuple[dict, dict]:
    """({subject or "": shots}, record for the meta).

    OEQA: the first k shots of the source (built-in shots without one), disjoint from the pool.
    MCQA: the first k of the item's subject from the source; subjects with too few fall back to
    the built-in shots (recorded)."""
    from rait.prompts import BUILTIN_MCQA_SHOTS, BUILTIN_OEQA_SHOTS

    builtin = BUILTIN_OEQA_SHOTS if task == "oeqa" else BUILTIN_MCQA_SHOTS
    pool_free = disjoint(source if source is not None else builtin, items)
    if task == "oeqa":
        if len(pool_free) < k:
            where = "the shot source" if source is not None else "the built-in shots"
            raise RaitError(f"probe: {k} shots asked for, but {where} has only {len(pool_free)} "
                            "(outside the pool); lower --shots or give --shot-source")
        chosen = pool_free[:k]
        return {"": chosen}, {"source": "given" if source is not None else "built-in",
                              "ids": [s["id"] for s in chosen]}
    plan, fallback = {}, []
    builtin_free = disjoint(builtin, items)
    for subject in dict.fromkeys(item["subject"] for item in items):
        same = [s for s in pool_free if s.get("subject") == subject][:k] if source is not None else []
        if len(same) < k:
            if len(builtin_free) < k:
                raise RaitError(f"probe: {k} shots asked for subject {subject!r}, but neither the shot "
                                f"source nor the built-in shots have that many; lower --shots")
            same = builtin_free[:k]
            fallback.append(subject)
        plan[subject] = same
    return plan, {"source": "given" if source is not None else "built-in",
                  "ids": {subject: [s["id"] for s in shots] for subject, shots in plan.items()},
                  "fallback_to_builtin": fallback}


def shots_for(item: dict, plan: dict) -> list[dict]:
    return plan[""] if item["task"] == "oeqa" else plan[item["subject"]]


# ---------------------------------------------------------------------------------------------
# the table


def item_seed(seed: int, item_id: str) -> int:
    """Each item's own sampling seed from (seed, id): results do not depend on batching or resuming."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little") >> 1


def settings_fingerprint(cfg: ProbeConfig, task: str, items: list[dict], shot_record: dict,
                         dataset_meta: dict | None) -> str:
    skip = NOT_IN_FINGERPRINT | (SAMPLING_ONLY if task == "mcqa" else set())
    settings = {k: v for k, v in config.to_dict(cfg).items() if k not in skip}
    return io.fingerprint({"config": settings, "items": io.fingerprint(items), "shots": shot_record,
                           "dataset": (dataset_meta or {}).get("fingerprint")})


def probe_chunk(chunk: list[dict], plan: dict, cfg: ProbeConfig, backend, loaded, embedder, progress) -> list[dict]:
    from rait.prompts import fewshot_prefix, untuned_prompt

    model, tokenizer, _ = loaded
    prompts = [untuned_prompt(item, shots_for(item, plan), "basic", cfg.template) for item in chunk]
    if chunk[0]["task"] == "mcqa":
        prefixes = ([fewshot_prefix(item, shots_for(item, plan)) for item in chunk]
                    if cfg.template == "plain" else [""] * len(chunk))
        probs = backend.option_probs(model, tokenizer, prompts, [list(item["choices"]) for item in chunk],
                                     batch_size=cfg.batch_size, progress=progress, prefixes=prefixes)
        return [mcqa_row(item, p) for item, p in zip(chunk, probs)]
    samples = backend.sample(model, tokenizer, prompts, n=cfg.samples, temperature=cfg.temperature,
                             top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                             seeds=[item_seed(cfg.seed, item["id"]) for item in chunk],
                             batch_size=cfg.batch_size, progress=progress)
    from rait.knowledge.certainty import answer_correctness, sample_certainties

    certainties = sample_certainties(embedder, samples)  # one batched embedding per chunk
    return [{**item, "task": "oeqa",
             "correctness": round(answer_correctness(s, item["answers"], cfg.match, cfg.refusal_phrases), 6),
             "certainty": round(c, 6), "samples": s}
            for item, s, c in zip(chunk, samples, certainties)]


def mcqa_row(item: dict, probs: dict) -> dict:
    from rait.knowledge.certainty import entropy, entropy_certainty

    values = list(probs.values())
    return {**item, "task": "mcqa", "correctness": round(probs[item["target"]], 6),
            "certainty": round(entropy_certainty(values), 6),
            "probs": {label: round(p, 6) for label, p in probs.items()}, "entropy": round(entropy(values), 6)}


# ---------------------------------------------------------------------------------------------
# resumption


def progress_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.progress.json")


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def resume_point(out: Path, fp: str, items: list[dict], overwrite: bool) -> int | None:
    """Rows already done (a whole number of chunks), or None when the table is complete."""
    meta, state = meta_path(out), progress_path(out)
    previous = None
    if meta.exists():
        previous = io.read_json(meta).get("fingerprint")
    elif state.exists():
        previous = io.read_json(state).get("fingerprint")
    elif out.exists() and not overwrite:
        raise RaitError(f"{out}: exists but was not written by `rait probe` (no progress or meta file); "
                        "use --overwrite or another --out")
    if previous != fp:
        if previous is not None and not overwrite:
            raise RaitError(f"{out}: was made with other settings, model, shots or dataset; use --overwrite "
                            "to replace it or choose another --out")
        return start_fresh(out, fp)
    if meta.exists() and len(io.recover_jsonl(out)) == len(items):
        return None
    return recover_rows(out, items)


def start_fresh(out: Path, fp: str) -> int:
    for path in (out, meta_path(out)):
        if path.exists():
            path.unlink()
    io.write_json_atomic(progress_path(out), {"fingerprint": fp})
    return 0


def recover_rows(out: Path, items: list[dict]) -> int:
    """Keep the complete chunks of an interrupted table (cutting a torn line and a partial chunk)."""
    rows = io.recover_jsonl(out)
    for line, (row, item) in enumerate(zip(rows, items), start=1):
        if row.get("id") != item["id"]:
            raise RaitError(f"{out}, line {line}: row id {row.get('id')!r} is not the pool's item "
                            f"{item['id']!r}; use --overwrite or another --out")
    keep = min(len(rows), len(items))
    keep = keep if keep == len(items) else keep - keep % ROWS_PER_WRITE
    if keep != len(rows):
        io.write_jsonl_atomic(out, rows[:keep])
    if meta_path(out).exists():
        meta_path(out).unlink()
    return keep


# ---------------------------------------------------------------------------------------------
# the stage


def probe_items(items: list[dict], out: str | Path, cfg: ProbeConfig, *, shots: list[dict] | None = None,
                dataset_meta: dict | None = None, loaded=None) -> list[dict]:
    """Probe `items`, write the knowledge table `out` + `out.meta.json`; return the rows in item order.

    `shots` replaces the shot source; `loaded` = (model, tokenizer, info) already in memory."""
    from rait.backends import get_backend, release
    from rait.prompts import default_shots

    out = Path(out)
    check_config(cfg)
    task = pool_task(items)
    k = cfg.shots if cfg.shots is not None else default_shots(task, cfg.template)
    plan, shot_record = plan_shots(items, task, k, shots if shots is not None else load_shot_items(cfg))
    fp = settings_fingerprint(cfg, task, items, shot_record, dataset_meta)
    backend = get_backend(cfg.backend)
    done = resume_point(out, fp, items, cfg.overwrite)
    if done is None:
        print(f"rait probe: {out} is already complete ({len(items)} rows); nothing to do", file=sys.stderr)
        return io.recover_jsonl(out)
    print_plan(cfg, task, len(items), done, k, shot_record, dataset_meta, out)
    started = time.perf_counter()
    own = loaded is None
    loaded = loaded or load_model_for(cfg)
    try:
        embedder = None
        if task == "oeqa":
            from rait.knowledge.certainty import load_embedder

            embedder = load_embedder(cfg.embedder)
        run_chunks(items, out, done, plan, cfg, backend, loaded, embedder)
    finally:
        if own:
            release(loaded)
    rows = io.recover_jsonl(out)
    elapsed = time.perf_counter() - started
    summary = summarize(rows, elapsed, len(items) - done)
    io.write_json_atomic(meta_path(out), make_meta(cfg, task, loaded[2], shot_record, dataset_meta, fp,
                                                   summary, elapsed, len(items), done))
    progress_path(out).unlink(missing_ok=True)
    print(format_summary(summary, out))
    return rows


def load_model_for(cfg: ProbeConfig):
    from rait.backends import load_for

    return load_for(cfg)


def run_chunks(items, out, done, plan, cfg, backend, loaded, embedder) -> None:
    from tqdm.auto import tqdm

    with io.JsonlAppender(out) as sink, tqdm(total=len(items), initial=done, unit="q",
                                             desc="probe", file=sys.stderr) as bar:
        for start in range(done, len(items), ROWS_PER_WRITE):
            chunk = items[start:start + ROWS_PER_WRITE]
            sink.write(probe_chunk(chunk, plan, cfg, backend, loaded, embedder, bar.update))


def print_plan(cfg, task, n, done, k, shot_record, dataset_meta, out) -> None:
    name = (dataset_meta or {}).get("name", "items")
    decoding = (f"{cfg.samples} samples, temperature {cfg.temperature:g}, top_p {cfg.top_p:g}, "
                f"max {cfg.max_new_tokens} new tokens, stop at the first newline, seed {cfg.seed}"
                if task == "oeqa" else "one forward per question, option-letter probabilities")
    print(f"rait probe: {task.upper()} knowledge state of model {cfg.model or 'default'} (dtype {cfg.dtype}, "
          f"backend {cfg.backend}) on {name}: {n} items" + (f", resuming after {done}" if done else ""),
          file=sys.stderr)
    how = (f"{k}-shot plain prompts" if cfg.template == "plain"
           else f"chat template, {'zero-shot' if k == 0 else f'{k} example turns'}")
    print(f"  {how} ({shot_record['source']} shots); {decoding}; -> {out}", file=sys.stderr)


def summarize(rows: list[dict], elapsed: float, computed: int) -> dict:
    n = len(rows)
    cor = [r["correctness"] for r in rows]
    cer = [r["certainty"] for r in rows]
    return {"n": n, "mean_correctness": round(sum(cor) / n, 4), "mean_certainty": round(sum(cer) / n, 4),
            "share_correctness_ge_0.5": round(sum(c >= 0.5 for c in cor) / n, 4),
            "histogram": histogram(cor, cer), **empty_sample_counts(rows), "seconds": round(elapsed, 1), "computed": computed,
            "items_per_second": round(computed / elapsed, 3) if elapsed > 0 else None}


def empty_sample_counts(rows: list[dict]) -> dict:
    """OEQA: how many sampled answers are empty, and how many items have only empty ones (their
    certainty is 1.0 by the consistency measure, though the model said nothing)."""
    groups = [r["samples"] for r in rows if r.get("task") == "oeqa" and "samples" in r]
    if not groups:
        return {}
    return {"empty_samples": sum(1 for g in groups for s in g if not s.strip()),
            "samples_total": sum(len(g) for g in groups),
            "items_all_empty": sum(1 for g in groups if g and all(not s.strip() for s in g))}


HIST_BINS = 5


def histogram(correctness: list[float], certainty: list[float]) -> list[list[int]]:
    """Counts [correctness bin][certainty bin], 5 equal bins on [0, 1] each (1.0 in the top bin)."""
    grid = [[0] * HIST_BINS for _ in range(HIST_BINS)]
    for c, e in zip(correctness, certainty):
        grid[min(int(c * HIST_BINS), HIST_BINS - 1)][min(int(e * HIST_BINS), HIST_BINS - 1)] += 1
    return grid


def format_summary(summary: dict, out: Path) -> str:
    lines = [f"rait probe: wrote {out} ({summary['n']} rows) + {meta_path(out).name}",
             f"  mean correctness {summary['mean_correctness']:.3f}   mean certainty {summary['mean_certainty']:.3f}"
             f"   correctness >= 0.5: {100 * summary['share_correctness_ge_0.5']:.1f} %",
             "  items by correctness (rows) x certainty (columns):",
             "  cor \\ cer " + "".join(f"{f'{i / HIST_BINS:.1f}-{(i + 1) / HIST_BINS:.1f}':>9}" for i in range(HIST_BINS))]
    for i in reversed(range(HIST_BINS)):
        label = f"{i / HIST_BINS:.1f}-{(i + 1) / HIST_BINS:.1f}"
        lines.append(f"  {label:>9} " + "".join(f"{count:>9}" for count in summary["histogram"][i]))
    if summary.get("samples_total"):
        lines.append(f"  empty answers: {summary['empty_samples']} of {summary['samples_total']} samples; "
                     f"{summary['items_all_empty']} items answered nothing in every sample")
    rate = summary["items_per_second"]
    lines.append(f"  time {summary['seconds']:.1f} s for {summary['computed']} items"
                 + (f" ({rate:.2f} items/s)" if rate else ""))
    return "\n".join(lines)


def make_meta(cfg, task, info, shot_record, dataset_meta, fp, summary, elapsed, n, done) -> dict:
    decoding = ({"samples": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p,
                 "max_new_tokens": cfg.max_new_tokens,
                 "stop": "first newline after some text, eos or end of turn", "seed": cfg.seed,
                 "per_item_seed": "sha256(seed:id)"}
                if task == "oeqa" else {"method": "next-token probabilities of the option letters, renormalised"})
    return {"stage": "probe", "task": task, "model": info.get("model"), "model_path": info.get("path"),
            "dtype": info.get("dtype"), "backend": cfg.backend,
            "backend_details": info.get("backend_details"), "template": cfg.template, "decoding": decoding, "seed": cfg.seed,
            "shots": shot_record, "dataset": dataset_meta or {}, "items": n, "resumed_after": done,
            "config": config.to_dict(cfg), "fingerprint": fp, "versions": io.package_versions(("torch", "transformers", "rait")),
            "timing": {"seconds": round(elapsed, 2)}, "summary": summary}


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rait.backends import add_vllm_arguments
    from rait.data.split import DataOptions

    parser.add_argument("dataset", metavar="DATASET",
                        help="built-in name (demo-oeqa, demo-mcqa), local file or folder, or hf:REPO[:CONFIG]")
    parser.add_argument("--out", required=True, help="the knowledge table to write (.jsonl)")
    config.add_arguments(parser, DataOptions)
    config.add_arguments(parser, ProbeConfig)
    add_vllm_arguments(parser)
    parser.add_argument("--shard", metavar="I/N", help="probe only items I, I+N, I+2N, ... of the dataset "
                        "into FILE.shard-I-of-N.jsonl (run the N shards in parallel processes or machines)")
    parser.add_argument("--merge-shards", type=int, metavar="N", help="merge the N finished shards of FILE "
                        "into FILE (checks settings and coverage)")


# ---------------------------------------------------------------------------------------------
# sharding: each item's numbers depend only on the item and the seed, so a merged sharded table
# holds the same rows as a table probed in one process


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise RaitError(f"--shard: expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise RaitError(f"--shard: need 0 <= I < N, got {text!r}")
    return index, count


def shard_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


def shard_items(items: list[dict], index: int, count: int) -> list[dict]:
    return items[index::count]


def merge_shards(items: list[dict], out: Path, count: int) -> list[dict]:
    """Join the finished shards of `out` in dataset order; refuse missing, unfinished, mixed or
    overlapping shards."""
    by_id, metas = {}, []
    for index in range(count):
        path = shard_path(out, index, count)
        if not meta_path(path).exists():
            raise RaitError(f"{path}: shard {index}/{count} is missing or unfinished "
                            f"(run rait probe ... --shard {index}/{count})")
        meta = io.read_json(meta_path(path))
        metas.append(meta)
        settings = {k: v for k, v in meta.get("config", {}).items() if k != "overwrite"}
        first = {k: v for k, v in metas[0].get("config", {}).items() if k != "overwrite"}
        if settings != first:
            raise RaitError(f"{path}: probed with other settings than shard 0; re-run it with the same ones")
        for line, row in io.read_jsonl(path):
            if row["id"] in by_id:
                raise io.input_error(path, f"item {row['id']!r} is in two shards", line=line, field="id")
            by_id[row["id"]] = row
    missing = [item["id"] for item in items if item["id"] not in by_id]
    if missing or len(by_id) != len(items):
        raise RaitError(f"{out}: the {count} shards do not cover this dataset exactly "
                        f"({len(missing)} items missing, {len(by_id)} rows for {len(items)} items); "
                        "merge with the same dataset options the shards were probed with")
    rows = [by_id[item["id"]] for item in items]
    elapsed = sum(meta["timing"]["seconds"] for meta in metas)  # total compute over the shards
    io.write_jsonl_atomic(out, rows)
    dataset = {k: v for k, v in metas[0]["dataset"].items() if k != "shard"}
    merged = {**metas[0], "dataset": dataset, "shards": count, "items": len(rows),
              "timing": {"seconds": round(elapsed, 2)}, "summary": summarize(rows, elapsed, len(rows))}
    io.write_json_atomic(meta_path(out), merged)
    print(format_summary(merged["summary"], out))
    return rows


def run(args: argparse.Namespace) -> int:
    from rait.backends import vllm_section
    from rait.prompts import wants_shots
    from rait.data.loaders import default_shot_source
    from rait.data.split import DataOptions, load_with_options

    opts = config.build(DataOptions, None, args, where="rait probe")
    cfg = config.build(ProbeConfig, None, args, where="rait probe")
    cfg = dataclasses.replace(cfg, vllm=vllm_section(args, cfg.vllm, where="rait probe"))
    check_config(cfg)
    if cfg.backend != "hf":
        from rait.backends import get_backend

        get_backend(cfg.backend)  # fail before loading any data or model
    dataset = load_with_options(args.dataset, opts)
    if cfg.shot_source is None and wants_shots(cfg.shots, cfg.template):
        default = default_shot_source(args.dataset, opts.split)
        if default is not None:  # recorded in the meta, so `rait rehearse` repeats the same shots
            cfg = dataclasses.replace(cfg, shot_source=default[0], shot_split=default[1])
    meta = {"name": dataset.name, "source": dataset.source, "spec": args.dataset,
            "fingerprint": dataset.fingerprint, "n": len(dataset.items), "notes": dataset.notes}
    out = Path(args.out)
    if args.merge_shards:
        merge_shards(dataset.items, out, args.merge_shards)
        return 0
    items = dataset.items
    if args.shard:
        index, count = parse_shard(args.shard)
        items, out = shard_items(items, index, count), shard_path(out, index, count)
        meta["shard"] = f"{index}/{count}"
    probe_items(items, out, cfg, dataset_meta=meta)
    return 0
