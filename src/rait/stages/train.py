"""`rait train`: supervised fine-tuning on prompt/completion data with TRL + PEFT.

The recipe is TRL's `SFTTrainer` with `completion_only_loss=True` (the loss covers the completion
tokens only; TRL appends the tokenizer's EOS to every string completion), LoRA through a PEFT
`LoraConfig` or full fine-tuning. Two things are ours:

- **The completion head** (`completion_head=True`, the default). The loss needs logits only where
  a completion token is predicted, so the decoder's hidden states are computed, the positions whose
  shifted label is not -100 are gathered, and only those rows go through the LM head (+ the
  model's final logit soft-capping, Gemma). On a 262k-vocabulary model with QA-length completions
  this skips almost all of the head's work.
- **Per-sample weights.** A row may carry `weight` (default 1). The loss is the weighted mean over
  completion tokens: sum_i w_i * sum_t nll_it / sum_i w_i * n_i, taken over the whole optimiser
  step (all gradient-accumulation micro-batches and all processes). With every weight 1 it is
  exactly TRL's token-mean loss.

Output directory: the merged model (LoRA merged with `merge_and_unload`) or the adapter
(`--no-merge`), or the fully fine-tuned model, + tokenizer + `rait_train.json` (written last: its
presence marks the run complete). Checkpoints go to `OUT/checkpoints` and a re-run resumes from
the newest; the final model is assembled in `OUT/.partial` and moved into place at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import time
from pathlib import Path

from rait import io
from rait import config as config_mod
from rait import models, sft
from rait.config import option
from rait.options import ModelOptions, Overwrite
from rait.errors import RaitError, input_error
from rait.prompts import is_conversation
from rait.stage import Output, folder_output, meta_path, remove

PARTIAL = ".partial"
CHECKPOINTS = "checkpoints"
RUN_MARKER = "rait_run.json"  # in OUT/checkpoints: the fingerprint the checkpoints belong to
DEFAULT_LR = {"lora": 2e-4, "full": 1e-5}
# Options that change how a run is logged or saved, not what it learns: left out of the fingerprint.
NOT_FINGERPRINTED = ("logging_steps", "save_steps", "report_to", "overwrite", "device")
# transformers' schedules that need no options of their own (the others need lr_scheduler_kwargs
# or an evaluation set, and would fail only once training starts)
LR_SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt"]
MAX_SEED = 2**32 - 1  # numpy's limit: the Trainer seeds numpy with it
MAX_WEIGHT = 1_000_000  # weights are relative; far larger ones overflow the float32 loss


@dataclasses.dataclass
class TrainConfig(ModelOptions, Overwrite):
    """The training recipe; the base model's options (model, device, revision, trust_remote_code,
    chat_template) come from ModelOptions."""

    method: str = option("lora", "lora (PEFT adapters) or full fine-tuning", choices=["lora", "full"])
    lora_r: int = option(16, "LoRA rank", at_least=1)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)", above=0)
    lora_dropout: float = option(0.05, "dropout on the LoRA path", at_least=0, below=1)
    target_modules: str = option("all-linear", "LoRA target modules: all-linear or a comma-separated list of names")
    learning_rate: float | None = option(None, "peak learning rate (default 2e-4 for LoRA, 1e-5 for full)",
                                         above=0)
    epochs: float = option(3.0, "training epochs", above=0)
    grad_accum: int = option(1, "gradient accumulation steps (effective batch = batch size x accum x processes)",
                             at_least=1)
    max_length: int = option(512, "truncate prompt+completion to this many tokens", at_least=1)
    warmup_ratio: float = option(0.03, "share of the steps spent warming the learning rate up", at_least=0, below=1)
    weight_decay: float = option(0.0, "AdamW weight decay", at_least=0)
    lr_scheduler: str = option("cosine", "learning-rate schedule (transformers' name)", choices=LR_SCHEDULERS)
    merge: bool = option(True, "save LoRA merged into the base weights (--no-merge keeps the adapter directory)")
    completion_head: bool = option(True, "fast loss: LM head only at completion positions (off = TRL's standard loss)")
    weighting: str = option("relative", "per-sample weights: relative (the loss is the weighted token mean of each "
                                        "optimiser step, so only ratios of weights within a step matter) or absolute "
                                        "(each row's tokens are scaled by its weight over the step's plain token "
                                        "count: a weight of 2 doubles the row's contribution whatever the batch)",
                            choices=["relative", "absolute"])
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    logging_steps: int = option(10, "log the loss every N optimiser steps", at_least=1)
    save_steps: int = option(200, "checkpoint every N optimiser steps (re-runs resume from the newest)", at_least=1)
    report_to: str = option("none", "experiment tracker", choices=["none", "tensorboard", "wandb"])

    def check(self) -> list[str]:
        problems = super().check()
        if self.method == "full" and self.dtype == "float16":
            problems.append("dtype: full fine-tuning of float16 weights is unstable; use bfloat16, float32 or auto")
        if self.seed > MAX_SEED:
            problems.append(f"seed: training needs a seed <= {MAX_SEED} (numpy's limit), got {self.seed}")
        if self.method == "lora" and not lora_targets(self.target_modules):
            problems.append("target_modules: give all-linear or a comma-separated list of module names "
                            "(e.g. q_proj,v_proj)")
        if self.report_to != "none":
            import importlib.util

            if importlib.util.find_spec(self.report_to) is None:
                problems.append(f"report_to: {self.report_to} is not installed (pip install {self.report_to}), "
                                "or use --report-to none")
        return problems


def learning_rate(cfg: TrainConfig) -> float:
    return cfg.learning_rate if cfg.learning_rate is not None else DEFAULT_LR[cfg.method]


def training_dtype(cfg: TrainConfig):
    """The dtype the weights are loaded in for training.

    auto: full fine-tuning keeps float32 weights (AdamW steps of ~1e-5 vanish when added to bf16
    weights, whose spacing near 1 is ~4e-3); LoRA loads the frozen base weights in bf16 where the
    hardware runs it fast (`rait.models.resolve_dtype('auto')`), the adapters stay float32 (PEFT
    upcasts them).
    """
    import torch

    if cfg.dtype != "auto":
        return models.resolve_dtype(cfg.dtype)
    return torch.float32 if cfg.method == "full" else models.resolve_dtype("auto")


def device_arguments(cfg: TrainConfig, dtype) -> dict:
    """TrainingArguments for the device: CPU said explicitly (`trains_on_cpu`), autocast on GPUs
    only (on CPU the weights' dtype decides; TRL would otherwise turn bf16 autocast on by default)."""
    import torch

    if trains_on_cpu(cfg):
        return {"use_cpu": True, "bf16": False, "fp16": False, "dataloader_pin_memory": False}
    if dtype == torch.float16:
        return {"fp16": True}
    if dtype == torch.bfloat16 or cfg.dtype == "auto":
        return {"bf16": torch.cuda.is_bf16_supported()}
    return {}


# ---- data ------------------------------------------------------------------------------------

def check_row(obj: dict, path, line: int) -> dict:
    """A training row {prompt, completion, weight}: strings, or chat message lists (TRL's
    conversational prompt/completion); weight a number in [0, MAX_WEIGHT], 1 when absent."""
    for field in ("prompt", "completion"):
        if field not in obj:
            why = other_format(obj, path) or "a training row needs 'prompt' and 'completion'"
            raise input_error(path, f"missing: {why}",
                              line=line, field=field)
        value = obj[field]
        if not ((isinstance(value, str) and value.strip()) or is_conversation(value)):
            raise input_error(path, "must be a non-empty string or a list of {role, content} messages",
                              line=line, field=field)
    if isinstance(obj["prompt"], str) != isinstance(obj["completion"], str):
        raise input_error(path, "prompt and completion must both be strings or both be message lists",
                          line=line, field="completion")
    weight = obj.get("weight", 1.0)
    if weight is None:
        weight = 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= MAX_WEIGHT:
        raise input_error(path, f"must be a number in [0, {MAX_WEIGHT}] (got {weight!r}); weights are relative, "
                                "1 when absent", line=line, field="weight")
    return {"prompt": obj["prompt"], "completion": obj["completion"], "weight": float(weight)}


def other_format(obj: dict, path) -> str | None:
    """What a row without prompt/completion looks like instead, with what to do about it."""
    rebuild = "rait train reads prompt/completion rows: build the set with `rait build --format trl`"
    if "messages" in obj:
        return f"this is a messages-format row; {rebuild}"
    if "instruction" in obj and "output" in obj:
        return f"this is an alpaca-format row; {rebuild}"
    if "conversation" in obj:
        return f"this is an xtuner-format row; {rebuild}"
    if "question" in obj and any(key in obj for key in ("correctness", "answers", "choices")):
        return ("this is a knowledge table or dataset row, not a RAIT set; make the training set with "
                f"`rait build --knowledge {path} --out set.jsonl` and train on that")
    return None


def load_rows(data: str | Path | list[dict]) -> tuple[list[dict], str]:
    """(validated rows, source name). Rows must all be strings or all be conversational."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise RaitError(f"{path}: no such file (expected a prompt/completion .jsonl from `rait build`)")
        numbered = list(io.read_jsonl(path))
        source = str(path)
    else:
        path, source = "<data>", "<rows>"
        numbered = [(i + 1, obj) for i, obj in enumerate(data)]
        for line, obj in numbered:
            if not isinstance(obj, dict):
                raise input_error(path, "expected a JSON object", line=line)
    rows = [check_row(obj, path, line) for line, obj in numbered]
    if not rows:
        raise RaitError(f"{path}: no training rows (the file is empty); give the .jsonl that `rait build` wrote")
    first_kind = isinstance(rows[0]["prompt"], str)
    for (line, _), row in zip(numbered, rows):
        if isinstance(row["prompt"], str) != first_kind:
            raise input_error(path, "mixes plain-text and chat-message rows", line=line, field="prompt")
    if sum(row["weight"] for row in rows) <= 0:
        raise input_error(path, "is 0 on every row: nothing to learn", field="weight")
    return rows, source


def is_chat_data(rows: list[dict]) -> bool:
    return not isinstance(rows[0]["prompt"], str)


def data_fingerprint(data: str | Path | list[dict], rows: list[dict]) -> str:
    return io.file_fingerprint(data) if isinstance(data, (str, Path)) else io.fingerprint(rows)


def read_prompt_format(data) -> dict | None:
    """The prompt format `rait build` recorded in FILE.meta.json, if any."""
    if not isinstance(data, (str, Path)):
        return None
    meta = meta_path(data)
    if not meta.is_file():
        return None
    info = io.read_json(meta)
    found = info.get("prompt_format") if isinstance(info, dict) else None
    if found is not None and not isinstance(found, dict):
        raise input_error(meta, f"must be an object {{task, style, template}}, got {found!r}; build the set "
                                "again with `rait build`", field="prompt_format")
    return found


# ---- output directory ------------------------------------------------------------------------

def run_fingerprint(cfg: TrainConfig, data_fp: str, prompt_format: dict | None) -> str:
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    return io.fingerprint({"recipe": recipe, "learning_rate": learning_rate(cfg), "data": data_fp,
                           "prompt_format": prompt_format})


def train_output(out_dir: str | Path) -> Output:
    """OUT as a stage output: the model files its marker rait_train.json lists (the marker is
    written last), with the checkpoints and the staging folder as the partial work."""
    out_dir = Path(out_dir)
    output = folder_output(out_dir, models.TRAIN_INFO, partials=[out_dir / PARTIAL, out_dir / CHECKPOINTS])
    output.companions = [out_dir / name for name in listed_files(output.recorded())]
    return output


def listed_files(record: dict | None) -> list[str]:
    """The file names a marker lists; none when it lists something that is not a plain name."""
    files = (record or {}).get("files")
    if not isinstance(files, list) or not all(is_plain_name(name) for name in files):
        return []
    return files


def is_plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def run_marker(output: Output) -> Path:
    return output.path / CHECKPOINTS / RUN_MARKER


def run_record(output: Output) -> dict | None:
    """The checkpoints' marker {fingerprint, publishing}: which run they belong to."""
    record = folder_output(run_marker(output).parent, RUN_MARKER).recorded()
    return record if record is not None and isinstance(record.get("fingerprint"), str) else None


def record_run(output: Output, fp: str, publishing: list[str] | None = None) -> None:
    """Mark the checkpoints as this run's; `publishing` names the files about to be moved into
    OUT, so that a publish cut short is still recognised as this stage's own output."""
    record = {"fingerprint": fp} if publishing is None else {"fingerprint": fp, "publishing": publishing}
    io.write_json_atomic(run_marker(output), record)


def check_out_dir(output: Output, data) -> None:
    """OUT must be (or become) a writable folder that is not an input."""
    out = output.path
    inputs = [data] if isinstance(data, (str, Path)) else []
    if out.exists() and not out.is_dir():
        if any(Path(given).exists() and out.samefile(given) for given in inputs):
            raise RaitError(f"{out}: is the training data; rait never overwrites its inputs: give --out a new "
                            "folder for the model")
        raise RaitError(f"{out}: exists and is not a folder; --out names the folder the model is written to")
    io.check_output_path(output.marker, inputs)
    existing = next(folder for folder in [out, *out.absolute().parents] if folder.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RaitError(f"{out}: cannot write here ({existing} is not writable); choose another --out")


def damaged_marker(output: Output) -> str | None:
    """Why OUT's rait_train.json, when there is one, is not a record rait train wrote."""
    if not output.marker.exists():
        return None
    try:
        record = io.read_json(output.marker)
    except RaitError as exc:
        return str(exc)
    if not isinstance(record, dict):
        return f"{output.marker}: expected a JSON object, got {type(record).__name__}"
    if "files" in record and not listed_files(record):
        return f"{output.marker}, field 'files': expected the list of the model's file names"
    return None


def foreign_entries(output: Output) -> list[str]:
    """What is in OUT that this stage did not write (rait train never replaces or deletes it)."""
    if not output.path.is_dir():
        return []
    ours = {p.name for p in [output.marker, *output.companions, *output.partials]}
    ours |= set(listed_files({"files": (run_record(output) or {}).get("publishing")}))
    return sorted(p.name for p in output.path.iterdir() if p.name not in ours)


def prepare_out_dir(output: Output, fp: str, overwrite: bool) -> str:
    """'complete' if OUT already holds this run, else make it ready: 'resume' (checkpoints of
    this run are there) or 'fresh'. --overwrite clears what an earlier run left, and only that."""
    out = output.path
    if output.finished(fp) and not overwrite:
        return "complete"
    damaged = damaged_marker(output)
    if damaged:
        raise RaitError(f"{damaged}; {out} is a damaged `rait train` output: delete it or choose another --out")
    done = output.recorded()
    if done is not None and not overwrite:
        if done.get("fingerprint") == fp:
            missing = [p.name for p in output.companions if not p.exists()]
            raise RaitError(f"{out}: is incomplete ({', '.join(missing[:3])} missing); use --overwrite to "
                            "train again")
        raise RaitError(f"{out}: holds a model trained on other data or settings "
                        f"(fingerprint {done.get('fingerprint')} != {fp}); use --overwrite or another --out")
    run = run_record(output)
    checkpoints = out / CHECKPOINTS
    if not overwrite and run is None and any(checkpoints.glob("checkpoint-*")):
        raise RaitError(f"{run_marker(output)}: missing or damaged, so the checkpoints beside it cannot be "
                        "told to be this run's; use --overwrite to start over")
    if not overwrite and run is not None and run["fingerprint"] != fp:
        raise RaitError(f"{checkpoints}: checkpoints of a run with other data or settings; "
                        "use --overwrite to start over")
    foreign = foreign_entries(output)
    if foreign:
        raise RaitError(f"{out}: exists and is not a `rait train` output ({', '.join(foreign[:3])} ...); "
                        "choose an empty or new --out")
    if overwrite:
        output.clear()
        return "fresh"
    return "resume" if run is not None else "fresh"


def settle_out_dir(output: Output, fp: str, overwrite: bool, state) -> str:
    """prepare_out_dir on the main process; the others read its verdict from disk."""
    status = prepare_out_dir(output, fp, overwrite) if state.is_main_process else None
    state.wait_for_everyone()
    if status is None:
        status = "complete" if output.finished(fp) else "resume"
    return status


@contextlib.contextmanager
def removed_unless_resumable(output: Output, state):
    """A run that fails before its first checkpoint (a broken model folder, chat data for a
    model without a chat template) leaves nothing behind: what it created in OUT is removed.
    With a checkpoint saved, OUT stays as it is, for the next run to resume from."""
    created = [path for path in (output.path, output.path / CHECKPOINTS) if not path.exists()]
    try:
        yield
    except BaseException:
        if state.is_main_process and created and not any((output.path / CHECKPOINTS).glob("checkpoint-*")):
            remove(created[0])  # OUT itself when this run made it, else its checkpoints folder
        raise


def publish(final: Path, output: Output, info: dict) -> None:
    """Move the finished model into OUT; rait_train.json (listing its files) goes last and marks
    it complete, then the checkpoints and the staging folder are removed."""
    files = sorted(p.name for p in final.iterdir())
    record_run(output, info["fingerprint"], publishing=files)
    for name in files:
        remove(output.path / name)
        os.replace(final / name, output.path / name)
    output.finish({**info, "files": files})


def select_device(device: str) -> None:
    """Make `device` the one the Trainer uses. The Trainer has no device argument: CPU is its
    `use_cpu` (set in `sft_config`), and a single process trains on the first visible GPU (all of
    them, through DataParallel, when several are visible) — so `cuda:N` hides the other GPUs.
    Several processes (accelerate launch, torchrun) get one GPU each from the launcher."""
    import torch

    models.resolve_device(device)  # a device that is not there is a clear error
    if device.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        if torch.cuda.is_initialized():
            raise RaitError(f"train.device {device}: CUDA is already in use in this process; "
                            f"set CUDA_VISIBLE_DEVICES={device.split(':')[1]} instead")
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]


# ---- training ----------------------------------------------------------------------------------

ACCELERATE_CONFIGS = ("deepspeed_zero2", "deepspeed_zero3", "fsdp")


def accelerate_config(name: str) -> Path:
    """Path of a bundled `accelerate launch --config_file` for several GPUs."""
    if name not in ACCELERATE_CONFIGS:
        raise RaitError(f"unknown accelerate config {name!r} (choose {', '.join(ACCELERATE_CONFIGS)})")
    return Path(__file__).parent.parent / "accelerate" / f"{name}.yaml"


def lora_targets(target_modules: str) -> str | list[str]:
    """PEFT's target_modules: "all-linear", or the list of names in "q_proj, v_proj"."""
    if target_modules.strip() == "all-linear":
        return "all-linear"
    return [name.strip() for name in target_modules.split(",") if name.strip()]


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def warmup_steps(cfg: TrainConfig, n_rows: int) -> int:
    """Warm-up length in optimiser steps, rounded down: a run of a handful of steps gets none
    (rounding up would spend its only step at learning rate 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = math.ceil(n_rows / (cfg.batch_size * cfg.grad_accum * world))
    return int(cfg.warmup_ratio * math.ceil(per_epoch * cfg.epochs))


def trains_on_cpu(cfg: TrainConfig) -> bool:
    """CPU training: asked for (train.device cpu), or no accelerator here. Said explicitly (the
    Trainer's use_cpu, accelerate's PartialState(cpu=True)) because under torchrun / `accelerate
    launch` transformers picks CPU data parallelism (gloo) only then: otherwise every process
    trains alone on all the data and writes the same output."""
    import torch

    if cfg.device == "cpu":
        return True
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.current_accelerator() is None if accelerator else not torch.cuda.is_available()


def checkpointing_argument(on: bool) -> dict:
    """transformers renamed gradient_checkpointing to activation_checkpointing (5.2x); vLLM's builds
    pin older releases, so the name this one knows is used."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def sft_config(cfg: TrainConfig, checkpoints: Path, dtype, progress: bool, n_rows: int):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints), seed=cfg.seed, data_seed=cfg.seed,
        learning_rate=learning_rate(cfg), num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length, warmup_steps=warmup_steps(cfg, n_rows), weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, **checkpointing_argument(cfg.gradient_checkpointing),
        completion_only_loss=True, logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        disable_tqdm=not progress, dataset_num_proc=None, **device_arguments(cfg, dtype))


