"""Typed configuration: one dataclass per stage is the single place an option is defined.

Its fields give the YAML key, the CLI flag (`--max-new-tokens` for `max_new_tokens`), the
default and the help text. Precedence is defaults < YAML < CLI, decided by whether a value was
*set*, never by truthiness. Unknown keys are errors with a did-you-mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from rait.errors import RaitError


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, flag: bool = True,
           default_factory: Any = dataclasses.MISSING, at_least: float | None = None,
           above: float | None = None, at_most: float | None = None, below: float | None = None):
    """A config field with its help text. `flag=False` keeps it out of the CLI (YAML only).

    Numbers are always checked to be finite; `at_least`/`above`/`at_most`/`below` bound them
    (for a list of numbers, each element)."""
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("at_most", at_most),
                                ("below", below)) if v is not None}
    metadata = {"help": help, "choices": choices, "flag": flag, "bounds": bounds}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def number_problem(value: Any, bounds: Mapping[str, float]) -> str | None:
    """Why `value` is not an acceptable number (not finite, or out of bounds), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    words = {"at_least": (">=", value >= bounds.get("at_least", value)),
             "above": (">", "above" not in bounds or value > bounds["above"]),
             "at_most": ("<=", value <= bounds.get("at_most", value)),
             "below": ("<", "below" not in bounds or value < bounds["below"])}
    failed = [f"{sign} {bounds[key]:g}" for key, (sign, ok) in words.items() if key in bounds and not ok]
    return f"must be {' and '.join(f'{sign}' for sign in failed)}, got {value:g}" if failed else None


def check_values(cfg, where: str) -> None:
    """value_problems as one RaitError: the checks `build` runs, for a config made in code too."""
    problems = value_problems(cfg, where)
    if problems:
        raise RaitError("\n".join(problems))


CLI = "--"  # `where` of a config built from command-line flags: problems name the --flag


def key_name(where: str, key: str) -> str:
    """How a problem names an option: `section.key` for YAML, `--key-name` for the command line
    (`key` may carry a message after it: "size: must be >= 1")."""
    if where == CLI:
        name, sep, rest = key.partition(":")
        return "--" + name.replace("_", "-") + sep + rest
    return f"{where}.{key}"


def value_problems(cfg, where: str) -> list[str]:
    """Every field of the dataclass `cfg` checked against its bounds, then the class's own
    cross-field checks (a `check(self) -> list[str]` method, messages like `field: ...`)."""
    problems = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for element in value if isinstance(value, list) else [value]:
            problem = number_problem(element, f.metadata.get("bounds") or {})
            if problem:
                problems.append(f"{key_name(where, f.name)}: {problem}")
                break
    check = getattr(cfg, "check", None)
    if callable(check):
        problems += [key_name(where, message) for message in check()]
    return problems


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X`, `X | None`, `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_scalar(text: str, tp: Any) -> Any:
    if tp is bool:
        lowered = str(text).lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if tp in (int, float, str):
        return tp(text)
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp) or (str,)
        return [_parse_scalar(x.strip(), inner) for x in str(text).split(",") if x.strip()]
    return text


def _flag_parser(tp: Any):
    """argparse's `type=` for a field: its error names what was expected ("expected an integer")."""
    def parse(text: str):
        try:
            return _parse_scalar(text, tp)
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "true or false"}.get(tp, "a value")
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None

    parse.__name__ = getattr(tp, "__name__", "value")
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one `--flag` per field of the dataclass `cls`. Unset flags stay absent from the
    namespace (default=SUPPRESS) so `build` can tell "set" from "default"."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", True):
            continue
        tp, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        name = "--" + f.name.replace("_", "-")  # --max_length is accepted too (rait.cli.dashed)
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                  "help": help_with_default(f.metadata.get("help", ""), default)}
        if tp is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        choices = f.metadata.get("choices")
        parser.add_argument(name, type=_flag_parser(tp), choices=choices,
                            metavar=f.name.upper() if not choices else None, **kwargs)


def help_with_default(help_text: str, default: Any) -> str:
    """One default per help line: a help text that says its default itself (or a default of
    None, which the text explains) gets no second "(default: ...)"."""
    if "default" in help_text.lower() or (default is None and help_text):
        return help_text
    return f"{help_text} (default: {default})" if help_text else f"default: {default}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    inner, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise RaitError(f"{where}: must not be null")
    try:
        if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if inner is int and isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if inner in (int, float, str, bool):
            if isinstance(value, inner):
                return value
            if isinstance(value, str):
                return _parse_scalar(value, inner)
            raise ValueError(f"expected {inner.__name__}, got {type(value).__name__}")
        if typing.get_origin(inner) is list:
            (item_tp,) = typing.get_args(inner) or (Any,)
            if isinstance(value, str):
                value = _parse_scalar(value, inner)
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            return [value_ if item_tp is Any else _coerce(value_, item_tp, where) for value_ in value]
        if typing.get_origin(inner) is dict or inner is dict:
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {type(value).__name__}")
            return value
    except ValueError as exc:
        raise RaitError(f"{where}: {exc}") from None
    return value


def unknown_key_error(key: str, known: list[str], where: str) -> RaitError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
    return RaitError(f"{where}: unknown key '{key}'{hint}")


def build(cls, yaml_section: Mapping[str, Any] | None = None, cli: argparse.Namespace | Mapping | None = None,
          *, where: str = "config"):
    """Make a `cls` from defaults < YAML section < CLI values, checking keys and types.

    Every problem is collected and reported at once.
    """
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in (yaml_section or {}).items():
        if key not in names:
            problems.append(str(unknown_key_error(key, names, where)))
            continue
        try:
            values[key] = _coerce(value, hints[key], f"{where}.{key}")
        except RaitError as exc:
            problems.append(str(exc))
    cli_values = vars(cli) if isinstance(cli, argparse.Namespace) else dict(cli or {})
    for key, value in cli_values.items():
        if key in names:
            values[key] = value
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    problems += [f"{key_name(where, name)}: required" for name in missing]
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and values.get(f.name) is not None and values[f.name] not in choices:
            problems.append(f"{key_name(where, f.name)}: {values[f.name]!r} is not one of "
                            f"{', '.join(map(str, choices))}")
    if problems:
        raise RaitError("\n".join(problems))
    cfg = cls(**values)
    check_values(cfg, where)
    return cfg


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a mapping; every way it can be broken (not UTF-8, bad syntax, a key
    given twice, nesting too deep, a number too long) is one RaitError naming the file and line."""
    import yaml

    from rait.io import lines_of, open_text

    path = Path(path)
    with open_text(path) as handle:
        text = "".join(lines_of(handle, path))
    try:
        loaded = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise RaitError(f"{path}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise RaitError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError:  # Python refuses to convert an integer of thousands of digits
        raise RaitError(f"{path}: a number has too many digits; write a smaller one") from None
    except TypeError as exc:  # a key that is a list or mapping
        raise RaitError(f"{path}: not valid YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise RaitError(f"{path}: expected a mapping of keys at the top level, got {type(loaded).__name__}")
    return loaded


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice; keep one", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader
