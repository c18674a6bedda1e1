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
import dataclasses
import functools
import math
import os
import shutil
import time
import types
from pathlib import Path

from rait import io
from rait import config as config_mod
from rait import models
from rait.config import option
from rait.errors import RaitError, input_error
from rait.prompts import is_conversation

PARTIAL = ".partial"
CHECKPOINTS = "checkpoints"
RUN_MARKER = "rait_run.json"  # in OUT/checkpoints: the fingerprint the checkpoints belong to
DEFAULT_LR = {"lora": 2e-4, "full": 1e-5}
# Options that change how a run is logged or saved, not what it learns: left out of the fingerprint.
NOT_FINGERPRINTED = ("logging_steps", "save_steps", "report_to", "overwrite", "device")


@dataclasses.dataclass
class TrainConfig(models.ModelOptions):
    """The training recipe; the base model's options (model, device, revision, trust_remote_code,
    chat_template) come from ModelOptions."""

    dtype: str = option("auto", "weights dtype for training; auto = bfloat16 LoRA base weights where the hardware "
                        "runs bf16 fast, float32 for full fine-tuning (mixed bf16 precision on GPUs)",
                        choices=["auto", "float32", "bfloat16", "float16"])
    method: str = option("lora", "lora (PEFT adapters) or full fine-tuning", choices=["lora", "full"])
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA path")
    target_modules: str = option("all-linear", "LoRA target modules: all-linear or a comma-separated list of names")
    learning_rate: float | None = option(None, "peak learning rate (default 2e-4 for LoRA, 1e-5 for full)")
    epochs: float = option(3.0, "training epochs")
    batch_size: int = option(8, "per-device micro-batch size")
    grad_accum: int = option(1, "gradient accumulation steps (effective batch = batch size x accum x processes)")
    max_length: int = option(512, "truncate prompt+completion to this many tokens")
    warmup_ratio: float = option(0.03, "share of the steps spent warming the learning rate up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lr_scheduler: str = option("cosine", "learning-rate schedule (any transformers scheduler name)")
    seed: int = option(0, "seed for adapter init, dropout and data order")
    merge: bool = option(True, "save LoRA merged into the base weights (--no-merge keeps the adapter directory)")
    completion_head: bool = option(True, "fast loss: LM head only at completion positions (off = TRL's standard loss)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    logging_steps: int = option(10, "log the loss every N optimiser steps")
    save_steps: int = option(200, "checkpoint every N optimiser steps (re-runs resume from the newest)")
    report_to: str = option("none", "experiment tracker", choices=["none", "tensorboard", "wandb"])
    overwrite: bool = option(False, "discard an existing output or checkpoints made from other data or settings")


def check_config(cfg: TrainConfig) -> None:
    """Every out-of-range value at once, before any model loads."""
    problems = models.model_option_problems(cfg, "train")
    positive = {"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_length": cfg.max_length,
                "logging_steps": cfg.logging_steps, "save_steps": cfg.save_steps}
    problems += [f"train.{name}: must be > 0 (got {value})" for name, value in positive.items() if value <= 0]
    if cfg.learning_rate is not None and cfg.learning_rate <= 0:
        problems.append(f"train.learning_rate: must be > 0 (got {cfg.learning_rate})")
    if not 0 <= cfg.lora_dropout < 1:
        problems.append(f"train.lora_dropout: must be in [0, 1) (got {cfg.lora_dropout})")
    if not 0 <= cfg.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio: must be in [0, 1) (got {cfg.warmup_ratio})")
    if cfg.weight_decay < 0:
        problems.append(f"train.weight_decay: must be >= 0 (got {cfg.weight_decay})")
    if cfg.method == "full" and cfg.dtype == "float16":
        problems.append("train.dtype: full fine-tuning of float16 weights is unstable; use bfloat16, float32 or auto")
    if problems:
        raise RaitError("\n".join(problems))


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
    conversational prompt/completion); weight a number >= 0, 1 when absent."""
    for field in ("prompt", "completion"):
        if field not in obj:
            raise input_error(path, "missing (a training row needs 'prompt' and 'completion')", line=line, field=field)
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
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise input_error(path, f"must be a finite number >= 0 (got {weight!r})", line=line, field="weight")
    return {"prompt": obj["prompt"], "completion": obj["completion"], "weight": float(weight)}


def load_rows(data: str | Path | list[dict]) -> tuple[list[dict], str]:
    """(validated rows, source name). Rows must all be strings or all be conversational."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
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
        raise RaitError(f"{path}: no training rows")
    first_kind = isinstance(rows[0]["prompt"], str)
    for (line, _), row in zip(numbered, rows):
        if isinstance(row["prompt"], str) != first_kind:
            raise input_error(path, "mixes plain-text and chat-message rows", line=line, field="prompt")
    if sum(row["weight"] for row in rows) <= 0:
        raise input_error(path, "is 0 on every row: nothing to learn", field="weight")
    return rows, source


def data_fingerprint(data: str | Path | list[dict], rows: list[dict]) -> str:
    return io.file_fingerprint(data) if isinstance(data, (str, Path)) else io.fingerprint(rows)


def read_prompt_format(data) -> dict | None:
    """The prompt format `rait build` recorded in FILE.meta.json, if any."""
    if not isinstance(data, (str, Path)):
        return None
    meta = Path(data).with_name(Path(data).name + ".meta.json")
    if not meta.exists():
        return None
    info = io.read_json(meta)
    return info.get("prompt_format") if isinstance(info, dict) else None


# ---- the completion head -----------------------------------------------------------------------

def completion_nll(hidden, labels, lm_head, softcap: float | None = None):
    """Next-token NLL at completion positions only.

    hidden (B, T, H) decoder output; labels (B, T) with -100 where no loss is taken.
    Returns nll (N,) for the N positions whose shifted label is kept, and their mask (B, T-1).
    """
    import torch
    import torch.nn.functional as F

    targets = labels[:, 1:]  # position t predicts token t+1
    mask = targets != -100
    picked = hidden[:, :-1][mask]  # (N, H)
    logits = lm_head(picked).float()  # (N, V): the head runs only here (a module call, so ZeRO-3 can gather it)
    if softcap:  # Gemma: logits -> cap * tanh(logits / cap), as the model's own forward does
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets[mask], reduction="none"), mask