def make_trainer(cfg: TrainConfig, rows: list[dict], base_path: str, checkpoints: Path, progress: bool, *,
                 source: str = "the training data"):
    """The SFTTrainer for this recipe (ours with the completion head, TRL's otherwise). `source`
    names the rows' file in errors about them."""
    import datasets
    from trl import SFTTrainer

    if not cfg.completion_head and any(row.get("weight", 1.0) != 1.0 for row in rows):
        raise RaitError("per-sample weights need the completion-head loss (drop --no-completion-head)")
    dtype = training_dtype(cfg)
    args = sft_config(cfg, checkpoints, dtype, progress, len(rows))  # before the model: DeepSpeed ZeRO-3 partitions at load
    tokenizer = models.load_tokenizer(base_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                      chat_template=cfg.chat_template)
    check_chat_template(rows, tokenizer, source, base_path)
    model = load_base_model(base_path, cfg, dtype)
    if cfg.method == "lora":
        check_lora_targets(model, cfg.target_modules, base_path)
    kwargs = dict(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                  peft_config=lora_config(cfg) if cfg.method == "lora" else None)
    if cfg.completion_head:
        trainer = sft.completion_trainer_class()(data_collator=sft.weighted_collator(tokenizer.pad_token_id),
                                                 **kwargs)
        trainer.absolute_weights = cfg.weighting == "absolute"
    else:
        trainer = SFTTrainer(**kwargs)
    trainer.rait_row_counts = check_rows_kept(trainer, len(rows), source, cfg.max_length)
    return trainer


