"""Deterministic carving of one dataset into a pool and a disjoint held-out test set.

Items are ranked by sha256(f"{seed}:{id}"): the first `test_size` are `test`, the rest `pool`.
The rank depends only on the seed and each item's id, so the carving is the same whatever the
file order, and `limit` (the first N in rank order) is a seeded sample that grows by prefix.

Few-shot examples are carved the same way (`carve_shots`): the shots are the `test` part of the
carving with test_size = the number of shots, the items left its `pool` part; so a test set whose
shots come from its own file (ARC-Challenge dev, the only ARC split there is) never asks a shot.
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


def check_shot_size(size, where: str = "shot size") -> int:
    """A number of carved shots: a whole number >= 1 (never a fraction, as test_size may be)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RaitError(f"{where}: the number of shots to carve must be a whole number >= 1, got {size!r}")
    return size


def carve_shots(dataset: Dataset, size: int, *, seed: int) -> tuple[Dataset, Dataset]:
    """(shots, rest): `size` few-shot examples carved out of `dataset`, and the items left.

    This is the pool / test carving itself with test_size=size: the shots are its `test` part (the
    first `size` items in rank order), the rest its `pool` part; so the two are disjoint, together
    the whole dataset, and the same on every machine for the same seed. `rest` is empty when the
    shots take everything (a caller that tests the rest refuses that)."""
    check_shot_size(size)
    if size > len(dataset.items):
        raise RaitError(f"{dataset.source}: {size} shots asked for, but it holds only "
                        f"{len(dataset.items)} items")
    shots = carve(dataset, "test", test_size=size, seed=seed)
    shots = dataclasses.replace(shots, name=f"{dataset.name}-shots", notes=[
        *dataset.notes, f"carved {size} few-shot examples of {len(dataset.items)} items (split_seed {seed})"])
    if size == len(dataset.items):
        return shots, dataclasses.replace(dataset, items=[], fingerprint=fingerprint(
            {"base": dataset.fingerprint, "without_shots": size, "seed": seed}))
    rest = carve(dataset, "pool", test_size=size, seed=seed)
    rest = dataclasses.replace(rest, name=dataset.name, notes=[
        *dataset.notes, f"without its {size} carved few-shot examples: {len(rest.items)} of "
                        f"{len(dataset.items)} items (split_seed {seed})"])
    return shots, rest


def load_with_options(spec: str, opts: DataOptions, *, without_shots: tuple[int, int] | None = None) -> Dataset:
    """Load, carve and limit a DATASET as the shared data flags say.

    `without_shots` = (size, seed): the dataset's own carved few-shot examples (`carve_shots`)
    leave it first, before --limit, so that N items are still tested; only the whole dataset
    (part `all`) can give up its shots (its pool / test parts are another carving of it)."""
    dataset = load_dataset(spec, split=opts.split, fmt=opts.format, lenient=opts.lenient,
                           fields=opts.fields)
    if without_shots is not None:
        size, seed = without_shots
        if opts.part != "all":
            raise RaitError(f"{spec}: shots carved out of the test set itself need the whole dataset "
                            f"(part all), not its {opts.part} part; name another shot source")
        _, dataset = carve_shots(dataset, size, seed=seed)
        if not dataset.items:
            raise RaitError(f"{spec}: {size} shots carved out of its {size} items leave nothing to test; "
                            "carve fewer shots")
    dataset = carve(dataset, opts.part, test_size=opts.test_size, seed=opts.split_seed)
    if opts.limit is not None:
        dataset = take(dataset, opts.limit, seed=opts.split_seed)
    return dataset
