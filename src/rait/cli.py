"""Command-line entry point: argument parsing and dispatch only.

Each verb lives in its own module, which exposes `add_arguments(parser)` and `run(args)`.
Modules are imported only when their verb is used, so `rait --help` stays fast (no torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rait import __version__
from rait.errors import RaitError

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("rait.data.cli", "validate and summarise a dataset"),
    "probe": ("rait.knowledge.probe", "knowledge state (correctness, certainty) of a model on a pool"),
    "rehearse": ("rait.knowledge.rehearse", "rehearsal training + probe again -> knowledge flow"),
    "build": ("rait.methods", "build a RAIT training set from a knowledge table"),
    "train": ("rait.training", "supervised fine-tuning (LoRA or full)"),
    "eval": ("rait.evaluation", "Pc / Pw / refusal rate / THS of a model on a test set"),
    "conflict": ("rait.conflict", "static-conflict diagnostic (CRSS) of a RAIT set"),
    "report": ("rait.report", "Markdown + HTML report of a run directory or result files"),
    "run": ("rait.pipeline", "the whole experiment from one YAML config, resumable"),
}


def make_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rait", description="Refusal-aware instruction tuning of language models (CRaFT).")
    parser.add_argument("--version", action="version", version=f"rait {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        verb_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:  # only the chosen verb's module is imported
            importlib.import_module(module_name).add_arguments(verb_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    verb = verb if verb in COMMANDS else None
    parser = make_parser(verb)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        module = importlib.import_module(COMMANDS[args.verb][0])
        status = module.run(args)
    except RaitError as exc:
        print(f"rait {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nrait {args.verb}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
