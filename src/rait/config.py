"""Typed configuration: one dataclass per stage is the single place an option is defined.

Its fields give the YAML key, the CLI flag (`--max-new-tokens` for `max_new_tokens`), the
default and the help text. Precedence is defaults < YAML < CLI, decided by whether a value was
*set*, never by truthiness. Unknown keys are errors with a did-you-mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping

from rait.errors import RaitError


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, flag: bool = True,
           default_factory: Any = dataclasses.MISSING):
    """A config field with its help text. `flag=False` keeps it out of the CLI (YAML only)."""
    metadata = {"help": help, "choices": choices, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        name = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        choices = f.metadata.get("choices")
        parser.add_argument(name, type=lambda s, tp=tp: _parse_scalar(s, tp), choices=choices,
                            metavar=f.name.upper() if not choices else None, **kwargs)


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
    problems += [f"{where}.{name}: required" for name in missing]
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and values.get(f.name) is not None and values[f.name] not in choices:
            problems.append(f"{where}.{f.name}: {values[f.name]!r} is not one of {', '.join(map(str, choices))}")
    if problems:
        raise RaitError("\n".join(problems))
    return cls(**values)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