def add_completion_head(causal_lm) -> None:
    """Let `causal_lm(..., completion_labels=labels)` return `completion_nll(...)` instead of logits.

    The forward is patched (as TRL patches its own fused head) rather than the modules called from
    outside, so the call still goes through PEFT, DDP, FSDP and DeepSpeed wrappers. Without
    `completion_labels` the original forward runs, so generation is unchanged.
    """
    inner_forward = causal_lm.forward
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)

    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args, completion_labels=None, **kwargs):
        if completion_labels is None:
            return inner_forward(*args, **kwargs)
        # PEFT passes labels=None, return_dict=None, ...: the decoder needs none of them
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "labels"}
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state  # the decoder, without the LM head
        return completion_nll(hidden, completion_labels, self.get_output_embeddings(), softcap)

    causal_lm.forward = types.MethodType(forward, causal_lm)


def completion_weight_total(labels, weights):
    """sum_i w_i * n_i: the weighted count of completion tokens (n_i counted on shifted labels)."""
    counts = (labels[:, 1:] != -100).sum(dim=1)
    return (counts.to(weights.dtype) * weights).sum()


def weighted_token_loss(nll, mask, weights, denominator=None):
    """sum_i w_i * sum_t nll_it / denominator (default sum_i w_i * n_i: the weighted token mean)."""
    import torch

    token_weights = weights.to(nll.dtype)[:, None].expand(mask.shape)[mask]  # (N,)
    total = (nll * token_weights).sum()
    if denominator is None:
        denominator = token_weights.sum()
    # clamped so that a batch of zero-weight rows gives a finite zero, not 0 / 0
    return total / torch.as_tensor(denominator, dtype=total.dtype, device=total.device).clamp(min=1e-8)


