"""The maths of evaluation and diagnosis, one tested function each: outcome rates, the Truthful
Helpfulness Score and its bootstrap intervals (one run, and pooled over seeds), the static-conflict
rate CRSS, macro averages.

All rates are fractions in [0, 1]; multiply by 100 only for display.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rait.errors import RaitError

OUTCOMES = ("correct", "wrong", "refused", "unparsed")
UNPARSED_AS = ("wrong", "refused")
_EPS = 1e-9


def ths(pc: float, pw: float, pc0: float, pw0: float) -> float:
    """Truthful Helpfulness Score of a model with rates (pc, pw) against the baseline (pc0, pw0).

    CRaFT (Zhu et al. 2025, eq. for THS): with E = (Pc, Pw), E0 = (Pc0, Pw0) and A = (1, 0),
    THS = (E x E0) / (A x E0) = (Pc * Pw0 - Pw * Pc0) / Pw0 (x: the 2-D cross product).
    0 for the baseline itself, 1 for a perfect model (1, 0), negative when worse.
    """
    for name, value in (("pc", pc), ("pw", pw), ("pc0", pc0), ("pw0", pw0)):
        if not -_EPS <= value <= 1 + _EPS:
            raise RaitError(f"THS expects fractions in [0, 1]; got {name}={value} (percent given?)")
    if pw0 <= 0:
        raise RaitError("THS is undefined when the baseline never answers wrongly (Pw0 = 0)")
    return (pc * pw0 - pw * pc0) / pw0


def _check_unparsed_as(unparsed_as: str) -> None:
    if unparsed_as not in UNPARSED_AS:
        raise RaitError(f"unparsed_as must be one of {', '.join(UNPARSED_AS)}, got {unparsed_as!r}")


def rates(outcomes: Sequence[str], unparsed_as: str = "wrong") -> dict:
    """Counts and fractions of outcomes: {n, correct, wrong, refused, unparsed, Pc, Pw, Pr}.
    Unparsed answers are counted into Pw or Pr according to `unparsed_as`, so Pc + Pw + Pr = 1
    (the reference scorer silently treated them like refusals)."""
    _check_unparsed_as(unparsed_as)
    counts = {name: 0 for name in OUTCOMES}
    for outcome in outcomes:
        if outcome not in counts:
            raise RaitError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        counts[outcome] += 1
    n = sum(counts.values())
    if n == 0:
        raise RaitError("no outcomes to compute rates from")
    wrong = counts["wrong"] + (counts["unparsed"] if unparsed_as == "wrong" else 0)
    refused = counts["refused"] + (counts["unparsed"] if unparsed_as == "refused" else 0)
    return {"n": n, **counts, "Pc": counts["correct"] / n, "Pw": wrong / n, "Pr": refused / n}


def _category_codes(outcomes: Sequence[str], unparsed_as: str) -> np.ndarray:
    """0 = correct, 1 = wrong, 2 = refused per item (unparsed folded in as `unparsed_as`)."""
    rates(outcomes, unparsed_as)  # validates every outcome and non-emptiness
    code = {"correct": 0, "wrong": 1, "refused": 2, "unparsed": 1 if unparsed_as == "wrong" else 2}
    return np.array([code[o] for o in outcomes], dtype=np.int64)


def _check_bootstrap_args(n_boot: int, alpha: float) -> None:
    if not 0 < alpha < 1:
        raise RaitError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise RaitError(f"n_boot must be positive, got {n_boot}")


def bootstrap_ths_ci(outcomes: Sequence[str], baseline_outcomes: Sequence[str], *, paired: bool,
                     n_boot: int = 1000, seed: int = 0, unparsed_as: str = "wrong",
                     alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of THS.

    `paired=True` when both outcome lists are the same items in the same order: each replicate
    resamples item indices once and uses them for both. Otherwise the two lists are resampled
    independently. Resampling n items with replacement only matters through the category
    counts, which are multinomial; drawing those counts directly is exact and needs
    O(n_boot) memory instead of O(n_boot * n). Paired draws use the 3 x 3 joint categories.
    Replicates with no baseline wrong answer (THS undefined) are dropped.
    """
    _check_bootstrap_args(n_boot, alpha)
    model = _category_codes(outcomes, unparsed_as)
    base = _category_codes(baseline_outcomes, unparsed_as)
    rng = np.random.default_rng(seed)
    if paired:
        if len(model) != len(base):
            raise RaitError(f"paired bootstrap needs the same items: {len(model)} vs {len(base)} outcomes")
        joint = np.bincount(model * 3 + base, minlength=9) / len(model)
        draws = rng.multinomial(len(model), joint, size=n_boot).reshape(n_boot, 3, 3)
        model_counts, base_counts = draws.sum(axis=2), draws.sum(axis=1)  # (n_boot, 3) each
    else:
        model_counts = rng.multinomial(len(model), np.bincount(model, minlength=3) / len(model), size=n_boot)
        base_counts = rng.multinomial(len(base), np.bincount(base, minlength=3) / len(base), size=n_boot)
    return _percentile_interval(_ths_replicates(model_counts, len(model), base_counts, len(base)), alpha)