def check_chat_template(rows: list[dict], tokenizer, source: str, base_path: str) -> None:
    if is_chat_data(rows) and not tokenizer.chat_template:
        raise RaitError(f"{source}: the rows are chat conversations, but the model {base_path} has no chat template "
                        "(a base model); pass --chat-template (a Jinja file, or gemma), train an instruct model, "
                        "or build plain-text rows (rait build --template plain)")


def load_base_model(base_path: str, cfg: TrainConfig, dtype):
    """The weights to train, in `dtype`; a folder the libraries cannot load is one error naming it."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype,
                                                    **models.hub_kwargs(base_path, cfg.revision, cfg.trust_remote_code))
    except Exception as exc:  # noqa: BLE001 - whatever a library raises on a broken model folder
        raise models.load_error("the weights", base_path, exc) from None


def check_lora_targets(model, target_modules: str, base_path: str) -> None:
    """Every named LoRA target is a module of the model (PEFT matches a name as a suffix)."""
    targets = lora_targets(target_modules)
    if targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if type(module).__name__ == "Linear"})
        raise RaitError(f"train.target_modules: {', '.join(missing)} is not a module of {base_path}; use "
                        f"all-linear or names among its linear layers ({', '.join(linear[:12])})")


def check_rows_kept(trainer, n_rows: int, source: str, max_length: int) -> dict:
    """TRL cuts every row to max_length tokens while it prepares the data, and drops a row whose
    completion is cut off entirely; none left is an error. Both kinds are counted (recorded in
    rait_train.json) and said before training starts."""
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise RaitError(f"{source}: every row's completion lies beyond --max-length {max_length} tokens; "
                        "raise --max-length")
    at_limit = sum(len(ids) >= max_length for ids in trainer.train_dataset["input_ids"])
    if kept < n_rows:
        print(f"rait train: warning: {n_rows - kept} of {n_rows} rows lose their whole completion to --max-length "
              f"{max_length} and are left out", flush=True)
    if at_limit:
        print(f"rait train: warning: {at_limit} of {kept} rows reach --max-length {max_length} tokens, so their "
              "completion may be cut short; raise --max-length to train on them whole", flush=True)
    return {"dropped_beyond_max_length": n_rows - kept, "at_max_length": at_limit}


def planned_steps(n_rows: int, cfg: TrainConfig, world_size: int = 1) -> int:
    batches = math.ceil(n_rows / (cfg.batch_size * world_size))
    return math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum))


def loss_history(trainer) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def train_sft(data: str | Path | list[dict], out_dir: str | Path, cfg: TrainConfig, *,
              prompt_format: dict | None = None, progress: bool = True) -> Path:
    """`rait train` and the run's train stage: prompt/completion rows (a file, or rows) in, the
    tuned model folder out; returns it.

    Resumes from OUT/checkpoints; returns at once when OUT already holds this exact run.
    Every process of an `accelerate launch` calls this; only the main one writes the output.
    """
    from accelerate import PartialState

    config_mod.check_values(cfg, "train")
    output = train_output(out_dir)
    check_out_dir(output, data)
    rows, source = load_rows(data)
    prompt_format = prompt_format if prompt_format is not None else read_prompt_format(data)
    data_fp = data_fingerprint(data, rows)
    fp = run_fingerprint(cfg, data_fp, prompt_format)
    state = PartialState(cpu=trains_on_cpu(cfg))
    if settle_out_dir(output, fp, cfg.overwrite, state) == "complete":
        if state.is_main_process:
            print(f"rait train: {output.path} is already complete (fingerprint {fp}); nothing to do")
        return output.path

    base_spec = cfg.model or models.DEFAULT_MODEL
    base_path = models.resolve_model(cfg.model, revision=cfg.revision)
    select_device(cfg.device)
    if state.is_main_process:
        print_plan(cfg, base_spec, source, len(rows), output.path, state.num_processes)
    started = time.time()
    with removed_unless_resumable(output, state):
        trainer = make_trainer(cfg, rows, base_path, output.path / CHECKPOINTS, progress, source=source)
        start_run(output, fp, state)
        run_training(trainer, output, state)
    final = save_trained_model(trainer, cfg, base_spec, base_path, output, state)
    if state.is_main_process:
        info = train_info(cfg, trainer, base_spec, base_path, prompt_format, source, data_fp, len(rows), fp,
                          started, state.num_processes)
        publish(final, output, info)
        print(format_summary(info, output.path))
    state.wait_for_everyone()
    return output.path


def start_run(output: Output, fp: str, state) -> None:
    """Mark the checkpoints as this run's (so a re-run resumes only its own) and drop a staging
    folder an interrupted publish left."""
    if state.is_main_process:
        record_run(output, fp)
        remove(output.path / PARTIAL)
    state.wait_for_everyone()


def run_training(trainer, output: Output, state) -> None:
    """Train, from the newest checkpoint when there is one."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = output.path / CHECKPOINTS
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last and state.is_main_process:
        print(f"rait train: resuming from {Path(last).name}")
    trainer.train(resume_from_checkpoint=last)


