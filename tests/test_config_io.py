"""The shared machinery: config precedence and validation, atomic and resumable file writing."""

import argparse
import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rait.config import add_arguments, build, option
from rait.errors import RaitError
from rait.io import JsonlAppender, atomic_path, fingerprint, read_jsonl, recover_jsonl, write_jsonl_atomic


@dataclasses.dataclass
class Example:
    samples: int = option(10, "samples per question")
    temperature: float = option(1.0, "sampling temperature")
    match: str = option("contains", "matching", choices=["contains", "exact"])
    model: str | None = option(None, "model")
    merge: bool = option(True, "merge adapters")
    phrases: list[str] | None = option(None, "phrases")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example)
    return parser.parse_args(argv)


def test_defaults_yaml_cli_precedence_by_presence_not_truthiness():
    cfg = build(Example, {"samples": 5, "merge": True}, parse(["--samples", "0", "--no-merge"]))
    assert cfg.samples == 0  # a falsy CLI value still overrides YAML
    assert cfg.merge is False
    assert cfg.temperature == 1.0
    assert build(Example, {"temperature": 0}, parse([])).temperature == 0.0


def test_cli_list_and_optional_types():
    cfg = build(Example, None, parse(["--phrases", "I don't know, no idea", "--model", "x/y"]))
    assert cfg.phrases == ["I don't know", "no idea"]
    assert cfg.model == "x/y"


def test_unknown_keys_and_bad_types_reported_together():
    with pytest.raises(RaitError) as err:
        build(Example, {"sampels": 3, "temperature": "hot", "match": "fuzzy"}, where="probe")
    message = str(err.value)
    assert "probe: unknown key 'sampels'; did you mean 'samples'?" in message
    assert "probe.temperature" in message
    assert "probe.match: 'fuzzy' is not one of contains, exact" in message


def test_boolean_is_not_an_integer():
    with pytest.raises(RaitError, match="samples"):
        build(Example, {"samples": True})


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(RaitError, match=r"x.jsonl, line 3: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('[1, 2]\n')
    with pytest.raises(RaitError, match="line 1: expected a JSON object"):
        list(read_jsonl(path))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
    assert write_jsonl_atomic(target, [{"a": 1}, {"a": 2}]) == 2
    assert [row for _, row in read_jsonl(target)] == [{"a": 1}, {"a": 2}]


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), max_size=8),
       st.binary(max_size=20))
def test_recover_jsonl_keeps_complete_rows_and_cuts_torn_tail(tmp_path_factory, rows, garbage):
    path = tmp_path_factory.mktemp("rec") / "t.jsonl"
    with JsonlAppender(path) as out:
        out.write(rows)
    with path.open("ab") as handle:  # a write cut short by a kill: no trailing newline
        handle.write(garbage.replace(b"\n", b""))
    assert recover_jsonl(path) == rows
    with JsonlAppender(path) as out:  # appending after recovery yields a clean file
        out.write([{"next": 1}])
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): rows may hold U+2028
    assert [json.loads(line) for line in lines if line] == rows + [{"next": 1}]


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
