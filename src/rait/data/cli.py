"""`rait data DATASET`: validate a dataset and print a one-screen summary (or JSON with --json).

Imports no torch: it must stay fast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter

from rait import config
from rait.data.loaders import detect_format
from rait.data.schema import Dataset
from rait.data.split import DataOptions, load_with_options
from rait.errors import RaitError

MAX_SKIPPED_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET",
                        help="built-in name (demo-oeqa, demo-mcqa), local file or folder, or hf:REPO[:CONFIG]")
    config.add_arguments(parser, DataOptions)
    parser.add_argument("--examples", type=int, default=3, help="how many items to show (default: 3)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    opts = config.build(DataOptions, None, args, where=config.CLI)
    if args.examples < 0:
        raise RaitError(f"--examples: must be >= 0, got {args.examples}")
    fmt = detect_format(args.dataset, split=opts.split, fmt=opts.format)
    print(f"rait data: reading {args.dataset} as {fmt}"
          + (f", split {opts.split}" if opts.split else "")
          + (f", part {opts.part} (test_size {opts.test_size:g}, split_seed {opts.split_seed})"
             if opts.part != "all" else "")
          + (", lenient" if opts.lenient else ""), file=sys.stderr)
    dataset = load_with_options(args.dataset, opts)
    summary = summarize(dataset, fmt=fmt, examples=args.examples)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
    return 0


def summarize(dataset: Dataset, *, fmt: str, examples: int = 3) -> dict:
    """Counts and distributions of a loaded dataset, as JSON-able data."""
    items = dataset.items
    summary = {
        "name": dataset.name, "source": dataset.source, "format": fmt, "task": dataset.task,
        "items": len(items), "skipped": len(dataset.skipped), "fingerprint": dataset.fingerprint,
        "fields": sorted({key for item in items for key in item}),
    }
    if dataset.task == "mcqa":
        summary["subjects"] = dict(Counter(item["subject"] for item in items).most_common())
        summary["option_counts"] = dict(sorted(Counter(len(item["choices"]) for item in items).items()))
        summary["targets"] = dict(sorted(Counter(item["target"] for item in items).items()))
    else:
        counts = [len(item["answers"]) for item in items]
        summary["answers_per_item"] = {"min": min(counts), "mean": round(statistics.fmean(counts), 2),
                                       "median": statistics.median(counts), "max": max(counts)}
    summary["skipped_rows"] = [{"where": where, "reason": reason} for where, reason in dataset.skipped]
    summary["notes"] = list(dataset.notes)
    summary["examples"] = items[:examples]
    return summary


def format_summary(summary: dict) -> str:
    """The human-readable one-screen version of `summarize`."""
    lines = [
        f"dataset      {summary['name']}  ({summary['source']})",
        f"format       {summary['format']}",
        f"task         {summary['task']}",
        f"items        {summary['items']}" + (f"  ({summary['skipped']} rows skipped)" if summary["skipped"] else ""),
        f"fields       {', '.join(summary['fields'])}",
        f"fingerprint  {summary['fingerprint']}",
    ]
    if summary["task"] == "mcqa":
        lines.append(f"options      {_counts(summary['option_counts'], 'choices')}")
        lines.append(f"targets      {_counts(summary['targets'])}")
        subjects = summary["subjects"]
        lines.append(f"subjects     {len(subjects)}")
        lines += _columns([f"{name} {count}" for name, count in subjects.items()])
    else:
        stats = summary["answers_per_item"]
        lines.append(f"answers/item min {stats['min']}, mean {stats['mean']}, median {stats['median']}, "
                     f"max {stats['max']}")
    if summary["skipped_rows"]:
        lines.append("skipped rows:")
        shown = summary["skipped_rows"][:MAX_SKIPPED_SHOWN]
        lines += [f"  {row['where']}: {row['reason']}" for row in shown]
        if len(summary["skipped_rows"]) > len(shown):
            lines.append(f"  ... and {len(summary['skipped_rows']) - len(shown)} more (see --json)")
    if summary["notes"]:
        lines.append("notes:")
        lines += [f"  {note}" for note in summary["notes"]]
    if summary["examples"]:
        lines.append("examples:")
        lines += [f"  {_example(item)}" for item in summary["examples"]]
    return "\n".join(lines)


def _counts(counter: dict, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    return ", ".join(f"{key}{suffix}: {value}" for key, value in counter.items())


def _columns(entries: list[str], width: int = 100, indent: str = "  ") -> list[str]:
    """Pack short 'name count' entries into lines no wider than `width` (57 MMLU subjects fit a screen)."""
    lines, current = [], indent
    for entry in entries:
        if len(current) + len(entry) + 2 > width and current.strip():
            lines.append(current.rstrip(", "))
            current = indent
        current += entry + ", "
    if current.strip():
        lines.append(current.rstrip(", "))
    return lines


def _example(item: dict, width: int = 160) -> str:
    if item["task"] == "mcqa":
        options = " ".join(f"{label}) {text}" for label, text in item["choices"].items())
        text = f"[{item['id']}] {item['question']} | {options} | target {item['target']} | {item['subject']}"
    else:
        more = f" (+{len(item['answers']) - 1} aliases)" if len(item["answers"]) > 1 else ""
        text = f"[{item['id']}] {item['question']} -> {item['answers'][0]}{more}"
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."
