"""Knowledge flow: how each question's correctness changed after rehearsal training.

flow = correctness_rehearsal - correctness (Zhu et al. 2025, section 3.2). The two tables are
joined by item id. The reference code assigned flows by row position across tables of different
shapes, so question i received question floor(i/10)'s flow; a join by id cannot do that.
"""

from __future__ import annotations

from rait.errors import RaitError

FLOW_EPS = 1e-9  # flows closer to 0 than this count as "unchanged" (float round-off)


def knowledge_flow(correctness: float, correctness_rehearsal: float) -> float:
    """Positive: the rehearsed model answers this question better than the initial one."""
    return correctness_rehearsal - correctness


def index_by_id(rows: list[dict], source: str) -> dict[str, dict]:
    """id -> row; a row without an id or a repeated id is an error naming the file."""
    by_id: dict[str, dict] = {}
    for number, row in enumerate(rows, start=1):
        item_id = row.get("id")
        if item_id is None:
            raise RaitError(f"{source or 'table'}: row {number} has no 'id'")
        if item_id in by_id:
            raise RaitError(f"{source or 'table'}: duplicate id {item_id!r} (row {number})")
        by_id[item_id] = row
    return by_id


def join_flow(before: list[dict], after: list[dict], *, source_before: str = "",
              source_after: str = "") -> list[dict]:
    """Rows of `before` (in its order) plus correctness_rehearsal, certainty_rehearsal and flow
    taken from the row of `after` with the same id. Both tables must hold exactly the same ids."""
    before_by_id = index_by_id(before, source_before)
    after_by_id = index_by_id(after, source_after)
    missing = next((i for i in before_by_id if i not in after_by_id), None)
    if missing is not None:
        raise RaitError(f"{source_after or 'rehearsed table'}: no row for id {missing!r} "
                        f"(present in {source_before or 'the initial table'})")
    extra = next((i for i in after_by_id if i not in before_by_id), None)
    if extra is not None:
        raise RaitError(f"{source_after or 'rehearsed table'}: id {extra!r} is not in "
                        f"{source_before or 'the initial table'}")
    joined = []
    for item_id, row in before_by_id.items():
        other = after_by_id[item_id]
        for source, table_row in ((source_before, row), (source_after, other)):
            if not isinstance(table_row.get("correctness"), (int, float)):
                raise RaitError(f"{source or 'table'}: id {item_id!r} has no numeric 'correctness'")
        joined.append({**row, "correctness_rehearsal": other["correctness"],
                       "certainty_rehearsal": other.get("certainty"),
                       "flow": knowledge_flow(row["correctness"], other["correctness"])})
    return joined


def flow_shares(rows: list[dict], eps: float = FLOW_EPS) -> dict[str, float]:
    """Share of rows whose correctness rose / fell / stayed the same after rehearsal."""
    flows = [row["flow"] for row in rows]
    n = len(flows) or 1
    return {"rose": sum(f > eps for f in flows) / n, "fell": sum(f < -eps for f in flows) / n,
            "same": sum(abs(f) <= eps for f in flows) / n}
