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
import shutil
import time
from pathlib import Path

from rait import config as config_mod
from rait import io, prompts
from rait.config import option
from rait.errors import RaitError

STEPS_FILE = "steps.json"  # per step: the fingerprint of its inputs and whether it finished


@dataclasses.dataclass
class RehearseConfig:
    size: int = option(1000, "rehearsal samples (or all that qualify, if fewer)")
    oeqa_min_correctness: float = option(0.995, "OEQA: rehearse items with correctness >= this")
    oeqa_min_certainty: float = option(0.995, "OEQA: ... and certainty >= this")
    mcqa_min_prob: float = option(0.99, "MCQA: rehearse items whose gold-letter probability is > this")
    template: str = option("plain", "prompt template of the rehearsal data", choices=("plain", "chat"))
    seed: int = option(0, "seed of the rehearsal sample")


# ---- step 1: which items to rehearse ---------------------------------------------------------

def qualifies(row: dict, rcfg: RehearseConfig) -> bool:
    """Known with near-total confidence (the paper's thresholds by default)."""
    if row.get("task") == "mcqa":
        return row["correctness"] > rcfg.mcqa_min_prob  # correctness = p(gold), renormalised
    return row["correctness"] >= rcfg.oeqa_min_correctness and row["certainty"] >= rcfg.oeqa_min_certainty


def rehearsal_target(row: dict, strategy: str) -> str | None:
    """The model's own answer: its most frequent correct sample (OEQA), the gold letter (MCQA)."""
    if row.get("task") == "mcqa":
        return row["target"]
    from rait.knowledge.certainty import majority_correct_answer

    return majority_correct_answer(row.get("samples") or [], row["answers"], strategy)


def rehearsal_row(row: dict, target: str, template: str) -> dict:
    """A prompt/completion sample with the plain question prompt (no refusal instruction)."""
    prompt = prompts.instruction_prompt(row, "basic", template)
    if template == "chat":
        completion = [{"role": "assistant", "content": target}]
    else:
        completion = prompts.completion_text(target, "plain")
    return {"id": row["id"], "prompt": prompt, "completion": completion, "task": row.get("task", "oeqa"),
            "question": row["question"], "correctness": row["correctness"], "certainty": row["certainty"]}


def select_rehearsal(table: list[dict], rcfg: RehearseConfig, strategy: str = "contains") -> list[dict]:
    """Up to `size` qualifying items (a seeded sample, independent of row order), as training rows."""
    chosen = []
    for row in sorted(table, key=lambda r: r["id"]):
        if qualifies(row, rcfg):
            target = rehearsal_target(row, strategy)
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


# ---- resumption ------------------------------------------------------------------------------

