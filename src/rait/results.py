"""The result files of `rait eval` and `rait conflict`: reading and checking them. The report shows
them; a later evaluation compares against one as its baseline. An impossible number (Pc -3, a
NaN, a percentage where a share belongs) is an error naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path

from rait import io, knowledge
from rait.errors import input_error
from rait.metrics import OUTCOMES, UNPARSED_AS

RATES = ("Pc", "Pw", "Pr")
RATE_SUM_TOLERANCE = 0.01  # Pc + Pw + Pr of one result is 1; rounded hand-made files stay within this


def check_eval_result(data, path: Path) -> dict:
    """An eval result (of `rait eval`) whose every number the report shows is possible; otherwise
    an error naming the file and the field."""
    data = check_object(data, path, None)
    missing = next((key for key in ("n", *RATES) if key not in data), None)
    if missing is not None:
        raise input_error(path, "missing; an eval result (from `rait eval`) has n, Pc, Pw and Pr", field=missing)
    n = check_count(data["n"], path, "n", at_least=1)
    total = sum(check_share(data[key], path, key) for key in RATES)
    if abs(total - 1) > RATE_SUM_TOLERANCE:
        raise input_error(path, f"Pc + Pw + Pr is {total:.4g}, not 1; they are shares of the same answers",
                          field="Pr")
    for key in ("model", "prompt", "dataset", "items_file"):
        check_text(data.get(key), path, key)
    if data.get("unparsed") is not None and check_count(data["unparsed"], path, "unparsed") > n:
        raise input_error(path, f"{data['unparsed']} unparsed answers of {n}", field="unparsed")
    check_score(data.get("THS"), path, "THS")
    check_interval(data.get("THS_ci"), path, "THS_ci")
    check_baseline(data.get("baseline"), path)
    over = data.get("over_conservative")
    if over:
        over = check_object(over, path, "over_conservative")
        check_count(over.get("count"), path, "over_conservative.count")
        if over.get("share") is not None:
            check_share(over["share"], path, "over_conservative.share")
    for key in ("by_group", "by_group_macro"):
        for group, cell in check_object(data.get(key) or {}, path, key).items():
            check_text(group, path, key)
            check_rates_cell(cell, path, f"{key}.{group}")
    check_rates_cell(data.get("macro"), path, "macro")
    scoring = check_object(data.get("scoring") or {}, path, "scoring")
    if scoring.get("unparsed_as") is not None and scoring["unparsed_as"] not in UNPARSED_AS:
        raise input_error(path, f"must be one of {', '.join(UNPARSED_AS)}, got {short(scoring['unparsed_as'])}",
                          field="scoring.unparsed_as")
    return data


def check_baseline(base, path: Path) -> None:
    """The baseline a result's THS was measured against: where it is and its Pc, Pw."""
    if base is None:
        return
    base = check_object(base, path, "baseline")
    for key in ("Pc", "Pw"):
        if base.get(key) is not None:
            check_share(base[key], path, f"baseline.{key}")
    check_text(base.get("path"), path, "baseline.path")
    if base.get("paired") is not None and not isinstance(base["paired"], bool):
        raise input_error(path, f"must be true or false, got {short(base['paired'])}", field="baseline.paired")
    if base.get("paired") and base.get("path") is None:
        raise input_error(path, "missing; a paired baseline names its result file", field="baseline.path")


def check_rates_cell(cell, path: Path, field: str) -> None:
    """A breakdown cell ({Pc, Pw, THS?}) of by_group or macro; none or {} is shown blank."""
    if not cell and (cell is None or isinstance(cell, dict)):
        return
    cell = check_object(cell, path, field)
    for key in ("Pc", "Pw"):
        check_share(cell.get(key), path, f"{field}.{key}")
    if cell.get("Pr") is not None:
        check_share(cell["Pr"], path, f"{field}.Pr")
    check_score(cell.get("THS"), path, f"{field}.THS")


