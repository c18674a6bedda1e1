"""The knowledge table: one row per pool item with the model's correctness and certainty (from
`rait probe`), and after `rait rehearse` the knowledge flow. Every stage and the report read,
check and summarise it through this module.

Row: an item (rait.data.schema) plus
    correctness            in [0, 1]   share of sampled answers that are right (OEQA) / P(target) (MCQA)
    certainty              in [0, 1]   consistency of the samples (OEQA) / 1 - normalised entropy (MCQA)
    correctness_rehearsal  in [0, 1]   the same after rehearsal training
    certainty_rehearsal    in [0, 1]
    flow                   in [-1, 1]  correctness_rehearsal - correctness (Zhu et al. 2025, 3.2)
OEQA rows also keep their `samples`; MCQA rows their `probs` (renormalised over the option
letters), `option_mass` (the raw letter probabilities), `letter_mass` (their sum), `entropy_raw`
(the reference's entropy of the raw letter probabilities) and `no_letter_mass` (true when the
letters got no probability at all: probs are then uniform and certainty 0).

The two tables of a rehearsal are joined by item id. The reference code assigned flows by row
position across tables of different shapes, so question i received question floor(i/10)'s flow;
a join by id cannot do that.
"""

from __future__ import annotations

import math
from pathlib import Path

from rait.errors import RaitError, input_error

FIELDS = ("correctness", "certainty", "flow")  # the fields that decide a row's label
UNIT_FIELDS = ("correctness", "certainty", "correctness_rehearsal", "certainty_rehearsal")
FLOW_EPS = 1e-9  # flows closer to 0 than this count as "unchanged" (float round-off)


# ---- reading and checking ---------------------------------------------------------------------

def read_table(path: str | Path) -> list[dict]:
    """The checked rows of a knowledge table file; any problem names the file, line and field."""
    from rait import io

    numbered = list(io.read_jsonl(path))
    if not numbered:
        raise RaitError(f"{path}: the knowledge table is empty")
    table = [row for _, row in numbered]
    check_table(table, str(path), [line for line, _ in numbered])
    return table


def check_table(table: list[dict], source: str, lines: list[int] | None = None) -> None:
    """Every row is a valid item with finite correctness/certainty in [0, 1] and, where present,
    a finite flow in [-1, 1]; ids unique; one task. `source` is the file the rows came from."""
    from rait.data.schema import item_from_row

    if table and is_rait_set_row(table[0]):
        raise input_error(source, "this is a RAIT set (from `rait build`), not a knowledge table "
                                  "(from `rait probe` / `rait rehearse`)", line=lines[0] if lines else 1)
    seen: set[str] = set()
    for index, row in enumerate(table):
        line = lines[index] if lines else index + 1
        if row.get("id") in (None, ""):
            raise input_error(source, "is missing (every knowledge-table row has the id of its item)",
                              line=line, field="id")
        item_from_row(row, path=source, line=line)
        for field in UNIT_FIELDS:  # the rehearsal's fields only after `rait rehearse`
            if row.get(field) is not None or field in ("correctness", "certainty"):
                check_number(row.get(field), source, line, field, low=0.0, high=1.0)
        if row.get("flow") is not None:
            check_number(row["flow"], source, line, "flow", low=-1.0, high=1.0)
        if not isinstance(row["id"], str):
            raise input_error(source, f"must be a string, got {row['id']!r} (quote it)", line=line, field="id")
        if row["id"] in seen:
            raise input_error(source, f"duplicate id {row['id']!r}", line=line, field="id")
        seen.add(row["id"])
    tasks = sorted({row_task(row) for row in table})
    if len(tasks) > 1:
        raise RaitError(f"{source}: mixes tasks ({', '.join(tasks)}); build one RAIT set per task")