def save_trained_model(trainer, cfg: TrainConfig, base_spec: str, base_path: str, output: Output, state) -> Path:
    """Save the trained model into the staging folder; returns the folder to publish: the
    adapter, the adapter merged into the base weights, or the fully fine-tuned model."""
    staging = output.path / PARTIAL
    trained = staging / ("adapter" if cfg.method == "lora" else "model")
    trainer.save_model(str(trained))  # gathers ZeRO-3 / FSDP shards; writes on the main process
    state.wait_for_everyone()
    if cfg.method != "lora" or not state.is_main_process:
        return trained
    # a base stock PEFT can load: the hub id, or the absolute path of a local base
    models.record_adapter_base(trained, models.adapter_base_reference(base_spec, base_path), revision=cfg.revision)
    if not cfg.merge:
        return trained
    from transformers import AutoTokenizer

    merged = staging / "merged"
    models.save_merged_adapter(trained, base_path, merged, AutoTokenizer.from_pretrained(str(trained)),
                               revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    return merged


def train_info(cfg, trainer, base_spec, base_path, prompt_format, source, data_fp, n_rows, fp, started,
               num_processes) -> dict:
    history = loss_history(trainer)
    final_loss = history[-1][1] if history else None
    output = "full" if cfg.method == "full" else ("merged" if cfg.merge else "adapter")
    recipe = {**dataclasses.asdict(cfg), "learning_rate": learning_rate(cfg)}
    return {"base_model": base_spec, "base_path": base_path, "prompt_format": prompt_format,
            "recipe": recipe, "dtype": str(training_dtype(cfg)).replace("torch.", ""), "output": output,
            "data": {"source": source, "fingerprint": data_fp, "rows": n_rows,
                     **getattr(trainer, "rait_row_counts", {})},
            "fingerprint": fp, "steps": trainer.state.global_step, "processes": num_processes,
            "first_loss": history[0][1] if history else None, "final_loss": final_loss,
            "losses": history, "versions": io.package_versions(
                ("rait", "torch", "transformers", "trl", "peft", "datasets", "accelerate")),
            "timing": {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                       "seconds": round(time.time() - started, 1)}}


# ---- CLI ---------------------------------------------------------------------------------------

def print_plan(cfg: TrainConfig, base_spec: str, source: str, n_rows: int, out_dir: Path, processes: int) -> None:
    effective = cfg.batch_size * cfg.grad_accum * processes
    method = (f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} on {cfg.target_modules}"
              if cfg.method == "lora" else "full fine-tuning")
    loss = "completion head" if cfg.completion_head else "TRL standard"
    print(f"rait train: {base_spec} <- {source} ({n_rows} rows) -> {out_dir}\n"
          f"  {method}, lr {learning_rate(cfg):g} ({cfg.lr_scheduler}), {cfg.epochs:g} epochs, "
          f"~{planned_steps(n_rows, cfg, processes)} steps, effective batch {effective} "
          f"({cfg.batch_size} x {cfg.grad_accum} accum x {processes} processes)\n"
          f"  dtype {cfg.dtype} -> {str(training_dtype(cfg)).replace('torch.', '')}, loss: {loss} "
          f"over completion tokens, seed {cfg.seed}", flush=True)