def check_conflict_result(data, path: Path) -> dict:
    """A conflict result (of `rait conflict`): per threshold the similar pairs, the conflicting
    ones among them and their share."""
    data = check_object(data, path, None)
    table = check_object(data.get("crss"), path, "crss")
    if not table:
        raise input_error(path, "has no thresholds", field="crss")
    for threshold, cell in table.items():
        field = f"crss.{threshold}"
        check_text(threshold, path, "crss")
        if cell is None:
            continue
        cell = check_object(cell, path, field)
        pairs = check_count(cell.get("pairs"), path, f"{field}.pairs")
        if check_count(cell.get("conflicting"), path, f"{field}.conflicting") > pairs:
            raise input_error(path, f"{cell['conflicting']} conflicting of {pairs} pairs", field=f"{field}.conflicting")
        if cell.get("crss") is not None:
            check_share(cell["crss"], path, f"{field}.crss")
    for key in ("name", "plot"):
        check_text(data.get(key), path, key)
    return data


def short(value) -> str:
    """A value as an error message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_object(value, path: Path, field: str | None) -> dict:
    if not isinstance(value, dict):
        raise input_error(path, f"expected a JSON object, got {short(value)}", field=field)
    return value


def check_text(value, path: Path, field: str) -> None:
    """None or a string that can be written out (no lone surrogate from a \\ud800 escape)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise input_error(path, f"must be a string, got {short(value)}", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise input_error(path, f"is not valid Unicode text: {short(value)}", field=field) from None


def check_count(value, path: Path, field: str, *, at_least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        raise input_error(path, f"must be a whole number >= {at_least}, got {short(value)}", field=field)
    return value


def check_share(value, path: Path, field: str) -> float:
    """A share of answers or pairs: a finite number in [0, 1] (a fraction, not a percentage)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 < value <= 100:
        raise input_error(path, f"must be a fraction in [0, 1], got {value!r} (a percentage?)", field=field)
    return knowledge.check_number(value, path, None, field, low=0.0, high=1.0)


def check_score(value, path: Path, field: str) -> None:
    """None or a THS: finite and at most 1 (a perfect model); it has no lower bound."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1 + 1e-9:
        raise input_error(path, f"must be a finite number <= 1 (a THS), got {short(value)}", field=field)


def check_interval(value, path: Path, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) != 2:
        raise input_error(path, f"must be [low, high], got {short(value)}", field=field)
    for bound in value:
        check_score(bound, path, field)
        if bound is None:
            raise input_error(path, f"must be [low, high], got {short(value)}", field=field)
    if value[0] > value[1]:
        raise input_error(path, f"low {value[0]} is above high {value[1]}", field=field)


# ---- the per-question rows beside an eval result -----------------------------------------------

def items_file_of(path: Path, result: dict) -> Path:
    """Where an eval result's items file is: its `items_file`, a plain name beside the result."""
    from rait.layout import items_path

    name = result.get("items_file") or items_path(path).name
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or "\0" in name:
        raise input_error(path, f"must be the name of the per-question rows' file beside it, got {short(name)}",
                          field="items_file")
    return Path(path).parent / name


def read_outcome_rows(file: Path) -> list[dict]:
    """The rows of an items file, each with a unique string `id` and a known `outcome`."""
    rows: list[dict] = []
    seen: set[str] = set()
    for line, row in io.read_jsonl(file):
        item_id, outcome = row.get("id"), row.get("outcome")
        if not isinstance(item_id, str):
            raise input_error(file, f"must be a string, got {short(item_id)}", line=line, field="id")
        if item_id in seen:
            raise input_error(file, f"duplicate id {short(item_id)}", line=line, field="id")
        if outcome not in OUTCOMES:
            raise input_error(file, f"must be one of {', '.join(OUTCOMES)}, got {short(outcome)}", line=line,
                              field="outcome")
        seen.add(item_id)
        rows.append(row)
    return rows


def result_outcomes(path: Path, result: dict | None = None) -> dict[str, str] | None:
    """id -> outcome from an eval result's items file; None when the result or its items file is
    not there (copied without it). A damaged items file is an error naming its line."""
    path = Path(path)
    if result is None:
        if not path.is_file():
            return None
        result = check_object(io.read_json(path), path, None)
    file = items_file_of(path, result)
    if not file.is_file():
        return None
    return {row["id"]: row["outcome"] for row in read_outcome_rows(file)}