def check_number(value, source, line: int | None, field: str, *, low: float, high: float) -> float:
    """A finite number in [low, high], or an error naming the file, line and field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise input_error(source, f"must be a number in [{low:g}, {high:g}], got {value!r}", line=line, field=field)
    if not math.isfinite(value) or not low <= value <= high:
        raise input_error(source, f"must be a finite number in [{low:g}, {high:g}], got {value!r}",
                          line=line, field=field)
    return float(value)


def is_rait_set_row(row: dict) -> bool:
    """A row written by `rait build` (it has a label and a training target) rather than a table row."""
    return "label" in row and any(key in row for key in ("completion", "messages", "output", "conversation"))


def row_task(row: dict) -> str:
    return row.get("task") or ("mcqa" if "choices" in row else "oeqa")


def table_task(table: list[dict]) -> str:
    return row_task(table[0])


def has_flow(table: list[dict]) -> bool:
    return bool(table) and all(row.get("flow") is not None for row in table)


# ---- knowledge flow -------------------------------------------------------------------------

def knowledge_flow(correctness: float, correctness_rehearsal: float) -> float:
    """Positive: the rehearsed model answers this question better than the initial one."""
    return correctness_rehearsal - correctness


def flow_direction(flow: float) -> str:
    """rose / fell / same: the one rule every count of flows uses (|flow| <= FLOW_EPS is same)."""
    if flow > FLOW_EPS:
        return "rose"
    if flow < -FLOW_EPS:
        return "fell"
    return "same"


def flow_counts(flows) -> dict[str, int]:
    counts = {"rose": 0, "fell": 0, "same": 0}
    for flow in flows:
        counts[flow_direction(flow)] += 1
    return counts


def flow_shares(rows: list[dict]) -> dict[str, float]:
    """Share of rows whose correctness rose / fell / stayed the same after rehearsal."""
    counts = flow_counts(row["flow"] for row in rows)
    n = len(rows) or 1
    return {direction: count / n for direction, count in counts.items()}


def index_by_id(rows: list[dict], source: str) -> dict[str, dict]:
    """id -> row; a row without an id or a repeated id is an error naming the file."""
    by_id: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        item_id = row.get("id")
        if item_id is None:
            raise RaitError(f"{source}: row {number} has no 'id'")
        if item_id in by_id:
            raise RaitError(f"{source}: duplicate id {item_id!r} (row {number})")
        by_id[item_id] = row
    return by_id


def join_flow(before: list[dict], after: list[dict], *, source_before: str = "the initial table",
              source_after: str = "the rehearsed table") -> list[dict]:
    """Rows of `before` (in its order) plus correctness_rehearsal, certainty_rehearsal and flow
    taken from the row of `after` with the same id. Both tables must hold exactly the same ids."""
    before_by_id = index_by_id(before, source_before)
    after_by_id = index_by_id(after, source_after)
    missing = next((i for i in before_by_id if i not in after_by_id), None)
    if missing is not None:
        raise RaitError(f"{source_after}: no row for id {missing!r} (present in {source_before})")
    extra = next((i for i in after_by_id if i not in before_by_id), None)
    if extra is not None:
        raise RaitError(f"{source_after}: id {extra!r} is not in {source_before}")
    joined = []
    for item_id, row in before_by_id.items():
        other = after_by_id[item_id]
        for source, table_row in ((source_before, row), (source_after, other)):
            value = table_row.get("correctness")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise RaitError(f"{source}: id {item_id!r} has no numeric 'correctness' in [0, 1] (got {value!r})")
        joined.append({**row, "correctness_rehearsal": other["correctness"],
                       "certainty_rehearsal": other.get("certainty"),
                       "flow": knowledge_flow(row["correctness"], other["correctness"])})
    return joined


# ---- statistics -----------------------------------------------------------------------------

def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def distribution(values: list[float]) -> dict | None:
    """mean and quartiles, or None for no values."""
    if not values:
        return None
    values = sorted(values)
    return {"mean": sum(values) / len(values), "min": values[0], "q1": quantile(values, 0.25),
            "median": quantile(values, 0.5), "q3": quantile(values, 0.75), "max": values[-1]}


def field_distributions(rows: list[dict], fields=FIELDS) -> dict[str, dict | None]:
    """distribution() of each field over the rows that have it."""
    return {field: distribution([row[field] for row in rows if row.get(field) is not None]) for field in fields}


def mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None
