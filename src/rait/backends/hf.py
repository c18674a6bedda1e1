"""Text generation and option scoring on a transformers causal LM (the default backend).

Everything here is built for the shape of a knowledge query: a long few-shot prompt and short
answers. So:
- `sample` prefills each prompt ONCE, then repeats its KV cache n times and decodes all
  n x batch rows together, computing the vocabulary head only for the last position
  (`logits_to_keep`), dropping rows as soon as they hit a newline or EOS;
- `option_probs` reads one next-token distribution per prompt, and runs a few-shot prefix shared
  by many prompts once, scoring only the suffixes against a copy of its cache.

Decoding is pinned by arguments; `model.generation_config` is never read.

Padding: batches are left-padded with explicit position ids (so each row sees the positions it
would see alone), except suffixes scored against a shared prefix, which are right-padded (a
padding hole between prefix and suffix would shift sliding-window attention) and read at each
row's own last position.

Randomness: sample j of prompt i draws its uniforms from a torch.Generator seeded by
(seeds[i], j), and picks tokens by inverse-CDF sampling, so its text does not depend on the batch
it ran in, on the batch size or on the other rows.
"""

from __future__ import annotations

import copy
import functools
import hashlib
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
           progress: Progress = None) -> list[list[str]]:
    """n sampled continuations per prompt (list per prompt, in prompt order)."""
    if len(seeds) != len(prompts):
        raise ValueError("sample: need one seed per prompt")
    if n < 1 or max_new_tokens < 1:
        raise RaitError("need at least one sample and one new token")
    encoded = encode(tokenizer, prompts)
    # longest prompts first: rows of similar length waste less padding; results do not depend on it
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[list[str]] = [[] for _ in prompts]
    for chunk in _batches(order, batch_size):
        uniforms = row_uniforms([seeds[i] for i in chunk], n, max_new_tokens)
        texts = _decode_batch(model, tokenizer, [encoded[i] for i in chunk], n, uniforms,
                              temperature, top_p, max_new_tokens, stop_at_newline)
        for k, i in enumerate(chunk):
            results[i] = texts[k * n:(k + 1) * n]
        _report(progress, len(chunk))
    return results


def greedy(model, tokenizer, prompts: list, *, max_new_tokens: int, batch_size: int = 8,
           stop_at_newline: bool = True, progress: Progress = None) -> list[str]:
    """The greedy continuation of each prompt (the same fast loop as `sample`, temperature 0)."""
    rows = sample(model, tokenizer, prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens,
                  seeds=[0] * len(prompts), stop_at_newline=stop_at_newline, batch_size=batch_size,
                  progress=progress)
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


SUFFIX_BATCH_FACTOR = 4


def shared_prefix(prompt) -> str:
    """Default prefix of a few-shot prompt: everything up to its last blank line (none for a chat
    prompt: the template's own tokens are short)."""
    if not isinstance(prompt, str):
        return ""
    cut = prompt.rfind("\n\n")
    return prompt[:cut + 2] if cut >= 0 else ""


def option_probs(model, tokenizer, prompts: list, labels: list[list[str]], *, batch_size: int = 8,
                 progress: Progress = None, prefixes: list[str] | None = None,
                 reuse_prefix: bool = True) -> list[dict[str, float]]:
    """Probability of each option label as the next token, renormalised over the options.

    Prompts that share a prefix (given in `prefixes`, or by default the text up to the last blank
    line: the few-shot block) run the prefix once; only their suffixes are batched against it."""
    if len(labels) != len(prompts):
        raise ValueError("option_probs: need one label list per prompt")
    prefixes = prefixes if prefixes is not None else [shared_prefix(p) for p in prompts]
    results: list[dict[str, float] | None] = [None] * len(prompts)
    groups: dict[str, list[int]] = {}
    for i, prefix in enumerate(prefixes):
        groups.setdefault(prefix if reuse_prefix else "", []).append(i)
    alone: list[int] = []
    for prefix, members in groups.items():
        # a prefix forward pays only when enough prompts share it (measured: a group of 2 loses
        # against batching the whole prompts across groups)
        big = prefix and len(members) >= max(2, batch_size)
        split = _split_on_prefix(tokenizer, prefix, [prompts[i] for i in members]) if big else None
        if split is None:
            alone += members
            continue
        prefix_ids, suffixes = split
        distributions = _suffix_distributions(model, tokenizer, prefix_ids, suffixes, members, labels,
                                              batch_size, progress)
        for i, dist in zip(members, distributions):
            results[i] = dist
    ids_of = dict(zip(alone, encode(tokenizer, [prompts[i] for i in alone])))
    for chunk in _batches(sorted(alone, key=lambda i: len(ids_of[i])), batch_size):
        encoded = [ids_of[i] for i in chunk]
        logits = _last_logits(model, encoded, pad_id(tokenizer))
        for k, i in enumerate(chunk):
            results[i] = _label_distribution(logits[k], tokenizer, labels[i])
        _report(progress, len(chunk))
    return results  # type: ignore[return-value]