@functools.cache
def completion_trainer_class():
    """`SFTTrainer` with the completion-head loss and per-sample weights (built on first use so that
    importing this module does not import TRL)."""
    import torch
    from trl import SFTTrainer

    class CompletionHeadSFTTrainer(SFTTrainer):
        # The loss below is already normalised by the whole step's weighted token count.
        loss_is_scaled_for_ga = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            add_completion_head(model)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "weight" not in self._signature_columns:  # keep the per-sample weight for the collator
                self._signature_columns = [*self._signature_columns, "weight"]

        def _get_num_items_in_batch(self, batch_samples, device):
            if not batch_samples:
                return None
            total = sum(completion_weight_total(b["labels"], b["sample_weight"]) for b in batch_samples)
            total = torch.as_tensor(total, dtype=torch.float32, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                total = self.accelerator.gather(total).sum()
            return total

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights, labels = inputs.pop("sample_weight"), inputs.pop("labels")
            nll, mask = model(**inputs, completion_labels=labels)
            loss = weighted_token_loss(nll, mask, weights, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
            return (loss, None) if return_outputs else loss

    return CompletionHeadSFTTrainer


def weighted_collator(pad_token_id: int):
    """TRL's collator + a `sample_weight` tensor (B,) from each row's `weight`."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def collate(examples: list[dict]) -> dict:
        batch = base(examples)
        batch["sample_weight"] = torch.tensor([float(ex.get("weight", 1.0)) for ex in examples])
        return batch

    return collate


# ---- output directory ------------------------------------------------------------------------

def run_fingerprint(cfg: TrainConfig, data_fp: str, prompt_format: dict | None) -> str:
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    return io.fingerprint({"recipe": recipe, "learning_rate": learning_rate(cfg), "data": data_fp,
                           "prompt_format": prompt_format})


def completed_info(out_dir: Path) -> dict | None:
    info_path = out_dir / models.TRAIN_INFO
    return io.read_json(info_path) if info_path.exists() else None


def prepare_out_dir(out_dir: Path, fp: str, overwrite: bool) -> str:
    """'complete' if out_dir already holds this run, else make it ready ('resume' or 'fresh')."""
    done = completed_info(out_dir)
    if done is not None and done.get("fingerprint") == fp and not overwrite:
        return "complete"
    if done is not None and not overwrite:
        raise RaitError(f"{out_dir}: holds a model trained on other data or settings "
                        f"(fingerprint {done.get('fingerprint')} != {fp}); use --overwrite or another --out")
    marker = out_dir / CHECKPOINTS / RUN_MARKER
    if marker.exists() and not overwrite and io.read_json(marker).get("fingerprint") != fp:
        raise RaitError(f"{out_dir / CHECKPOINTS}: checkpoints of a run with other data or settings; "
                        "use --overwrite to start over")
    if overwrite:
        remove_outputs(out_dir, done)
    elif done is None and out_dir.exists() and _foreign_entries(out_dir):
        raise RaitError(f"{out_dir}: exists and is not a `rait train` output "
                        f"({', '.join(sorted(_foreign_entries(out_dir))[:3])} ...); choose an empty or new --out")
    return "resume" if marker.exists() else "fresh"


def _foreign_entries(out_dir: Path) -> list[str]:
    return [p.name for p in out_dir.iterdir() if p.name not in (CHECKPOINTS, PARTIAL)]


def remove_outputs(out_dir: Path, done: dict | None) -> None:
    """Delete what rait train wrote here (never anything else)."""
    for name in [CHECKPOINTS, PARTIAL, *((done or {}).get("files") or []), models.TRAIN_INFO]:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def publish(staging: Path, out_dir: Path, info: dict) -> None:
    """Move the finished model into out_dir; rait_train.json goes last and marks it complete."""
    files = sorted(p.name for p in staging.iterdir())
    for name in files:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    io.write_json_atomic(out_dir / models.TRAIN_INFO, {**info, "files": files})
    shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)


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
    return Path(__file__).parent / "accelerate" / f"{name}.yaml"


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else \
        [name.strip() for name in cfg.target_modules.split(",") if name.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


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


def make_trainer(cfg: TrainConfig, rows: list[dict], base_path: str, checkpoints: Path, progress: bool):
    """The SFTTrainer for this recipe (ours with the completion head, TRL's otherwise)."""
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    dtype = training_dtype(cfg)
    args = sft_config(cfg, checkpoints, dtype, progress, len(rows))  # before the model: DeepSpeed ZeRO-3 partitions at load
    tokenizer = models.load_tokenizer(base_path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                      chat_template=cfg.chat_template)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype,
                                                 **models.hub_kwargs(base_path, cfg.revision, cfg.trust_remote_code))
    dataset = datasets.Dataset.from_list(rows)
    kwargs = dict(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=lora_config(cfg) if cfg.method == "lora" else None)
    if cfg.completion_head:
        return completion_trainer_class()(data_collator=weighted_collator(tokenizer.pad_token_id), **kwargs)
    if any(row.get("weight", 1.0) != 1.0 for row in rows):
        raise RaitError("per-sample weights need the completion-head loss (drop --no-completion-head)")
    return SFTTrainer(**kwargs)


def planned_steps(n_rows: int, cfg: TrainConfig, world_size: int = 1) -> int:
    batches = math.ceil(n_rows / (cfg.batch_size * world_size))
    return math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum))


