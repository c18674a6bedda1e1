"""`rait rehearse`: rehearsal training, a second knowledge query, and the knowledge flow.

Zhu et al. 2025, section 3.2: fine-tune a copy of the initial model on questions it already
knows with near-total confidence (so the training teaches the answer *format*, not new facts),
query the whole pool again with it, and record per question how correctness moved.

Steps, each skipped when its output is complete and was made from the same inputs:
  1. select  -> DIR/rehearsal_set.jsonl (+ .meta.json)
  2. train   -> DIR/model                      (the same recipe as `rait train`)
  3. probe   -> DIR/knowledge_rehearsed.jsonl  (the knowledge table's own probe settings)
  4. join    -> DIR/knowledge.jsonl (+ .meta.json): the initial table + flow
The paper rehearses with a lower learning rate than its final SFT (2e-6 vs 8e-6 for full
fine-tuning of Llama-3-8B): pass `--learning-rate` (or `rehearse_train` in `rait run`) to do so.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

from rait import config as config_mod
from rait import io, prompts
from rait.config import option
from rait.errors import RaitError
from rait.options import Seed
from rait.stage import Output, folder_output, meta_path, remove, result_output, sidecar_output



@dataclasses.dataclass
class RehearseConfig(Seed):
    size: int = option(1000, "rehearsal samples (or all that qualify, if fewer)", at_least=1)
    oeqa_min_correctness: float = option(0.995, "OEQA: rehearse items with correctness >= this", at_least=0, at_most=1)
    oeqa_min_certainty: float = option(0.995, "OEQA: ... and certainty >= this", at_least=0, at_most=1)
    mcqa_min_prob: float = option(0.99, "MCQA: rehearse items whose gold-letter probability is > this",
                                  at_least=0, below=1)
    template: str = option("plain", "prompt template of the rehearsal data", choices=("plain", "chat"))


# ---- step 1: which items to rehearse ---------------------------------------------------------

def qualifies(row: dict, rcfg: RehearseConfig) -> bool:
    """Known with near-total confidence (the paper's thresholds by default)."""
    if row.get("task") == "mcqa":
        return row["correctness"] > rcfg.mcqa_min_prob  # correctness = p(gold), renormalised
    return row["correctness"] >= rcfg.oeqa_min_correctness and row["certainty"] >= rcfg.oeqa_min_certainty


def rehearsal_target(row: dict, strategy: str, scoring: dict | None = None) -> str | None:
    """The model's own answer: its most frequent correct sample (OEQA), the gold letter (MCQA)."""
    if row.get("task") == "mcqa":
        return row["target"]
    from rait.certainty import majority_correct_answer

    # scored as the probe scored it: its refusal phrases and negation guard, not the defaults
    scoring = scoring or {}
    return majority_correct_answer(row.get("samples") or [], row["answers"], strategy,
                                   refusal_phrases=scoring.get("refusal_phrases"),
                                   negation_guard=scoring.get("negation_guard", True))


def rehearsal_row(row: dict, target: str, template: str) -> dict:
    """A prompt/completion sample with the plain question prompt (no refusal instruction)."""
    prompt = prompts.instruction_prompt(row, "basic", template)
    if template == "chat":
        completion = [{"role": "assistant", "content": target}]
    else:
        completion = prompts.completion_text(target, "plain")
    return {"id": row["id"], "prompt": prompt, "completion": completion, "task": row.get("task", "oeqa"),
            "question": row["question"], "correctness": row["correctness"], "certainty": row["certainty"]}


def select_rehearsal(table: list[dict], rcfg: RehearseConfig, strategy: str = "contains",
                     scoring: dict | None = None) -> list[dict]:
    """Up to `size` qualifying items (a seeded sample, independent of row order), as training rows."""
    chosen = []
    for row in sorted(table, key=lambda r: r["id"]):
        if qualifies(row, rcfg):
            target = rehearsal_target(row, strategy, scoring)
            if target is not None:
                chosen.append(rehearsal_row(row, target, rcfg.template))
    if not chosen:
        raise RaitError(no_candidates_message(table, rcfg))
    if len(chosen) > rcfg.size:
        chosen = random.Random(rcfg.seed).sample(chosen, rcfg.size)
    return chosen


def no_candidates_message(table: list[dict], rcfg: RehearseConfig) -> str:
    best = max(table, key=lambda r: (r["correctness"], r["certainty"]))
    return (f"no item qualifies for rehearsal: OEQA needs correctness >= {rcfg.oeqa_min_correctness} and "
            f"certainty >= {rcfg.oeqa_min_certainty}, MCQA a gold probability > {rcfg.mcqa_min_prob} "
            f"(the best of {len(table)} items has correctness {best['correctness']:.3f}, certainty "
            f"{best['certainty']:.3f}). Lower them with --oeqa-min-correctness, --oeqa-min-certainty, "
            f"--mcqa-min-prob (YAML section 'rehearse'), or probe a larger pool")


# ---- the run directory ------------------------------------------------------------------------

@dataclasses.dataclass
class RehearseDir:
    """DIR's layout: every step's output has a marker recording the fingerprint of its inputs, so
    a re-run skips finished steps, resumes an interrupted one and redoes one whose inputs changed."""

    root: Path

    @property
    def rehearsal_set(self) -> Path:
        return self.root / "rehearsal_set.jsonl"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def rehearsed_table(self) -> Path:
        return self.root / "knowledge_rehearsed.jsonl"

    @property
    def knowledge(self) -> Path:
        return self.root / "knowledge.jsonl"

    def files(self) -> list[Path]:
        return [self.rehearsal_set, meta_path(self.rehearsal_set), self.rehearsed_table,
                meta_path(self.rehearsed_table), self.knowledge, meta_path(self.knowledge)]


def check_out_dir(out_dir: Path, inputs: list) -> None:
    """DIR is a folder (or can be made one) and none of the files rait writes in it is an input."""
    for given in inputs:
        if given is not None and out_dir.exists() and Path(given).exists() and out_dir.resolve() == Path(given).resolve():
            raise RaitError(f"{out_dir}: is also an input; rait never overwrites its inputs, choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise RaitError(f"{out_dir}: is a file, not a folder; give a directory for --out")
    for path in RehearseDir(out_dir).files():
        io.check_output_path(path, inputs)


def train_output(model_dir: Path) -> Output:
    from rait.models import TRAIN_INFO
    from rait.stages.train import CHECKPOINTS, PARTIAL

    return folder_output(model_dir, TRAIN_INFO, partials=[model_dir / CHECKPOINTS, model_dir / PARTIAL])


def checkpoints_marker(model_dir: Path) -> Path:
    from rait.stages.train import CHECKPOINTS, RUN_MARKER

    return model_dir / CHECKPOINTS / RUN_MARKER


def made_otherwise(marker: Path, fp: str) -> bool:
    """Whether `marker` is there but records another fingerprint (or cannot be read)."""
    if not marker.exists():
        return False
    recorded = result_output(marker).recorded()
    return recorded is None or recorded.get("fingerprint") != fp


def already_done() -> None:
    print("      already done")


# ---- the four steps ----------------------------------------------------------------------------

def select_step(table: list[dict], knowledge_path: Path, rcfg: RehearseConfig, strategy: str, scoring: dict,
                fmt: dict, path: Path) -> tuple[list[dict], str]:
    """1. the rehearsal set (+ its meta): (rows, fingerprint)."""
    from rait.scoring import SCORING_VERSION

    fp = io.fingerprint({"knowledge": io.file_fingerprint(knowledge_path), "rehearse": config_mod.to_dict(rcfg),
                         "scoring": {"match": strategy, **scoring, "version": SCORING_VERSION}})
    output = sidecar_output(path)
    print(f"[1/4] select rehearsal items -> {path}")
    if output.finished(fp):
        already_done()
    else:
        rows = select_rehearsal(table, rcfg, strategy, scoring)
        output.clear()
        io.write_jsonl_atomic(output.path, rows)
        output.finish({"rehearse": config_mod.to_dict(rcfg), "prompt_format": fmt, "n": len(rows),
                       "qualifying": sum(qualifies(r, rcfg) for r in table), "knowledge": str(knowledge_path),
                       "fingerprint": fp})
    return [row for _, row in io.read_jsonl(path)], fp


def train_fingerprint(rows: list[dict], tcfg, fmt: dict) -> str:
    """The fingerprint `rait train` records in its marker for training on `rows` with `tcfg`."""
    from rait.stages import train

    checked, _ = train.load_rows(rows)
    return train.run_fingerprint(tcfg, train.data_fingerprint(rows, checked), fmt)


def train_step(rows: list[dict], tcfg, fmt: dict, model_dir: Path) -> tuple[dict, str]:
    """2. the rehearsed model (`rait train`'s folder): (its marker, fingerprint)."""
    from rait.stages.train import train_sft

    fp = train_fingerprint(rows, tcfg, fmt)
    output = train_output(model_dir)
    print(f"[2/4] rehearsal training on {len(rows)} items -> {model_dir}")
    if output.finished(fp):
        already_done()
    else:
        if made_otherwise(output.marker, fp) or made_otherwise(checkpoints_marker(model_dir), fp):
            output.clear()  # another model or its checkpoints: nothing may resume from them
        train_sft(rows, model_dir, tcfg, prompt_format=fmt)
    return output.finished(fp) or {}, fp


def probe_step(items: list[dict], pcfg, dataset_meta: dict, path: Path) -> str:
    """3. the rehearsed model's knowledge table (probe's own output, which resumes): its fingerprint."""
    from rait.stages import probe

    fp = probe.plan_probe(pcfg, items, None, dataset_meta).fingerprint  # covers the trained model
    output = probe.probe_output(path)
    print(f"[3/4] knowledge query of all {len(items)} items with the rehearsed model -> {path}")
    if output.finished(fp):
        already_done()
        return fp
    if probe.recorded_fingerprint(output) not in (None, fp):
        output.clear()  # probed with another model or settings; one with the same ones resumes
    probe.probe(pcfg, items, path, dataset_meta=dataset_meta)
    return fp


def join_step(table: list[dict], knowledge_path: Path, probed_path: Path, path: Path, fp_inputs: dict,
              make_meta) -> list[dict]:
    """4. the initial table + correctness after rehearsal + flow, joined by id (+ its meta)."""
    from rait.knowledge import join_flow, read_table

    print(f"[4/4] join by id -> {path}")
    fp = io.fingerprint({**fp_inputs, "table": io.file_fingerprint(probed_path)})
    joined = join_flow(table, read_table(probed_path), source_before=str(knowledge_path),
                       source_after=str(probed_path))
    output = sidecar_output(path)
    if not output.finished(fp):
        output.clear()
        io.write_jsonl_atomic(output.path, joined)
        output.finish({**make_meta(joined), "fingerprint": fp})
    return joined


# ---- the stage -------------------------------------------------------------------------------

def load_probe_meta(knowledge_path: Path) -> dict:
    path = meta_path(knowledge_path)
    if not path.exists():
        raise RaitError(f"{knowledge_path}: no {path.name} beside it, so the table is incomplete or was not "
                        f"made by `rait probe`; (re-)run `rait probe` first")
    meta = io.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise RaitError(f"{path}: has no 'config' (the probe settings to repeat); (re-)run `rait probe`")
    return meta


def check_items_match(items: list[dict], table: list[dict], knowledge_path: Path) -> None:
    """The dataset given to rehearse must be the pool the table was probed on."""
    item_ids = {item["id"] for item in items}
    table_ids = {row["id"] for row in table}
    missing = sorted(table_ids - item_ids)
    extra = sorted(item_ids - table_ids)
    if missing or extra:
        detail = (f"id {missing[0]!r} is in the table but not in the dataset" if missing
                  else f"id {extra[0]!r} is in the dataset but not in the table")
        raise RaitError(f"{knowledge_path}: the dataset does not match the knowledge table "
                        f"({len(missing)} ids missing, {len(extra)} extra; {detail}); use the same dataset "
                        f"options (--limit, --part, --split) as for `rait probe`")


def probe_config_for(meta: dict, model_dir: Path, where: str):
    from rait.stages.probe import ProbeConfig

    return config_mod.build(ProbeConfig, {**meta["config"], "model": str(model_dir)}, where=where)


def train_config_for(tcfg, probe_config: dict, where: str):
    """The rehearsal starts from the probed model, as it was loaded for the probe (its revision,
    remote-code permission and chat template, unless set here); a different --model is a mistake."""
    from rait.models import DEFAULT_MODEL
    from rait.options import ModelOptions

    probe_model = probe_config.get("model")
    wanted = tcfg.model
    if wanted not in (None, probe_model) and not (wanted == DEFAULT_MODEL and probe_model is None):
        raise RaitError(f"{where}: the table was probed with model {probe_model or DEFAULT_MODEL!r}, but "
                        f"rehearsal would train {wanted!r}; rehearsal must start from the probed model")
    defaults = ModelOptions()
    inherited = {key: probe_config[key] for key in ("revision", "trust_remote_code", "chat_template")
                 if getattr(tcfg, key) == getattr(defaults, key) and probe_config.get(key) is not None}
    return dataclasses.replace(tcfg, model=probe_model, **inherited)


def rehearse(items: list[dict], knowledge_path: str | Path, out_dir: str | Path, rcfg: RehearseConfig,
             tcfg) -> Path:
    """`rait rehearse` and the run's rehearse stage: the knowledge table file in, DIR/knowledge.jsonl
    (the table with flow) out. Runs, resumes or skips the four steps; returns that path."""
    from rait.knowledge import flow_shares, read_table, table_task

    knowledge_path, run_dir = Path(knowledge_path), RehearseDir(Path(out_dir))
    check_out_dir(run_dir.root, [knowledge_path, meta_path(knowledge_path)])
    table = read_table(knowledge_path)
    probe_meta = load_probe_meta(knowledge_path)
    check_items_match(items, table, knowledge_path)
    pcfg = probe_config_for(probe_meta, run_dir.model, f"{meta_path(knowledge_path)}: config")
    tcfg = train_config_for(tcfg, probe_meta["config"], "rehearse")
    fmt = prompts.prompt_format(table_task(table), "basic", rcfg.template)
    dataset_meta = probe_meta["dataset"] if isinstance(probe_meta.get("dataset"), dict) else {}
    created = not run_dir.root.exists()
    run_dir.root.mkdir(parents=True, exist_ok=True)
    times, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        times[name], clock = time.perf_counter() - clock, time.perf_counter()

    strategy = probe_meta["config"].get("match", "contains")
    scoring = {key: probe_meta["config"].get(key) for key in ("refusal_phrases", "negation_guard")
               if probe_meta["config"].get(key) is not None}
    try:
        rows, fp_select = select_step(table, knowledge_path, rcfg, strategy, scoring, fmt, run_dir.rehearsal_set)
        lap("select")
        trained, fp_train = train_step(rows, tcfg, fmt, run_dir.model)
    except Exception:
        if created and not any(run_dir.model.glob("checkpoints/checkpoint-*")):
            remove(run_dir.root)  # failed before any training was saved (e.g. a broken model): leave nothing
        raise
    lap("train")
    fp_probe = probe_step(items, pcfg, dataset_meta, run_dir.rehearsed_table)
    lap("probe")
    loss = trained.get("final_loss")

    def join_meta(joined: list[dict]) -> dict:
        return {**probe_meta, "rehearsal": {
            "config": config_mod.to_dict(rcfg), "train": config_mod.to_dict(tcfg), "n": len(rows),
            "loss": loss, "flow": flow_shares(joined),
            "knowledge_before": {"path": str(knowledge_path), "fingerprint": io.file_fingerprint(knowledge_path)},
            "knowledge_after": {"path": str(run_dir.rehearsed_table),
                                "fingerprint": io.file_fingerprint(run_dir.rehearsed_table)},
            "seconds": {k: round(v, 2) for k, v in times.items()}}}

    joined = join_step(table, knowledge_path, run_dir.rehearsed_table, run_dir.knowledge,
                       {"select": fp_select, "train": fp_train, "probe": fp_probe}, join_meta)
    lap("join")
    print(format_summary(len(rows), loss, flow_shares(joined), joined, times))
    return run_dir.knowledge


def format_summary(n: int, loss: float | None, shares: dict, joined: list[dict], times: dict) -> str:
    from rait.knowledge import distribution

    flow = distribution([row["flow"] for row in joined])
    loss_text = f"{loss:.4f}" if loss is not None else "n/a"
    return "\n".join([
        f"rehearsed on {n} items; training loss {loss_text}",
        f"flow over {len(joined)} items: rose {shares['rose']:.1%}, fell {shares['fell']:.1%}, "
        f"same {shares['same']:.1%}; mean {flow['mean']:+.3f}, quartiles {flow['q1']:+.3f} / "
        f"{flow['median']:+.3f} / {flow['q3']:+.3f}",
        "time: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in times.items())])


# ---- CLI -------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rait.data.split import DataOptions
    from rait.stages.train import TrainConfig

    parser.epilog = ("The paper rehearses with a lower learning rate than its final SFT (2e-6 vs 8e-6 for full "
                     "fine-tuning); set --learning-rate accordingly.")
    parser.add_argument("dataset", metavar="DATASET", help="the pool the knowledge table was probed on "
                        "(same dataset options as for `rait probe`)")
    parser.add_argument("--knowledge", required=True, metavar="FILE", help="knowledge table from `rait probe`")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    config_mod.add_arguments(parser.add_argument_group("dataset (as for `rait probe`)"), DataOptions)
    config_mod.add_arguments(parser.add_argument_group("rehearsal training (as `rait train`)"), TrainConfig)
    # RehearseConfig and TrainConfig share --seed: one flag sets both.
    selection = parser.add_argument_group("rehearsal selection", conflict_handler="resolve")
    config_mod.add_arguments(selection, RehearseConfig)


def run(args: argparse.Namespace) -> int:
    from rait.data.split import DataOptions, load_with_options
    from rait.stages.train import TrainConfig

    rcfg = config_mod.build(RehearseConfig, None, args, where="rehearse")
    tcfg = config_mod.build(TrainConfig, None, args, where="rehearse")
    opts = config_mod.build(DataOptions, None, args, where="rehearse")
    check_out_dir(Path(args.out), [args.dataset, args.knowledge, meta_path(args.knowledge)])
    dataset = load_with_options(args.dataset, opts)
    print(f"rait rehearse: {len(dataset.items)} items of {dataset.name}, knowledge {args.knowledge} -> {args.out} "
          f"(OEQA correctness >= {rcfg.oeqa_min_correctness}, certainty >= {rcfg.oeqa_min_certainty}; "
          f"MCQA p(gold) > {rcfg.mcqa_min_prob}; up to {rcfg.size} items)")
    path = rehearse(dataset.items, args.knowledge, args.out, rcfg, tcfg)
    print(f"wrote {path} (+ {meta_path(path).name})")
    return 0
