"""`rait probe DATASET --out FILE`: the knowledge state of a model on a pool (CRaFT stage 1).

OEQA (Zhu et al. 2025, sec. 3.1): a k-shot prompt (base models) or the chat template with the
paper's basic instruction, zero-shot (instruct models, `template: chat`); `samples` answers
sampled per question;
correctness = share of correct samples, certainty = mean pairwise cosine similarity of their
sentence embeddings. MCQA: the same prompts, one next-token distribution over the option letters;
correctness = p(gold) renormalised over the letters; certainty (--mcqa-certainty) = 1 - H / log k
of that distribution (`normalised`), or exp(-H_raw) of the raw letter probabilities
(`raw-entropy`: the reference code's ranking). Every MCQA row keeps the raw letter probabilities
(`option_mass`, their sum `letter_mass`, their entropy `entropy_raw`), so either ranking can be
rebuilt from the table; a prompt that gives the letters no mass is flagged (`no_letter_mass`).

Batch invariance: with the hf backend each prompt runs in forward passes of its own, so a row
depends only on its item and the seed, never on --limit, --shard or --batch-size.

    probe(cfg, items, out): check the config and the output paths -> plan the shots and the settings
    fingerprint -> resume, skip or start the table -> probe the remaining chunks -> meta last

Output (rait.stage.sidecar_output): the knowledge table (one row per item, in item order) and
`FILE.meta.json`, written last.
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
from rait.backends import get_backend, load_for, release
from rait.errors import RaitError
from rait.options import Generation, Overwrite
from rait.prompts import plan_shots, shots_for, warn_shot_fallback
from rait.scoring import SCORING_VERSION, STRATEGIES
from rait.stage import Output, existing_foreign, meta_path, remove, result_output, sidecar_output

ROWS_PER_WRITE = 32  # items per resumable chunk: rows are appended when a chunk is finished
# settings that do not change a single number of the table (so resuming with them changed is fine)
NOT_IN_FINGERPRINT = {"batch_size", "overwrite", "device"}
SAMPLING_ONLY = {"samples", "temperature", "top_p", "max_new_tokens", "embedder", "match", "refusal_phrases",
                 "negation_guard"}
MCQA_ONLY = {"mcqa_certainty"}
# what rows hold and how they are computed; a new value refuses to resume (or mix into) a table of
# older rows. 2: each prompt in its own forward passes (batch invariance), MCQA raw letter mass.
ROW_FORMAT = 2
MCQA_CERTAINTY = {
    "normalised": "1 - H / log k of the option distribution renormalised over the k letters",
    "raw-entropy": "exp(-H_raw), H_raw = -sum p log p of the raw (un-renormalised) letter probabilities: "
                   "the reference's order (lowest raw entropy = most certain)",
}


@dataclasses.dataclass
class ProbeConfig(Generation, Overwrite):
    """Settings of `rait probe` (YAML section `probe`); model and generation options come from
    rait.options.Generation."""

    samples: int = config.option(10, "sampled answers per OEQA question", at_least=1)
    shots: int | None = config.option(None, "few-shot examples (default: 3 OEQA, 5 MCQA with plain "
                                            "prompts, 0 in chat; 0 allowed)", at_least=0)
    shot_source: str | None = config.option(None, "dataset spec of the few-shot examples "
                                                   "(default: the dataset's own shot split or built-in shots)")
    shot_split: str | None = config.option(None, "split of --shot-source")
    temperature: float = config.option(1.0, "OEQA sampling temperature (0 = greedy)", at_least=0)
    top_p: float = config.option(1.0, "OEQA nucleus sampling mass", above=0, at_most=1)
    max_new_tokens: int = config.option(32, "OEQA answer length limit (answers end at the first newline)",
                                        at_least=1)
    match: str = config.option("contains", "how a sampled answer matches a gold alias: contains, exact, or squad "
                                           "(SQuAD's normalised exact match)", choices=list(STRATEGIES))
    negation_guard: bool = config.option(True, "contains match: an alias right after a negator ('not Mark Twain') "
                                               "does not count as the answer")
    embedder: str | None = config.option(None, "sentence embedder for OEQA certainty (default all-MiniLM-L6-v2)")
    refusal_phrases: list[str] | None = config.option(None, "phrases that make an answer a refusal "
                                                            "(comma-separated; default: the built-in list)")
    mcqa_certainty: str = config.option("normalised", "MCQA certainty: normalised = 1 - H/log k of the "
                                        "renormalised option distribution; raw-entropy = exp(-H) of the raw "
                                        "letter probabilities (the reference code's ranking)",
                                        choices=list(MCQA_CERTAINTY))


# ---------------------------------------------------------------------------------------------
# shots


def pool_task(items: list[dict]) -> str:
    if not items:
        raise RaitError("probe: the pool is empty")
    tasks = {item["task"] for item in items}
    if len(tasks) > 1:
        raise RaitError(f"probe: the pool mixes tasks ({', '.join(sorted(tasks))}); probe them separately")
    return tasks.pop()


def load_shot_items(cfg: ProbeConfig, task: str) -> list[dict] | None:
    """The items of --shot-source (None without one); they must be of the pool's task."""
    if cfg.shot_source is None:
        return None
    from rait.data.loaders import load_dataset

    shots = load_dataset(cfg.shot_source, split=cfg.shot_split).items
    other = next((shot for shot in shots if shot["task"] != task), None)
    if other is not None:
        raise RaitError(f"{cfg.shot_source}: holds {other['task'].upper()} items (id {other['id']!r}) but the pool "
                        f"is {task.upper()}; give a --shot-source of {task.upper()} items")
    return shots