def loss_history(trainer) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def train_sft(data: str | Path | list[dict], out_dir: str | Path, cfg: TrainConfig, *,
              prompt_format: dict | None = None, progress: bool = True) -> Path:
    """Fine-tune `cfg.model` on prompt/completion rows; return the output directory.

    Resumes from OUT/checkpoints; returns at once when OUT already holds this exact run.
    Every process of an `accelerate launch` calls this; only the main one writes the output.
    """
    from accelerate import PartialState
    from transformers.trainer_utils import get_last_checkpoint

    check_config(cfg)
    out_dir = Path(out_dir)
    rows, source = load_rows(data)
    prompt_format = prompt_format if prompt_format is not None else read_prompt_format(data)
    data_fp = data_fingerprint(data, rows)
    fp = run_fingerprint(cfg, data_fp, prompt_format)
    state = PartialState(cpu=trains_on_cpu(cfg))
    status = prepare_out_dir(out_dir, fp, cfg.overwrite) if state.is_main_process else None
    state.wait_for_everyone()
    if status is None:  # other processes read the main one's verdict from disk
        status = "complete" if (completed_info(out_dir) or {}).get("fingerprint") == fp else "resume"
    if status == "complete":
        if state.is_main_process:
            print(f"rait train: {out_dir} is already complete (fingerprint {fp}); nothing to do")
        return out_dir

    base_spec = cfg.model or models.DEFAULT_MODEL
    base_path = models.resolve_model(cfg.model, revision=cfg.revision)
    select_device(cfg.device)
    checkpoints = out_dir / CHECKPOINTS
    if state.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        io.write_json_atomic(checkpoints / RUN_MARKER, {"fingerprint": fp})
        print_plan(cfg, base_spec, source, len(rows), out_dir, state.num_processes)
    state.wait_for_everyone()

    started = time.time()
    trainer = make_trainer(cfg, rows, base_path, checkpoints, progress)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last and state.is_main_process:
        print(f"rait train: resuming from {Path(last).name}")
    trainer.train(resume_from_checkpoint=last)

    staging = out_dir / PARTIAL
    trained = staging / ("adapter" if cfg.method == "lora" else "model")
    trainer.save_model(str(trained))  # gathers ZeRO-3 / FSDP shards; writes on the main process
    state.wait_for_everyone()
    if state.is_main_process:
        final = trained
        if cfg.method == "lora":
            # a base stock PEFT can load: the hub id, or the absolute path of a local base
            models.record_adapter_base(trained, models.adapter_base_reference(base_spec, base_path),
                                       revision=cfg.revision)
            if cfg.merge:
                final = staging / "merged"
                from transformers import AutoTokenizer

                models.save_merged_adapter(trained, base_path, final, AutoTokenizer.from_pretrained(str(trained)),
                                           revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        info = train_info(cfg, trainer, base_spec, base_path, prompt_format, source, data_fp, len(rows), fp,
                          started, state.num_processes)
        publish(final, out_dir, info)
        print(format_summary(info, out_dir))
    state.wait_for_everyone()
    return out_dir


def train_info(cfg, trainer, base_spec, base_path, prompt_format, source, data_fp, n_rows, fp, started,
               num_processes) -> dict:
    history = loss_history(trainer)
    final_loss = history[-1][1] if history else None
    output = "full" if cfg.method == "full" else ("merged" if cfg.merge else "adapter")
    recipe = {**dataclasses.asdict(cfg), "learning_rate": learning_rate(cfg)}
    return {"base_model": base_spec, "base_path": base_path, "prompt_format": prompt_format,
            "recipe": recipe, "dtype": str(training_dtype(cfg)).replace("torch.", ""), "output": output,
            "data": {"source": source, "fingerprint": data_fp, "rows": n_rows},
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


def run(args: argparse.Namespace) -> int:
    section = None
    if args.config:
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RaitError(f"{args.config}: cannot read YAML ({exc})") from None
        section = loaded.get("train", {}) if isinstance(loaded, dict) else None
        if not isinstance(section, dict):
            raise RaitError(f"{args.config}: expected a mapping with a `train` section")
    cli = {k: v for k, v in vars(args).items() if k not in ("data", "out", "config", "verb")}
    cfg = config_mod.build(TrainConfig, section, cli, where="train")
    train_sft(args.data, args.out, cfg, progress=True)
    return 0