def _split_on_prefix(tokenizer, prefix, prompts: list):
    """(prefix ids, suffix ids per prompt) if each prompt's own ids start with the prefix's ids;
    None otherwise (then the prompts run whole)."""
    prefix_ids = encode(tokenizer, [prefix])[0]
    whole = encode(tokenizer, prompts)
    if not prefix_ids or any(len(w) <= len(prefix_ids) or w[:len(prefix_ids)] != prefix_ids for w in whole):
        return None
    return prefix_ids, [w[len(prefix_ids):] for w in whole]


def _last_logits(model, rows: list[list[int]], pad: int):
    """Next-token logits [B, V] (float32) after each row, left-padded batch."""
    import torch

    ids, mask, positions = left_pad(rows, pad, _device(model))
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                    logits_to_keep=1)
    return out.logits[:, -1].float()


def _suffix_distributions(model, tokenizer, prefix_ids, suffixes, members, labels, batch_size, progress):
    """Run the prefix once, then each batch of suffixes (right-padded) against a copy of its cache."""
    import torch

    device = _device(model)
    width_prefix = len(prefix_ids)
    with torch.inference_mode():
        prefix_out = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True,
                           logits_to_keep=1)
    out_dists: list[dict] = [None] * len(members)  # type: ignore[list-item]
    order = sorted(range(len(members)), key=lambda k: len(suffixes[k]))
    pad = pad_id(tokenizer)
    # suffixes are short, so more of them share one forward (fewer, larger operations)
    for chunk in _batches(order, batch_size * SUFFIX_BATCH_FACTOR):
        rows = [suffixes[k] for k in chunk]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width_prefix + width), dtype=torch.long)
        mask[:, :width_prefix] = 1
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, width_prefix:width_prefix + len(row)] = 1
        positions = (torch.arange(width) + width_prefix).expand(len(rows), -1)
        # the head runs only at the rows' last real positions (a 1-D `logits_to_keep`: the same
        # positions for every row, which every transformers 5 release reads alike)
        keep = sorted({len(r) - 1 for r in rows})
        cache = copy.deepcopy(returned_cache(prefix_out))
        cache.batch_repeat_interleave(len(rows))
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        position_ids=positions.to(device), **cache_argument(cache), use_cache=True,
                        logits_to_keep=torch.tensor(keep, device=device))
        for r, k in enumerate(chunk):
            logits = out.logits[r, keep.index(len(rows[r]) - 1)].float()
            out_dists[k] = _label_distribution(logits, tokenizer, labels[members[k]])
        _report(progress, len(chunk))
    return out_dists


def _label_distribution(logits, tokenizer, labels: list[str]) -> dict[str, float]:
    import torch

    probs = torch.softmax(logits.double(), dim=-1)
    mass = {label: float(sum(probs[t] for t in option_token_ids(tokenizer, label))) for label in labels}
    total = sum(mass.values())
    if total <= 0:
        return {label: 1.0 / len(labels) for label in labels}
    return {label: value / total for label, value in mass.items()}


# ---------------------------------------------------------------------------------------------
# hidden states


def mean_hidden(model, tokenizer, prompts: list, *, batch_size: int = 8) -> np.ndarray:
    """Last-layer hidden states mean-pooled over each prompt's real tokens: [len(prompts), hidden]."""
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
        real = mask.unsqueeze(-1).bool()
        # where() rather than a product: padded positions may hold anything, even NaN
        means = torch.where(real, hidden, 0.0).sum(1) / real.sum(1)
        for k, i in enumerate(chunk):
            pooled[i] = means[k].cpu().numpy()
    if not pooled:
        return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
    return np.stack(pooled).astype(np.float32)