# ---------------------------------------------------------------------------------------------
# the table


def item_seed(seed: int, item_id: str) -> int:
    """Each item's own sampling seed from (seed, id): results do not depend on batching or resuming."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little") >> 1


def settings_fingerprint(cfg: ProbeConfig, task: str, items: list[dict], shot_record: dict,
                         dataset_meta: dict | None) -> str:
    skip = NOT_IN_FINGERPRINT | (SAMPLING_ONLY if task == "mcqa" else MCQA_ONLY)
    settings = {k: v for k, v in config.to_dict(cfg).items() if k not in skip}
    parts = {"config": settings, "items": io.fingerprint(items), "shots": shot_record,
             "dataset": (dataset_meta or {}).get("fingerprint"), "row_format": ROW_FORMAT,
             "scoring": SCORING_VERSION}
    trained = trained_model_fingerprint(cfg.model)
    if trained is not None:  # only then: the fingerprints of tables of other models stay as they were
        parts["trained_model"] = trained
    return io.fingerprint(parts)


def trained_model_fingerprint(model: str | None) -> str | None:
    """The fingerprint `rait train` recorded in a model folder it made, else None: a folder
    retrained with other data or settings holds another model under the same path."""
    from rait.models import TRAIN_INFO

    if model is None or not Path(model).is_dir():
        return None
    recorded = result_output(Path(model) / TRAIN_INFO).recorded()
    return recorded.get("fingerprint") if recorded else None


def probe_chunk(chunk: list[dict], plan: dict, cfg: ProbeConfig, backend, loaded, embedder, progress) -> list[dict]:
    from rait.prompts import fewshot_prefix, untuned_prompt

    model, tokenizer, _ = loaded
    prompts = [untuned_prompt(item, shots_for(item, plan), "basic", cfg.template) for item in chunk]
    if chunk[0]["task"] == "mcqa":
        prefixes = ([fewshot_prefix(item, shots_for(item, plan)) for item in chunk]
                    if cfg.template == "plain" else [""] * len(chunk))
        raw = hasattr(backend, "option_mass")  # a backend without it gives renormalised probabilities only
        score = backend.option_mass if raw else backend.option_probs
        values = score(model, tokenizer, prompts, [list(item["choices"]) for item in chunk],
                       batch_size=cfg.batch_size, progress=progress, prefixes=prefixes)
        return [mcqa_row(item, v, cfg.mcqa_certainty, raw=raw) for item, v in zip(chunk, values)]
    samples = backend.sample(model, tokenizer, prompts, n=cfg.samples, temperature=cfg.temperature,
                             top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                             seeds=[item_seed(cfg.seed, item["id"]) for item in chunk],
                             batch_size=cfg.batch_size, progress=progress)
    from rait.certainty import answer_correctness, sample_certainties

    certainties = sample_certainties(embedder, samples)  # one batched embedding per chunk
    return [{**item, "task": "oeqa",
             "correctness": round(answer_correctness(s, item["answers"], cfg.match, cfg.refusal_phrases, cfg.negation_guard), 6),
             "certainty": round(c, 6), "samples": s}
            for item, s, c in zip(chunk, samples, certainties)]


def mcqa_row(item: dict, mass: dict, certainty_rule: str = "normalised", *, raw: bool = True) -> dict:
    """The row of an MCQA item from its option letters' next-token probabilities: raw ones
    (`raw`, from `option_mass`; kept in the row) or already renormalised ones.

    No letter mass at all (every letter's probability underflowed to 0) has no distribution to
    read: such a row is flagged `no_letter_mass`, its `probs` are uniform (so correctness is 1/k)
    and its certainty is 0 under either rule, and the probe summary counts it."""
    from rait.certainty import entropy, entropy_certainty, raw_entropy, raw_entropy_certainty

    letter_mass = sum(mass.values())
    no_mass = not letter_mass > 0
    probs = ({label: 1.0 / len(mass) for label in mass} if no_mass
             else {label: value / letter_mass for label, value in mass.items()})
    if no_mass:
        certainty = 0.0
    elif certainty_rule == "raw-entropy":
        certainty = raw_entropy_certainty(list(mass.values()))
    else:
        certainty = entropy_certainty(list(probs.values()))
    row = {**item, "task": "mcqa", "correctness": round(probs[item["target"]], 6),
           "certainty": round(certainty, 6), "probs": {label: round(p, 6) for label, p in probs.items()},
           "entropy": round(entropy(list(probs.values())), 6)}
    if raw:  # 9 significant digits: the raw probabilities of unlikely letters are far below 1e-6
        row["option_mass"] = {label: significant(value) for label, value in mass.items()}
        row["letter_mass"] = significant(letter_mass)
        row["entropy_raw"] = significant(raw_entropy(list(mass.values())))
    if no_mass:
        row["no_letter_mass"] = True
    return row


def significant(value: float) -> float:
    return float(f"{value:.9g}")


# ---------------------------------------------------------------------------------------------
# the output and its resumption


def probe_output(out: str | Path) -> Output:
    """The knowledge table, its sidecar OUT.meta.json (the marker) and the progress file that an
    interrupted probe resumes from."""
    out = Path(out)
    return sidecar_output(out, partials=[progress_path(out)])


def progress_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.progress.json")


def check_outputs(output: Output, inputs: list) -> None:
    """Every file the probe writes may be written (not an input, not a folder, not a device)."""
    for path in output.files + output.partials:
        io.check_output_path(path, inputs)


def recorded_fingerprint(output: Output) -> str | None:
    """The settings fingerprint of what is at the output: its marker's, else its progress file's
    (an unreadable one counts as none)."""
    recorded = output.recorded() or result_output(output.partials[0]).recorded()
    return recorded.get("fingerprint") if recorded else None


def resume_point(output: Output, fp: str, items: list[dict], overwrite: bool) -> int | None:
    """Rows already done (a whole number of chunks), or None when the table is complete."""
    if existing_foreign(output) and not overwrite:
        raise RaitError(f"{output.path}: exists but was not written by `rait probe` (no progress or meta file); "
                        "use --overwrite or another --out")
    previous = recorded_fingerprint(output)
    if previous != fp:
        if previous is not None and not overwrite:
            raise RaitError(f"{output.path}: was made with other settings, model, shots or dataset; use "
                            "--overwrite to replace it or choose another --out")
        return start_fresh(output, fp)
    try:
        if output.finished(fp) and complete_rows(output.path, items) is not None:
            return None
        return recover_rows(output, fp, items)
    except RaitError:
        if not overwrite:
            raise
        return start_fresh(output, fp)  # a damaged table: --overwrite starts it again


def start_fresh(output: Output, fp: str) -> int:
    output.clear()
    io.write_json_atomic(output.partials[0], {"fingerprint": fp})
    return 0


def complete_rows(path: Path, items: list[dict]) -> list[dict] | None:
    """The table's rows when it holds a checked row for every item, in item order, else None."""
    rows = io.recover_jsonl(path)
    if len(rows) != len(items):
        return None
    check_rows(rows, items, path)
    return rows


def check_rows(rows: list[dict], items: list[dict], path: Path) -> None:
    """Rows on disk are the pool's items, in order, with valid numbers (a damaged or edited table
    is an error, never mixed into a result)."""
    from rait.knowledge import check_table

    for line, (row, item) in enumerate(zip(rows, items), start=1):
        if row.get("id") != item["id"]:
            raise RaitError(f"{path}, line {line}: row id {row.get('id')!r} is not the pool's item "
                            f"{item['id']!r}; use --overwrite or another --out")
    if rows:
        check_table(rows, str(path))


def recover_rows(output: Output, fp: str, items: list[dict]) -> int:
    """Keep the complete chunks of an interrupted table (cutting a torn line and a partial chunk);
    the table is unfinished again until its marker is rewritten."""
    rows = io.recover_jsonl(output.path)
    keep = min(len(rows), len(items))
    keep = keep if keep == len(items) else keep - keep % ROWS_PER_WRITE
    check_rows(rows[:keep], items, output.path)
    io.write_json_atomic(output.partials[0], {"fingerprint": fp})
    remove(output.marker)
    if keep != len(rows):
        io.write_jsonl_atomic(output.path, rows[:keep])
    return keep


# ---------------------------------------------------------------------------------------------
# the stage


@dataclasses.dataclass
class ProbeJob:
    """What a probe will compute, decided before any model loads."""

    task: str
    k: int  # shots per prompt
    plan: dict  # subject (or "") -> shots
    shot_record: dict
    fingerprint: str


def plan_probe(cfg: ProbeConfig, items: list[dict], shots: list[dict] | None = None,
               dataset_meta: dict | None = None) -> ProbeJob:
    """The task, the shots and the settings fingerprint of probing `items` with `cfg`."""
    from rait.prompts import default_shots

    task = pool_task(items)
    k = cfg.shots if cfg.shots is not None else default_shots(task, cfg.template)
    plan, shot_record = plan_shots(items, task, k, shots if shots is not None else load_shot_items(cfg, task),
                                   stage="probe")
    warn_shot_fallback(shot_record, "probe")
    return ProbeJob(task, k, plan, shot_record, settings_fingerprint(cfg, task, items, shot_record, dataset_meta))


def probe(cfg: ProbeConfig, items: list[dict], out: str | Path, *, dataset_meta: dict | None = None,
          shots: list[dict] | None = None, loaded=None) -> list[dict]:
    """`rait probe` and the run's probe stage: probe `items`, write the knowledge table `out`, then
    `out.meta.json` last; return the rows in item order. An interrupted table resumes.

    `shots` replaces the shot source; `loaded` = (model, tokenizer, info) already in memory."""
    config.check_values(cfg, "probe")
    output = probe_output(out)
    check_outputs(output, [(dataset_meta or {}).get("spec"), cfg.shot_source])
    job = plan_probe(cfg, items, shots, dataset_meta)
    backend = get_backend(cfg.backend)
    if job.task == "mcqa" and cfg.mcqa_certainty == "raw-entropy" and not hasattr(backend, "option_mass"):
        raise RaitError(f"--mcqa-certainty raw-entropy needs the raw option-letter probabilities, which backend "
                        f"{cfg.backend} does not report; use --backend hf")
    done = resume_point(output, job.fingerprint, items, cfg.overwrite)
    if done is None:
        print(f"rait probe: {output.path} is already complete ({len(items)} rows); nothing to do", file=sys.stderr)
        return complete_rows(output.path, items)
    print_plan(cfg, job, len(items), done, dataset_meta, output.path)
    started = time.perf_counter()
    try:
        model_info = compute_rows(items, output.path, done, job, cfg, backend, loaded)
    except BaseException:
        if done == 0 and not (output.path.exists() and output.path.stat().st_size):
            output.clear()  # failed before any row was computed (e.g. the model did not load): leave nothing
        raise
    rows = io.recover_jsonl(output.path)
    elapsed = time.perf_counter() - started
    summary = summarize(rows, elapsed, len(items) - done)
    output.finish(make_meta(cfg, job, model_info, dataset_meta, summary, elapsed, len(items), done))
    print(format_summary(summary, output.path))
    return rows


def compute_rows(items, out: Path, done: int, job: ProbeJob, cfg: ProbeConfig, backend, loaded) -> dict:
    """Append the rows of items[done:] to `out`; return the model's info. A model loaded here is
    released here."""
    own = loaded is None
    loaded = loaded or load_for(cfg)
    try:
        embedder = None
        if job.task == "oeqa":
            from rait.certainty import load_embedder

            embedder = load_embedder(cfg.embedder)
        run_chunks(items, out, done, job.plan, cfg, backend, loaded, embedder)
    finally:
        if own:
            release(loaded)
    return loaded[2]


def run_chunks(items, out, done, plan, cfg, backend, loaded, embedder) -> None:
    from tqdm.auto import tqdm

    try:
        with io.JsonlAppender(out) as sink, tqdm(total=len(items), initial=done, unit="q",
                                                 desc="probe", file=sys.stderr) as bar:
            for start in range(done, len(items), ROWS_PER_WRITE):
                chunk = items[start:start + ROWS_PER_WRITE]
                sink.write(probe_chunk(chunk, plan, cfg, backend, loaded, embedder, bar.update))
    except OSError as exc:  # a full disk or a folder that turned read-only: the finished chunks stay
        raise RaitError(f"{out}: cannot write ({exc.strerror}); free space or fix it, then re-run to resume") from None


def print_plan(cfg: ProbeConfig, job: ProbeJob, n: int, done: int, dataset_meta: dict | None, out: Path) -> None:
    task, k = job.task, job.k
    name = (dataset_meta or {}).get("name", "items")
    decoding = (f"{cfg.samples} samples, temperature {cfg.temperature:g}, top_p {cfg.top_p:g}, "
                f"max {cfg.max_new_tokens} new tokens, stop at the first newline, seed {cfg.seed}"
                if task == "oeqa" else "one forward per question, option-letter probabilities")
    print(f"rait probe: {task.upper()} knowledge state of model {cfg.model or 'default'} (dtype {cfg.dtype}, "
          f"backend {cfg.backend}) on {name}: {n} items" + (f", resuming after {done}" if done else ""),
          file=sys.stderr)
    how = (f"{k}-shot plain prompts" if cfg.template == "plain"
           else f"chat template, {'zero-shot' if k == 0 else f'{k} example turns'}")
    print(f"  {how} ({job.shot_record['source']} shots); {decoding}; -> {out}", file=sys.stderr)


def summarize(rows: list[dict], elapsed: float, computed: int) -> dict:
    n = len(rows)
    cor = [r["correctness"] for r in rows]
    cer = [r["certainty"] for r in rows]
    return {"n": n, "mean_correctness": round(sum(cor) / n, 4), "mean_certainty": round(sum(cer) / n, 4),
            "share_correctness_ge_0.5": round(sum(c >= 0.5 for c in cor) / n, 4),
            "histogram": histogram(cor, cer), **empty_sample_counts(rows), **letter_mass_counts(rows),
            "seconds": round(elapsed, 1), "computed": computed,
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


def letter_mass_counts(rows: list[dict]) -> dict:
    """MCQA: the mean raw letter mass (how much of the next-token distribution the options get) and
    how many items gave the letters none (flagged rows; their numbers carry no information)."""
    rows = [r for r in rows if r.get("task") == "mcqa"]
    if not rows:
        return {}
    masses = [r["letter_mass"] for r in rows if isinstance(r.get("letter_mass"), (int, float))]
    return {"items_no_letter_mass": sum(1 for r in rows if r.get("no_letter_mass")),
            "mean_letter_mass": round(sum(masses) / len(masses), 4) if masses else None}


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
    if summary.get("items_no_letter_mass"):
        lines.append(f"  warning: {summary['items_no_letter_mass']} items gave the option letters no probability "
                     "(flagged no_letter_mass: uniform probs, certainty 0)")
    if summary.get("mean_letter_mass") is not None:
        lines.append(f"  mean letter mass {summary['mean_letter_mass']:.3f} (raw probability of the option letters)")
    rate = summary["items_per_second"]
    lines.append(f"  time {summary['seconds']:.1f} s for {summary['computed']} items"
                 + (f" ({rate:.2f} items/s)" if rate else ""))
    return "\n".join(lines)


def make_meta(cfg: ProbeConfig, job: ProbeJob, info: dict, dataset_meta: dict | None, summary: dict,
              elapsed: float, n: int, done: int) -> dict:
    task = job.task
    decoding = ({"samples": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p,
                 "max_new_tokens": cfg.max_new_tokens,
                 "stop": "first newline after some text, eos or end of turn", "seed": cfg.seed,
                 "per_item_seed": "sha256(seed:id)"}
                if task == "oeqa" else {"method": "next-token probabilities of the option letters, renormalised",
                                        "certainty": cfg.mcqa_certainty,
                                        "certainty_formula": MCQA_CERTAINTY[cfg.mcqa_certainty]})
    decoding["batching"] = ("each prompt in its own forward passes: a row does not depend on the batch"
                            if cfg.backend == "hf" else f"{cfg.backend} engine batching")
    return {"stage": "probe", "task": task, "model": info.get("model"), "model_path": info.get("path"),
            "dtype": info.get("dtype"), "backend": cfg.backend,
            "backend_details": info.get("backend_details"), "template": cfg.template, "decoding": decoding, "seed": cfg.seed,
            "shots": job.shot_record, "dataset": dataset_meta or {}, "items": n, "resumed_after": done,
            "config": config.to_dict(cfg), "fingerprint": job.fingerprint, "versions": io.package_versions(("torch", "transformers", "rait")),
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
# sharding: each item's numbers depend only on the item and the seed (hf: every prompt in forward
# passes of its own), so a merged sharded table holds the same rows as a table probed in one process


def parse_shard(text: str) -> tuple[int, int]:
    """(I, N) of `--shard I/N`, with 0 <= I < N."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(part.strip().isascii() and part.strip().isdigit() for part in parts):
        raise RaitError(f"--shard: expected I/N with whole numbers such as 0/4, got {text!r}")
    index, count = (int(part) for part in parts)
    if not 0 <= index < count:
        raise RaitError(f"--shard: need 0 <= I < N, got {text!r}")
    return index, count


def check_shard_options(shard: str | None, merge: int | None) -> tuple[int, int] | None:
    """The parsed --shard (or None); --merge-shards N needs N >= 1 and no --shard."""
    if merge is not None and merge < 1:
        raise RaitError(f"--merge-shards: must be >= 1 (the number of shards), got {merge}")
    if shard is not None and merge is not None:
        raise RaitError("--shard and --merge-shards: give one of them (probe a shard, or merge finished ones)")
    return parse_shard(shard) if shard is not None else None


def shard_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


def shard_items(items: list[dict], index: int, count: int) -> list[dict]:
    return items[index::count]


def merge_shards(items: list[dict], out: Path, count: int, dataset_fingerprint: str | None = None, *,
                 inputs: list | None = None, overwrite: bool = False) -> list[dict]:
    """Join the finished shards of `out` in dataset order into `out` (+ its meta, last); refuse
    missing, unfinished, mixed or overlapping shards, writing nothing then."""
    output = sidecar_output(out)
    check_outputs(output, list(inputs or []))
    if existing_foreign(output) and not overwrite:
        raise RaitError(f"{out}: exists but was not written by `rait probe`; use --overwrite or another --out")
    metas = [finished_shard_meta(out, index, count, dataset_fingerprint) for index in range(count)]
    for index, meta in enumerate(metas[1:], start=1):
        if shard_settings(meta) != shard_settings(metas[0]):
            raise RaitError(f"{shard_path(out, index, count)}: probed with other settings than shard 0; "
                            "re-run it with the same ones")
    rows = merged_rows(items, out, count)
    elapsed = sum(number_or_zero((meta.get("timing") or {}).get("seconds")) for meta in metas)  # compute over all
    dataset = {k: v for k, v in (metas[0].get("dataset") or {}).items() if k != "shard"}
    merged = {**metas[0], "dataset": dataset, "shards": count, "items": len(rows),
              "timing": {"seconds": round(elapsed, 2)}, "summary": summarize(rows, elapsed, len(rows))}
    output.clear()
    io.write_jsonl_atomic(output.path, rows)
    output.finish(merged)
    print(format_summary(merged["summary"], out))
    return rows


def finished_shard_meta(out: Path, index: int, count: int, dataset_fingerprint: str | None) -> dict:
    """The meta of a finished shard of this dataset, or an error saying which shard to (re-)run."""
    path = shard_path(out, index, count)
    meta = sidecar_output(path).finished()
    if meta is None:
        raise RaitError(f"{path}: shard {index}/{count} is missing or unfinished "
                        f"(run rait probe ... --shard {index}/{count})")
    probed = (meta.get("dataset") or {}).get("fingerprint")
    if dataset_fingerprint is not None and probed != dataset_fingerprint:
        raise RaitError(f"{meta_path(path)}: shard {index}/{count} was probed on another dataset; merge with the "
                        "same dataset and dataset options the shards were probed with")
    return meta


def shard_settings(meta: dict) -> dict:
    settings = meta.get("config")
    return {k: v for k, v in settings.items() if k != "overwrite"} if isinstance(settings, dict) else {}


def number_or_zero(value) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0.0


def merged_rows(items: list[dict], out: Path, count: int) -> list[dict]:
    """The shards' rows in dataset order: each item exactly once, each row checked."""
    from rait.knowledge import check_table

    by_id = {}
    for index in range(count):
        path = shard_path(out, index, count)
        numbered = list(io.read_jsonl(path))
        check_table([row for _, row in numbered], str(path), [line for line, _ in numbered])
        for line, row in numbered:
            if row["id"] in by_id:
                raise io.input_error(path, f"item {row['id']!r} is in two shards", line=line, field="id")
            by_id[row["id"]] = row
    missing = [item["id"] for item in items if item["id"] not in by_id]
    if missing or len(by_id) != len(items):
        raise RaitError(f"{out}: the {count} shards do not cover this dataset exactly "
                        f"({len(missing)} items missing, {len(by_id)} rows for {len(items)} items); "
                        "merge with the same dataset options the shards were probed with")
    return [by_id[item["id"]] for item in items]


def dataset_record(dataset, spec: str) -> dict:
    """What the meta records about the dataset (its fingerprint is part of the settings)."""
    return {"name": dataset.name, "source": dataset.source, "spec": spec, "fingerprint": dataset.fingerprint,
            "n": len(dataset.items), "notes": dataset.notes}


def run(args: argparse.Namespace) -> int:
    from rait.backends import vllm_section
    from rait.data.split import DataOptions, load_with_options
    from rait.prompts import with_shot_source

    opts = config.build(DataOptions, None, args, where="probe")
    cfg = config.build(ProbeConfig, None, args, where="probe")
    cfg = dataclasses.replace(cfg, vllm=vllm_section(args, cfg.vllm, where="probe"))
    config.check_values(cfg, "probe")
    shard = check_shard_options(args.shard, args.merge_shards)
    out = Path(args.out)
    check_outputs(probe_output(out), [args.dataset, cfg.shot_source])
    if cfg.backend != "hf":
        get_backend(cfg.backend)  # fail before loading any data or model
    dataset = load_with_options(args.dataset, opts)
    cfg = with_shot_source(cfg, args.dataset, opts.split)  # recorded in the meta: `rait rehearse` repeats it
    meta = dataset_record(dataset, args.dataset)
    if args.merge_shards is not None:
        merge_shards(dataset.items, out, args.merge_shards, dataset.fingerprint,
                     inputs=[args.dataset, cfg.shot_source], overwrite=cfg.overwrite)
        return 0
    items = dataset.items
    if shard is not None:
        index, count = shard
        items, out = shard_items(items, index, count), shard_path(out, index, count)
        meta["shard"] = f"{index}/{count}"
    probe(cfg, items, out, dataset_meta=meta)
    return 0
