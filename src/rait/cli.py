"""Command-line entry point: argument parsing and dispatch only.

Each verb lives in its own module, which exposes `add_arguments(parser)` and `run(args)`.
Modules are imported only when their verb is used, so `rait --help` stays fast (no torch).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rait import __version__
from rait.errors import RaitError

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("rait.data.cli", "validate and summarise a dataset"),
    "probe": ("rait.stages.probe", "knowledge state (correctness, certainty) of a model on a pool"),
    "rehearse": ("rait.stages.rehearse", "rehearsal training + probe again -> knowledge flow"),
    "build": ("rait.stages.build", "build a RAIT training set from a knowledge table"),
    "train": ("rait.stages.train", "supervised fine-tuning (LoRA or full)"),
    "eval": ("rait.stages.eval", "Pc / Pw / refusal rate / THS of a model on a test set"),
    "conflict": ("rait.stages.conflict", "static-conflict diagnostic (CRSS) of a RAIT set"),
    "report": ("rait.stages.report", "Markdown + HTML report of a run directory or result files"),
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


def dashed(argv: list[str]) -> list[str]:
    """`--max_length 5` as `--max-length 5`: flags are dashed, YAML keys underscored, and either
    spelling works on the command line. Only the flag's name changes, never a value."""
    out = []
    for arg in argv:
        if arg == "--":  # everything after it is a value
            out += argv[len(out):]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("_", "-") + eq + value
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = dashed(list(sys.argv[1:] if argv is None else argv))
    verb = next((a for a in argv if not a.startswith("-")), None)
    verb = verb if verb in COMMANDS else None
    parser = make_parser(verb)
    args, extra = parser.parse_known_args(argv)
    # argparse gives a positional list only the values before the first flag: `rait run C --seed 1
    # train.epochs=2` leaves train.epochs=2 over; KEY=VALUE words go to the verb's overrides
    if isinstance(getattr(args, "overrides", None), list):
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if not ("=" in a and not a.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        module = importlib.import_module(COMMANDS[args.verb][0])
        status = module.run(args)
        sys.stdout.flush()
    except RaitError as exc:
        report_error(args.verb, str(exc))
        return 2
    except BrokenPipeError:  # `rait ... | head -1`: the reader left; stop quietly, like any Unix tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # the machine refused a file operation (permissions, a full disk, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        report_error(args.verb, f"{where}{exc.strerror or exc}")
        return 2
    except KeyboardInterrupt:
        print(f"\nrait {args.verb}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return int(status or 0)


def report_error(verb: str, message: str) -> None:
    """One line: `rait VERB: error: PROBLEM`; a config with several problems lists them all on
    that line, separated by " | ", so that scripts and logs see one error per failed command."""
    problems = [line.strip() for line in message.splitlines() if line.strip()] or [message]
    print(f"rait {verb}: error: {' | '.join(problems)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
