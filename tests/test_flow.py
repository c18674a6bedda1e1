import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.errors import RaitError
from rait.knowledge import flow_shares, join_flow, knowledge_flow


def rows(values, certainty=0.5):
    return [{"id": f"q{i}", "question": f"Q{i}?", "correctness": c, "certainty": certainty}
            for i, c in enumerate(values)]


def test_flow_is_after_minus_before_joined_by_id():
    before = rows([0.2, 0.5, 1.0])
    after = rows([0.6, 0.5, 0.7], certainty=0.9)[::-1]  # different row order
    joined = join_flow(before, after)
    assert [r["id"] for r in joined] == ["q0", "q1", "q2"]  # the initial table's order
    assert [round(r["flow"], 9) for r in joined] == [0.4, 0.0, -0.3]
    assert [r["correctness_rehearsal"] for r in joined] == [0.6, 0.5, 0.7]
    assert all(r["certainty_rehearsal"] == 0.9 and r["certainty"] == 0.5 for r in joined)
    assert joined[0]["question"] == "Q0?"
    assert knowledge_flow(0.25, 0.75) == 0.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30), st.integers(0, 99))
def test_shuffled_rehearsal_table_gives_the_same_flow(pairs, seed):
    before = rows([b for b, _ in pairs])
    after = rows([a for _, a in pairs])
    shuffled = list(after)
    random.Random(seed).shuffle(shuffled)
    assert join_flow(before, after) == join_flow(before, shuffled)
    assert [r["flow"] for r in join_flow(before, shuffled)] == [a - b for b, a in pairs]


def test_missing_extra_and_duplicate_ids_name_file_and_id():
    before, after = rows([0.1, 0.2, 0.3]), rows([0.1, 0.2, 0.3])
    with pytest.raises(RaitError, match=r"after\.jsonl: no row for id 'q2'"):
        join_flow(before, after[:2], source_before="before.jsonl", source_after="after.jsonl")
    with pytest.raises(RaitError, match=r"after\.jsonl: id 'q3' is not in before\.jsonl"):
        join_flow(before, rows([0.1, 0.2, 0.3, 0.4]), source_before="before.jsonl", source_after="after.jsonl")
    with pytest.raises(RaitError, match=r"before\.jsonl: duplicate id 'q1'"):
        join_flow(before + [before[1]], after, source_before="before.jsonl", source_after="after.jsonl")
    broken = rows([0.1, 0.2, 0.3])
    del broken[1]["correctness"]
    with pytest.raises(RaitError, match=r"after\.jsonl: id 'q1' has no numeric 'correctness'"):
        join_flow(before, broken, source_before="before.jsonl", source_after="after.jsonl")


def test_flow_shares():
    joined = join_flow(rows([0.2, 0.5, 1.0, 0.3]), rows([0.6, 0.5, 0.7, 0.3]))
    assert flow_shares(joined) == {"rose": 0.25, "fell": 0.25, "same": 0.5}
