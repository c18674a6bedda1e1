"""Deterministic carving of one dataset into a pool and a disjoint held-out test set.

Items are ranked by sha256(f"{seed}:{id}"): the first `test_size` are `test`, the rest `pool`.
The rank depends only on the seed and each item's id, so the carving is the same whatever the
file order, and `limit` (the first N in rank order) is a seeded sample that grows by prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

from rait.config import option
from rait.data.loaders import load_dataset
from rait.data.schema import Dataset
from rait.errors import RaitError
from rait.io import fingerprint

PARTS = ("all", "pool", "test")


@dataclasses.dataclass
class DataOptions:
    """How a DATASET argument is read and carved; every verb that takes a DATASET adds these."""

    split: str | None = option(None, "split of a built-in, folder (MMLU: dev/val/test) or hub dataset")
    format: str | None = option(None, "force the format: generic, triviaqa-tsv, triviaqa, nq-open, mmlu, "
                                      "arc (detected when omitted)")
    lenient: bool = option(False, "skip bad rows (each one is reported) instead of stopping")
    limit: int | None = option(None, "keep N items, a seeded sample (the first N in carving rank order)",
                               at_least=1)
    part: str = option("all", "which part to use: all, the training pool, or the held-out test set",
                       choices=PARTS)
    test_size: float = option(0.1, "size of the held-out test set: a fraction below 1, or a count",
                              at_least=0)
    split_seed: int = option(0, "seed of the pool / test carving and of --limit sampling", at_least=0)
    fields: dict | None = option(None, "column renames for generic files, e.g. {question: q, answers: "
                                       "aliases}", flag=False)


def rank_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode("utf-8")).hexdigest()


def ranked(items: list[dict], seed: int) -> list[dict]:
    """Items in carving order (stable for equal ids, so the result never depends on hash ties)."""
    return sorted(items, key=lambda item: rank_key(seed, item["id"]))


def held_out_count(test_size: int | float, n: int) -> int:
    """Number of test items: a fraction in [0, 1) of n (rounded half up), or a whole count >= 1."""
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or test_size < 0 \
            or math.isnan(test_size):
        raise RaitError(f"test_size must be a fraction in [0, 1) or a count, got {test_size!r}")
    if math.isinf(test_size):
        raise RaitError(f"test_size must be a fraction in [0, 1) or a count, got {test_size!r}")
    if test_size < 1:
        return math.floor(n * test_size + 0.5)
    if test_size != int(test_size):
        raise RaitError(f"test_size {test_size} is neither a fraction below 1 nor a whole count")
    if test_size > n:
        raise RaitError(f"test_size {int(test_size)} is larger than the dataset ({n} items)")
    return int(test_size)


def carve(dataset: Dataset, part: str, *, test_size: int | float, seed: int) -> Dataset:
    """The `pool` or `test` part of `dataset` (in rank order), or the dataset itself for `all`."""
    if part not in PARTS:
        raise RaitError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    if part == "all":
        return dataset
    order = ranked(dataset.items, seed)
    n_test = held_out_count(test_size, len(order))
    items = order[:n_test] if part == "test" else order[n_test:]
    if not items:
        raise RaitError(f"{dataset.source}: the {part} part is empty (test_size {test_size} of "
                        f"{len(order)} items)")
    note = (f"carved the {part} part: {len(items)} of {len(order)} items "
            f"(test set {n_test}, split_seed {seed})")
    return dataclasses.replace(
        dataset, items=items, name=f"{dataset.name}-{part}", notes=[*dataset.notes, note],
        fingerprint=fingerprint({"base": dataset.fingerprint, "part": part, "test_size": n_test,
                                 "seed": seed}))


def take(dataset: Dataset, limit: int, *, seed: int) -> Dataset:
    """The first `limit` items in carving rank order: a seeded sample, the same for any file order."""
    if limit < 1:
        raise RaitError(f"limit must be a positive number of items, got {limit}")
    items = ranked(dataset.items, seed)[:limit]  # rank order even when nothing is cut: N is a prefix of N+1
    notes = list(dataset.notes)
    if len(items) < len(dataset.items):
        notes.append(f"limited to {limit} of {len(dataset.items)} items (seeded sample, split_seed {seed})")
    return dataclasses.replace(dataset, items=items, notes=notes,
                               fingerprint=fingerprint({"base": dataset.fingerprint, "limit": limit,
                                                        "seed": seed}))


def load_with_options(spec: str, opts: DataOptions) -> Dataset:
    """Load, carve and limit a DATASET as the shared data flags say."""
    dataset = load_dataset(spec, split=opts.split, fmt=opts.format, lenient=opts.lenient,
                           fields=opts.fields)
    dataset = carve(dataset, opts.part, test_size=opts.test_size, seed=opts.split_seed)
    if opts.limit is not None:
        dataset = take(dataset, opts.limit, seed=opts.split_seed)
    return dataset