class Steps:
    """DIR/steps.json: which steps finished, from which inputs. A step whose inputs changed
    starts over (its stale output is removed first, so nothing resumes from the wrong model)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / STEPS_FILE
        self.state = io.read_json(self.path) if self.path.exists() else {}

    def done(self, name: str, fp: str, output: Path) -> bool:
        entry = self.state.get(name) or {}
        return entry.get("fingerprint") == fp and entry.get("done", False) and output.exists()

    def start(self, name: str, fp: str, *outputs: Path) -> None:
        recorded = (self.state.get(name) or {}).get("fingerprint")
        if recorded is not None and recorded != fp:
            for output in outputs:
                remove(output)
                remove(meta_path(output))
        self.state[name] = {"fingerprint": fp, "done": False}
        io.write_json_atomic(self.path, self.state)

    def finish(self, name: str, fp: str, **info) -> None:
        self.state[name] = {"fingerprint": fp, "done": True, **info}
        io.write_json_atomic(self.path, self.state)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


# ---- the stage -------------------------------------------------------------------------------

def load_probe_meta(knowledge_path: Path) -> dict:
    path = meta_path(knowledge_path)
    if not path.exists():
        raise RaitError(f"{knowledge_path}: no {path.name} beside it, so the table is incomplete or was not "
                        f"made by `rait probe`; (re-)run `rait probe` first")
    meta = io.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise RaitError(f"{path}: has no 'config' (the probe settings to repeat)")
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
    from rait.knowledge.probe import ProbeConfig

    return config_mod.build(ProbeConfig, {**meta["config"], "model": str(model_dir)}, where=where)


def train_config_for(tcfg, probe_config: dict, where: str):
    """The rehearsal starts from the probed model, as it was loaded for the probe (its revision,
    remote-code permission and chat template, unless set here); a different --model is a mistake."""
    from rait.models import DEFAULT_MODEL, ModelOptions

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
    """Run (or resume) the four steps; return DIR/knowledge.jsonl, the table with flow."""
    from rait.knowledge.flow import flow_shares, join_flow
    from rait.methods import load_knowledge, table_task

    knowledge_path, out_dir = Path(knowledge_path), Path(out_dir)
    table = load_knowledge(knowledge_path)
    probe_meta = load_probe_meta(knowledge_path)
    check_items_match(items, table, knowledge_path)
    task = table_task(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, times = Steps(out_dir), {}
    set_path, model_dir = out_dir / "rehearsal_set.jsonl", out_dir / "model"
    probed_path, joined_path = out_dir / "knowledge_rehearsed.jsonl", out_dir / "knowledge.jsonl"
    pcfg = probe_config_for(probe_meta, model_dir, f"{meta_path(knowledge_path)}: config")
    tcfg = train_config_for(tcfg, probe_meta["config"], "rehearse")
    fmt = prompts.prompt_format(task, "basic", rcfg.template)

    fp_select = io.fingerprint({"knowledge": io.file_fingerprint(knowledge_path), "rehearse": config_mod.to_dict(rcfg)})
    print(f"[1/4] select rehearsal items -> {set_path}")
    start = time.perf_counter()
    if not steps.done("select", fp_select, meta_path(set_path)):
        steps.start("select", fp_select, set_path)
        strategy = probe_meta["config"].get("match", "contains")
        rows = select_rehearsal(table, rcfg, strategy)
        io.write_jsonl_atomic(set_path, rows)
        io.write_json_atomic(meta_path(set_path), {
            "rehearse": config_mod.to_dict(rcfg), "prompt_format": fmt, "n": len(rows),
            "qualifying": sum(qualifies(r, rcfg) for r in table), "knowledge": str(knowledge_path)})
        steps.finish("select", fp_select)
    else:
        print("      already done")
    rows = [row for _, row in io.read_jsonl(set_path)]
    times["select"] = time.perf_counter() - start

    fp_train = io.fingerprint({"select": fp_select, "train": config_mod.to_dict(tcfg)})
    print(f"[2/4] rehearsal training on {len(rows)} items -> {model_dir}")
    start = time.perf_counter()
    if not steps.done("train", fp_train, model_dir):
        from rait.training import train_sft

        steps.start("train", fp_train, model_dir)
        train_sft(rows, model_dir, tcfg, prompt_format=fmt)
        steps.finish("train", fp_train, loss=training_loss(model_dir))
    else:
        print("      already done")
    times["train"] = time.perf_counter() - start

    fp_probe = io.fingerprint({"train": fp_train, "probe": config_mod.to_dict(pcfg)})
    print(f"[3/4] knowledge query of all {len(items)} items with the rehearsed model -> {probed_path}")
    start = time.perf_counter()
    if not steps.done("probe", fp_probe, meta_path(probed_path)):
        from rait.knowledge.probe import probe_items

        steps.start("probe", fp_probe, probed_path)  # an interrupted probe with the same inputs resumes
        probe_items(items, probed_path, pcfg, dataset_meta=probe_meta.get("dataset"))
        steps.finish("probe", fp_probe)
    else:
        print("      already done")
    times["probe"] = time.perf_counter() - start

    fp_join = io.fingerprint({"probe": fp_probe, "table": io.file_fingerprint(probed_path)})
    start = time.perf_counter()
    print(f"[4/4] join by id -> {joined_path}")
    after = [row for _, row in io.read_jsonl(probed_path)]
    joined = join_flow(table, after, source_before=str(knowledge_path), source_after=str(probed_path))
    shares = flow_shares(joined)
    if not steps.done("join", fp_join, meta_path(joined_path)):
        steps.start("join", fp_join, joined_path)
        io.write_jsonl_atomic(joined_path, joined)
        io.write_json_atomic(meta_path(joined_path), {
            **probe_meta, "rehearsal": {
                "config": config_mod.to_dict(rcfg), "train": config_mod.to_dict(tcfg), "n": len(rows),
                "loss": steps.state["train"].get("loss"), "flow": shares,
                "knowledge_before": {"path": str(knowledge_path), "fingerprint": io.file_fingerprint(knowledge_path)},
                "knowledge_after": {"path": str(probed_path), "fingerprint": io.file_fingerprint(probed_path)},
                "seconds": {k: round(v, 2) for k, v in times.items()}}})
        steps.finish("join", fp_join)
    times["join"] = time.perf_counter() - start
    print(format_summary(len(rows), steps.state["train"].get("loss"), shares, joined, times))
    return joined_path


def training_loss(model_dir: Path) -> float | None:
    """The last logged training loss, as `rait train` recorded it in the model directory."""
    from rait.models import read_train_info

    return (read_train_info(str(model_dir)) or {}).get("final_loss")


def format_summary(n: int, loss: float | None, shares: dict, joined: list[dict], times: dict) -> str:
    from rait.methods import distribution

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
    from rait.training import TrainConfig

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
    from rait.training import TrainConfig

    rcfg = config_mod.build(RehearseConfig, None, args, where="rehearse")
    tcfg = config_mod.build(TrainConfig, None, args, where="rehearse")
    opts = config_mod.build(DataOptions, None, args, where="rehearse")
    dataset = load_with_options(args.dataset, opts)
    print(f"rait rehearse: {len(dataset.items)} items of {dataset.name}, knowledge {args.knowledge} -> {args.out} "
          f"(OEQA correctness >= {rcfg.oeqa_min_correctness}, certainty >= {rcfg.oeqa_min_certainty}; "
          f"MCQA p(gold) > {rcfg.mcqa_min_prob}; up to {rcfg.size} items)")
    path = rehearse(dataset.items, args.knowledge, args.out, rcfg, tcfg)
    print(f"wrote {path} (+ {meta_path(path).name})")
    return 0
