"""Text generation and option scoring on a transformers causal LM (the default backend).

Everything here is built for the shape of a knowledge query: a long few-shot prompt and short
answers. So:
- `sample` prefills each prompt ONCE, then repeats its KV cache n times and decodes its n rows
  together, computing the vocabulary head only for the last position (`logits_to_keep`),
  dropping rows as soon as they hit a newline or EOS;
- `option_mass` / `option_probs` read one next-token distribution per prompt, and run a few-shot
  prefix shared by many prompts once, scoring each suffix against a copy of its cache.

Decoding is pinned by arguments; `model.generation_config` is never read.

Batch invariance (what the probe promises: a row depends only on its item and seed). Padding
changes bf16 logits, and even unpadded rows are not safe: matrix kernels pick their summation
order by the number of rows (measured on CPU: float32 linear layers give other last bits for 1,
2-3 and 4+ rows; GPUs choose tiles and split-K by shape too). So `sample` (by default) and
`option_mass` run every prompt in its own forward passes, whose shapes depend on that prompt
alone; `batch_size` does not change a number there. `greedy` (evaluation) and `mean_hidden` keep
left-padded batches of `batch_size` prompts, with explicit position ids: faster, equal to the
unbatched numbers up to rounding.

Randomness: sample j of prompt i draws its uniforms from a torch.Generator seeded by
(seeds[i], j), and picks tokens by inverse-CDF sampling, so its draws do not depend on the batch
it ran in, on the batch size or on the other rows.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from typing import Callable, Sequence

import numpy as np

from rait.errors import RaitError

Progress = Callable[[int], object] | None  # called with the number of prompts just finished


# ---------------------------------------------------------------------------------------------
# tokenisation helpers


def pad_id(tokenizer) -> int:
    """The pad token id; eos when the tokenizer has no pad token (values under padding are masked)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def encode(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Token ids per prompt (text, chat messages or ids), by `rait.prompts.prompt_ids`: the same
    ids TRL trains on, one BOS."""
    from rait.prompts import prompt_ids

    return [prompt_ids(tokenizer, prompt) for prompt in prompts]


def encode_continuation(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of text that continues a prompt (no special tokens)."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def left_pad(rows: list[list[int]], pad: int, device):
    """(input_ids, attention_mask, position_ids), each [B, L], left-padded.

    Position ids count real tokens only, so a padded row computes what it would alone."""
    import torch

    if any(len(r) == 0 for r in rows):
        raise RaitError("cannot run an empty prompt (it has no tokens)")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _batches(order: list[int], size: int):
    size = max(1, int(size))
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _report(progress: Progress, count: int) -> None:
    if progress is not None and count:
        progress(count)


def _device(model):
    return next(model.parameters()).device


# transformers renamed the KV cache from `past_key_values` to `cache` (5.2x); vLLM's builds pin
# older releases, so both spellings are read and passed
def returned_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def cache_argument(cache) -> dict:
    return {_cache_keyword(): cache}


@functools.cache
def _cache_keyword() -> str:  # asked once, not at every decoding step
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


# ---------------------------------------------------------------------------------------------
# stop tokens


_TOKEN_CLASS_CACHE: dict[tuple, object] = {}


def newline_token_masks(tokenizer, vocab_size: int):
    """(newline, blank): bool tensors [vocab_size]. `newline`: the token's text contains a newline;
    `blank`: its text is whitespace only (or empty). Computed once per tokenizer."""
    import torch

    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), vocab_size)
    if key not in _TOKEN_CLASS_CACHE:
        count = min(len(tokenizer), vocab_size)
        newline = torch.zeros(vocab_size, dtype=torch.bool)
        blank = torch.zeros(vocab_size, dtype=torch.bool)
        candidates = _whitespace_candidates(tokenizer, count)
        texts = tokenizer.batch_decode([[i] for i in candidates], skip_special_tokens=False)
        newline[[i for i, text in zip(candidates, texts) if "\n" in text]] = True
        blank[[i for i, text in zip(candidates, texts) if not text.strip()]] = True
        _TOKEN_CLASS_CACHE[key] = (newline, blank)
    return _TOKEN_CLASS_CACHE[key]


def newline_token_mask(tokenizer, vocab_size: int):
    """Bool tensor [vocab_size]: tokens whose text contains a newline."""
    return newline_token_masks(tokenizer, vocab_size)[0]


# how vocabularies spell whitespace: a literal character, the byte-level BPE symbols for
# space / newline / tab / CR, SentencePiece's space mark and byte tokens
_WHITESPACE_MARKS = (" ", "\n", "\t", "\r", "\u0120", "\u010a", "\u0109", "\u010d", "\u2581",
                     "<0x0A>", "<0x20>", "<0x09>", "<0x0D>")


def _whitespace_candidates(tokenizer, count: int) -> list[int]:
    """Token ids that may decode to text with a newline or to whitespace only. Decoding only these
    is much faster than decoding a 262k vocabulary; an unknown vocabulary style falls back to
    decoding everything."""
    vocab = tokenizer.get_vocab()
    newline_marks = ("\n", "\u010a", "<0x0A>")
    found = []
    for token, i in vocab.items():
        if i >= count:
            continue
        rest = token
        for mark in _WHITESPACE_MARKS:
            rest = rest.replace(mark, "")
        if not rest or any(m in token for m in newline_marks):
            found.append(i)
    return sorted(found) if found else list(range(count))


def eos_ids(model, tokenizer) -> set[int]:
    """Where an answer ends: EOS from the tokenizer and the model config (never the generation
    config), and the chat template's end-of-turn token."""
    from rait.prompts import end_of_turn_ids

    ids = set(end_of_turn_ids(tokenizer))
    for value in (tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def finish_text(tokenizer, tokens: list[int], stop_at_newline: bool) -> str:
    """Decoded answer: up to the first newline after some text when asked, stripped."""
    from rait.backends import answer_text

    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return answer_text(text) if stop_at_newline else text.strip()


# ---------------------------------------------------------------------------------------------
# sampling


def row_seed(seed: int, j: int) -> int:
    """A stable 63-bit generator seed for sample j of a prompt whose seed is `seed`."""
    digest = hashlib.sha256(f"{int(seed)}:{int(j)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def row_uniforms(seeds: Sequence[int], n: int, steps: int):
    """Uniform draws [len(seeds) * n, steps]; row i*n+j comes from its own generator (seeds[i], j)."""
    import torch

    rows = []
    for seed in seeds:
        for j in range(n):
            gen = torch.Generator().manual_seed(row_seed(seed, j))
            rows.append(torch.rand(steps, generator=gen, dtype=torch.float64))
    return torch.stack(rows) if rows else torch.zeros((0, steps), dtype=torch.float64)


SAMPLING_BLOCK = 1024  # vocabulary block size of the two-level inverse-CDF search


def choose_tokens(logits, uniforms, temperature: float, top_p: float):
    """Next token per row from logits [R, V] and one uniform per row [R] (inverse-CDF sampling).

    Temperature 0 is greedy. Each row's choice depends only on its own logits and uniform.
    The CDF search is two-level (block sums, then within one block) so a step costs one pass
    over the vocabulary instead of a full-vocabulary cumulative sum."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits.float() / temperature
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [R, V], one fused pass
    order = None
    if top_p < 1.0:
        weights, order = weights.sort(dim=-1, descending=True, stable=True)
        # keep the smallest set of most likely tokens whose mass reaches top_p (at least one)
        mass = weights.double().cumsum(-1)
        weights = weights.masked_fill((mass - weights) >= top_p * mass[:, -1:], 0.0)
    picked = _inverse_cdf(weights, uniforms.to(weights.device, torch.float64))
    if order is not None:
        picked = order.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    return picked


def _inverse_cdf(weights, uniforms):
    """Index i of each row with cdf[i-1] <= u * total < cdf[i] (weights [R, V] >= 0, u in [0, 1))."""
    import torch

    rows, vocab = weights.shape
    size = SAMPLING_BLOCK
    blocks = -(-vocab // size)
    if blocks * size != vocab:  # (a copy; Gemma's 262,144 = 256 x 1024 needs none)
        weights = torch.nn.functional.pad(weights, (0, blocks * size - vocab))
    padded = weights.view(rows, blocks, size)
    block_mass = padded.sum(-1).double()  # [R, blocks]; float32 sums of 1024 terms are exact enough
    block_cdf = block_mass.cumsum(-1)
    target = uniforms.unsqueeze(-1) * block_cdf[:, -1:]  # [R, 1]
    block = torch.searchsorted(block_cdf, target, right=True).clamp(max=blocks - 1)  # [R, 1]
    residual = target - (block_cdf.gather(-1, block) - block_mass.gather(-1, block))
    inside = padded.gather(1, block.unsqueeze(-1).expand(rows, 1, size)).squeeze(1)  # [R, size]
    within = torch.searchsorted(inside.double().cumsum(-1), residual, right=True)
    # rounding can push the residual past the block's last token: take its last positive one
    last_positive = size - 1 - (inside > 0).flip(-1).to(torch.uint8).argmax(-1, keepdim=True)
    within = torch.minimum(within, last_positive)
    return (block * size + within).squeeze(-1)


def sample(model, tokenizer, prompts: list, *, n: int, temperature: float, top_p: float = 1.0,
           max_new_tokens: int, seeds: list[int], stop_at_newline: bool = True, batch_size: int = 8,
           progress: Progress = None, batch_invariant: bool = True) -> list[list[str]]:
    """n sampled continuations per prompt (list per prompt, in prompt order).

    batch_invariant: each prompt prefills and decodes alone (its n rows together), so its texts
    depend only on the prompt and its seed; False batches `batch_size` left-padded prompts."""
    if len(seeds) != len(prompts):
        raise ValueError("sample: need one seed per prompt")
    if n < 1 or max_new_tokens < 1:
        raise RaitError("need at least one sample and one new token")
    encoded = encode(tokenizer, prompts)
    # longest prompts first: rows of similar length waste less padding
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[list[str]] = [[] for _ in prompts]
    for chunk in _batches(order, 1 if batch_invariant else batch_size):
        uniforms = row_uniforms([seeds[i] for i in chunk], n, max_new_tokens)
        texts = _decode_batch(model, tokenizer, [encoded[i] for i in chunk], n, uniforms,
                              temperature, top_p, max_new_tokens, stop_at_newline)
        for k, i in enumerate(chunk):
            results[i] = texts[k * n:(k + 1) * n]
        _report(progress, len(chunk))
    return results


def greedy(model, tokenizer, prompts: list, *, max_new_tokens: int, batch_size: int = 8,
           stop_at_newline: bool = True, progress: Progress = None, batch_invariant: bool = False) -> list[str]:
    """The greedy continuation of each prompt (the same fast loop as `sample`, temperature 0).
    Batched by default (evaluation's throughput); `batch_invariant=True` runs each prompt alone."""
    rows = sample(model, tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens,
                  seeds=[0] * len(prompts), stop_at_newline=stop_at_newline, batch_size=batch_size,
                  progress=progress, batch_invariant=batch_invariant)
    return [r[0] for r in rows]


def _decode_batch(model, tokenizer, rows: list[list[int]], n: int, uniforms, temperature: float,
                  top_p: float, max_new_tokens: int, stop_at_newline: bool) -> list[str]:
    """Prefill B prompts once, repeat their cache n times, decode the B*n rows together."""
    import torch

    device = _device(model)
    ids, mask, positions = left_pad(rows, pad_id(tokenizer), device)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        cache = returned_cache(out)
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].repeat_interleave(n, dim=0)  # [R, V]
        mask = mask.repeat_interleave(n, dim=0)
        next_pos = positions[:, -1].repeat_interleave(n, dim=0) + 1
        stops = eos_ids(model, tokenizer)
        newline = blank = None
        if stop_at_newline:
            newline, blank = (m.to(device) for m in newline_token_masks(tokenizer, logits.shape[-1]))
        started = torch.zeros(logits.shape[0], dtype=torch.bool, device=device)  # row has non-blank text
        active = torch.arange(logits.shape[0], device=device)  # which original rows are still decoding
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        for step in range(max_new_tokens):
            picked = choose_tokens(logits, uniforms[active.cpu(), step], temperature, top_p)
            done = torch.zeros_like(picked, dtype=torch.bool)
            for value in stops:
                done |= picked == value
            if newline is not None:
                # a newline ends the answer only after some text: "\nParis" goes on to "Paris"
                done |= newline[picked] & (started | ~blank[picked])
                started = started | ~blank[picked]
            for row, token in zip(active.tolist(), picked.tolist()):
                tokens[row].append(token)
            keep = (~done).nonzero().squeeze(-1)
            if step == max_new_tokens - 1 or keep.numel() == 0:
                break
            if keep.numel() < picked.numel():  # finished rows leave the batch (and the cache)
                cache.batch_select_indices(keep)
                active, picked, mask, next_pos = active[keep], picked[keep], mask[keep], next_pos[keep]
                started = started[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            out = model(input_ids=picked.unsqueeze(-1), attention_mask=mask,
                        position_ids=next_pos.unsqueeze(-1), **cache_argument(cache), use_cache=True,
                        logits_to_keep=1)
            logits = out.logits[:, -1]
            next_pos = next_pos + 1
    return [finish_text(tokenizer, t, stop_at_newline) for t in tokens]


# ---------------------------------------------------------------------------------------------
# option scoring


def option_token_ids(tokenizer, label: str) -> list[int]:
    """Tokens that spell option `label` right after "Answer:".

    Our choice: the single token for " A" (what follows "Answer:" in the few-shot prompts) AND the
    single token for "A" when each exists; the option's probability is the sum of both. (Gemma:
    " A"=562, " B"=603, " C"=565, " D"=622.)"""
    ids = []
    for text in (" " + label, label):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    if not ids:
        raise RaitError(f"option label {label!r} is not a single token for this tokenizer; "
                        "use single-character labels (A, B, C, ...)")
    return ids


def shared_prefix(prompt) -> str:
    """Default prefix of a few-shot prompt: everything up to its last blank line (none for a chat
    prompt: the template's own tokens are short)."""
    if not isinstance(prompt, str):
        return ""
    cut = prompt.rfind("\n\n")
    return prompt[:cut + 2] if cut >= 0 else ""


def option_mass(model, tokenizer, prompts: list, labels: list[list[str]], *, batch_size: int = 8,
                progress: Progress = None, prefixes: list[str] | None = None,
                reuse_prefix: bool = True) -> list[dict[str, float]]:
    """Raw next-token probability of each option label (its tokens' softmax mass over the whole
    vocabulary, NOT renormalised: the labels' sum is the letter mass, at most 1).

    Every prompt runs alone (batch invariance, see the module notes), so `batch_size` changes
    nothing. A prompt whose ids start with its prefix's (given in `prefixes`, or by default the
    text up to the last blank line: the few-shot block) runs the prefix once per call and only its
    suffix against a copy of that cache; whether it does depends on the prompt alone."""
    if len(labels) != len(prompts):
        raise ValueError("option_mass: need one label list per prompt")
    prefixes = prefixes if prefixes is not None else [shared_prefix(p) for p in prompts]
    encoded = encode(tokenizer, prompts)
    prefix_ids: dict[str, list[int]] = {}
    prefix_caches: dict[str, object] = {}  # filled when a prompt first uses its prefix
    masses = []
    for ids, prefix, option_labels in zip(encoded, prefixes, labels):
        if prefix and reuse_prefix and prefix not in prefix_ids:
            prefix_ids[prefix] = encode(tokenizer, [prefix])[0]
        start = prefix_ids.get(prefix) if reuse_prefix else None
        if starts_with(ids, start):
            if prefix not in prefix_caches:
                prefix_caches[prefix] = _prefix_cache(model, start)
            logits = _suffix_logits(model, prefix_caches[prefix], len(start), ids[len(start):])
        else:
            logits = _last_logits(model, [ids], pad_id(tokenizer))[0]
        masses.append(_label_mass(logits, tokenizer, option_labels))
        _report(progress, 1)
    return masses


def option_probs(model, tokenizer, prompts: list, labels: list[list[str]], **options) -> list[dict[str, float]]:
    """Probability of each option label as the next token, renormalised over the options
    (`option_mass` divided by the letter mass). A prompt that gives the letters no mass at all is
    an error here: it has no option distribution (the probe records such rows instead)."""
    masses = option_mass(model, tokenizer, prompts, labels, **options)
    for index, mass in enumerate(masses):
        if not sum(mass.values()) > 0:
            raise RaitError(f"prompt {index}: the model gives the option letters no probability at all")
    return [{label: value / sum(mass.values()) for label, value in mass.items()} for mass in masses]


def starts_with(ids: list[int], prefix_ids: list[int] | None) -> bool:
    """The prompt's own ids begin with the prefix's and leave a suffix to score (the prefix path
    applies); a prefix that tokenises differently inside the prompt means the prompt runs whole."""
    return bool(prefix_ids) and len(ids) > len(prefix_ids) and ids[:len(prefix_ids)] == prefix_ids


def _prefix_cache(model, prefix_ids: list[int]):
    """The KV cache of the prefix, run alone."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prefix_ids], device=_device(model)), use_cache=True,
                    logits_to_keep=1)
    return returned_cache(out)


def _last_logits(model, rows: list[list[int]], pad: int):
    """Next-token logits [B, V] (float32) after each row, left-padded batch."""
    import torch

    ids, mask, positions = left_pad(rows, pad, _device(model))
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                    logits_to_keep=1)
    return out.logits[:, -1].float()


def _suffix_logits(model, prefix_cache, width_prefix: int, suffix: list[int]):
    """Next-token logits [V] (float32) after prefix + suffix, the suffix run alone against a copy
    of the prefix's cache."""
    import torch

    device = _device(model)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([suffix], device=device),
                    position_ids=torch.arange(width_prefix, width_prefix + len(suffix), device=device)[None],
                    **cache_argument(copy.deepcopy(prefix_cache)), use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float()


def _label_mass(logits, tokenizer, labels: list[str]) -> dict[str, float]:
    """Softmax mass of each label's tokens (float64); non-finite logits are an error, not a number."""
    import torch

    probs = torch.softmax(logits.double(), dim=-1)
    mass = {label: float(sum(probs[t] for t in option_token_ids(tokenizer, label))) for label in labels}
    if not all(math.isfinite(value) for value in mass.values()):
        raise RaitError("the model returned non-finite next-token probabilities (NaN or inf logits; "
                        "try --dtype float32 or bfloat16 instead of float16)")
    return mass


# ---------------------------------------------------------------------------------------------
# hidden states


def mean_hidden(model, tokenizer, prompts: list, *, batch_size: int = 8, skip: int = 0) -> np.ndarray:
    """Last-layer hidden states mean-pooled over each prompt's real tokens: [len(prompts), hidden].

    `skip`: leave each prompt's first `skip` tokens out of the mean (the conflict diagnostic passes
    the length of the token prefix all its prompts share); a prompt with no token after them is
    represented by its last token alone. 0 (the default) pools over every token."""
    import torch

    encoded = encode(tokenizer, prompts)
    pooled: list[np.ndarray | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    for chunk in _batches(order, batch_size):
        ids, mask, positions = left_pad([encoded[i] for i in chunk], pad_id(tokenizer), _device(model))
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                        output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1].float()  # [B, L, H]
        lengths = mask.sum(1, keepdim=True)  # [B, 1]
        # the first token pooled: `skip`, or the last token where the prompt has none after `skip`
        first = torch.where(lengths > skip, torch.full_like(lengths, max(0, int(skip))), lengths - 1)
        real = (mask.bool() & (positions >= first)).unsqueeze(-1)
        # where() rather than a product: padded positions may hold anything, even NaN
        means = torch.where(real, hidden, 0.0).sum(1) / real.sum(1)
        for k, i in enumerate(chunk):
            pooled[i] = means[k].cpu().numpy()
    if not pooled:
        return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
    return np.stack(pooled).astype(np.float32)