def _ths_replicates(model_counts: np.ndarray, n_model: int, base_counts: np.ndarray, n_base: int) -> np.ndarray:
    """THS of each bootstrap replicate from (n_boot, 3) category counts; NaN where the baseline
    replicate has no wrong answer (THS undefined)."""
    pc, pw = model_counts[:, 0] / n_model, model_counts[:, 1] / n_model
    pc0, pw0 = base_counts[:, 0] / n_base, base_counts[:, 1] / n_base
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pw0 > 0, (pc * pw0 - pw * pc0) / pw0, np.nan)


def _percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of the defined (non-NaN) replicates."""
    defined = replicates[~np.isnan(replicates)]
    if defined.size == 0:
        raise RaitError("THS is undefined: the baseline has no wrong answers in any bootstrap replicate")
    low, high = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ths_diff_ci(outcomes_a: Sequence[str], outcomes_b: Sequence[str],
                          baseline_outcomes: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                          unparsed_as: str = "wrong", alpha: float = 0.05) -> tuple[float, float]:
    """Paired percentile bootstrap (1 - alpha) interval of THS(a) - THS(b), both against the same
    baseline, all three lists the same items in the same order.

    Two models' THS intervals overlapping says little about which is better: their errors are
    correlated through the shared items and baseline. Resampling the items once for all three
    keeps that correlation; as in `bootstrap_ths_ci`, the draw is a multinomial over the joint
    categories (3 x 3 x 3 here). An interval excluding 0 means the ordering holds on this test set.
    """
    _check_bootstrap_args(n_boot, alpha)
    a = _category_codes(outcomes_a, unparsed_as)
    b = _category_codes(outcomes_b, unparsed_as)
    base = _category_codes(baseline_outcomes, unparsed_as)
    if not len(a) == len(b) == len(base):
        raise RaitError(f"paired THS difference needs the same items: {len(a)}, {len(b)} and "
                        f"{len(base)} outcomes")
    n = len(a)
    joint = np.bincount(a * 9 + b * 3 + base, minlength=27) / n
    draws = np.random.default_rng(seed).multinomial(n, joint, size=n_boot).reshape(n_boot, 3, 3, 3)
    counts_a, counts_b, counts_0 = draws.sum(axis=(2, 3)), draws.sum(axis=(1, 3)), draws.sum(axis=(1, 2))
    return _percentile_interval(_ths_replicates(counts_a, n, counts_0, n) - _ths_replicates(counts_b, n, counts_0, n),
                                alpha)


def bootstrap_pooled_ths_diff_ci(replicates: Sequence[tuple[Sequence[str], Sequence[str], Sequence[str]]], *,
                                 n_boot: int = 1000, seed: int = 0, unparsed_as: str = "wrong",
                                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean over replicates (training seeds) of
    THS(a_s) - THS(b_s), each against its own replicate's baseline.

    `replicates` holds one (outcomes_a, outcomes_b, baseline_outcomes) per seed, every list the same
    test items in the same order. Each bootstrap draw resamples the items once, as multinomial item
    weights shared by every seed and model, so the items' correlation across seeds is kept. The
    interval covers the uncertainty of the test items at these seeds; how much the difference moves
    between seeds is what the per-seed differences show (a handful of seeds is too few to resample).
    """
    _check_bootstrap_args(n_boot, alpha)
    if not replicates:
        raise RaitError("no replicates to pool")
    n = len(replicates[0][0])
    onehots = []
    for k, lists in enumerate(replicates):
        if any(len(outcomes) != n for outcomes in lists):
            raise RaitError(f"pooled THS difference needs the same items in every replicate: replicate {k} has "
                            f"{', '.join(str(len(o)) for o in lists)} outcomes, replicate 0 {n}")
        onehots.append([np.eye(3)[_category_codes(outcomes, unparsed_as)] for outcomes in lists])
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 1000):  # (chunk, n) weights at a time: memory stays O(1000 * n)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=min(1000, n_boot - start)).astype(np.float64)
        total = np.zeros(weights.shape[0])
        for a, b, base in onehots:
            counts_a, counts_b, counts_0 = weights @ a, weights @ b, weights @ base
            total += _ths_replicates(counts_a, n, counts_0, n) - _ths_replicates(counts_b, n, counts_0, n)
        diffs.append(total / len(onehots))
    return _percentile_interval(np.concatenate(diffs), alpha)