def format_summary(info: dict, out_dir: Path) -> str:
    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    return (f"rait train: done in {info['timing']['seconds']:.0f} s, {info['steps']} steps; loss "
            f"{fmt(info['first_loss'])} (first) -> {fmt(info['final_loss'])} (last)\n"
            f"  wrote {info['output']} model to {out_dir} (+ {models.TRAIN_INFO}); "
            f"use it with --model {out_dir}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="prompt/completion .jsonl (from `rait build`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    parser.add_argument("--config", metavar="YAML", help="YAML file whose `train` section sets these options")
    config_mod.add_arguments(parser, TrainConfig)


def read_yaml_section(path: str | Path) -> dict:
    """The `train` section of a YAML file ({} when it has none); any problem names the file."""
    section = config_mod.read_yaml(path).get("train", {})
    if not isinstance(section, dict):
        raise RaitError(f"{path}: expected a mapping with a `train` section")
    return section


def build_config(section: dict, cli: dict, yaml_path: str | None) -> TrainConfig:
    """TrainConfig from the YAML section < the flags; a problem with a value the YAML file set
    names the file."""
    try:
        return config_mod.build(TrainConfig, section, cli, where="train")
    except RaitError as exc:
        from_yaml = set(section) - set(cli)
        lines = [f"{yaml_path}: {line}" if yaml_path and problem_key(line) in from_yaml else line
                 for line in str(exc).splitlines()]
        raise RaitError("\n".join(lines)) from None


def problem_key(line: str) -> str | None:
    """The key a config.build problem line is about: `train.KEY: ...` or `train: unknown key 'KEY'`."""
    match = re.match(r"train(?:\.(\w+)|: unknown key '([^']*)')", line)
    return (match.group(1) or match.group(2)) if match else None


def run(args: argparse.Namespace) -> int:
    section = read_yaml_section(args.config) if args.config else {}
    cli = {k: v for k, v in vars(args).items() if k not in ("data", "out", "config", "verb")}
    cfg = build_config(section, cli, args.config)
    train_sft(args.data, args.out, cfg, progress=True)
    return 0