def crss(features: np.ndarray, labels: Sequence[str],
         thresholds: Sequence[float] = (0.95, 0.96, 0.97, 0.98, 0.99),
         block_size: int = 1024) -> dict[float, dict]:
    """Conflict Rate of Similar Samples (CRaFT sec. 2, static conflict): among all pairs of
    samples whose feature cosine similarity exceeds a threshold, the share with different
    labels (e.g. "vanilla" vs "idk").

    Returns {threshold: {"pairs", "conflicting", "crss"}} with crss None when no pair is that
    similar. Works block by block (block_size x n similarities at a time), so 10k+ rows fit
    in memory.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise RaitError(f"features must be a 2-D array, got shape {x.shape}")
    if len(labels) != x.shape[0]:
        raise RaitError(f"{x.shape[0]} feature rows but {len(labels)} labels")
    thresholds = sorted(float(t) for t in thresholds)
    _, label_codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    pairs = np.zeros(len(thresholds), dtype=np.int64)
    conflicts = np.zeros(len(thresholds), dtype=np.int64)
    lowest = thresholds[0] if thresholds else np.inf
    n = unit.shape[0]
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sims = unit[start:stop] @ unit[start:].T  # (block, n - start): pairs (i, j), j >= start
        rows, cols = np.nonzero(sims > lowest)
        upper = cols > rows  # each unordered pair once, no self-pairs (both offset by start)
        rows, cols = rows[upper], cols[upper]
        values = sims[rows, cols]
        differ = label_codes[rows + start] != label_codes[cols + start]
        for k, threshold in enumerate(thresholds):  # counted per block: memory stays O(block * n)
            above = values > threshold
            pairs[k] += int(above.sum())
            conflicts[k] += int((above & differ).sum())
    result = {}
    for k, threshold in enumerate(thresholds):
        result[threshold] = {"pairs": int(pairs[k]), "conflicting": int(conflicts[k]),
                             "crss": int(conflicts[k]) / int(pairs[k]) if pairs[k] else None}
    return result


def macro_average(groups: dict[str, dict]) -> dict:
    """Unweighted mean of Pc, Pw and Pr over groups (e.g. MMLU subjects, as the paper reports),
    with the number of groups and the total item count."""
    if not groups:
        raise RaitError("no groups to average")
    out = {"groups": len(groups), "n": sum(int(g.get("n", 0)) for g in groups.values())}
    for key in ("Pc", "Pw", "Pr"):
        missing = [name for name, g in groups.items() if key not in g]
        if missing:
            raise RaitError(f"group {missing[0]!r} has no {key}")
        out[key] = float(np.mean([g[key] for g in groups.values()]))
    return out


def percent(value: float | None) -> str:
    """A rate as a percentage with one decimal, "-" for none: how every table shows Pc, Pw, THS."""
    return "-" if value is None else f"{100 * value:.1f}"
