"""Malformed input for `rait probe` (property-based): shard strings, numeric options, and damaged
tables / progress files that a probe resumes from. No model runs: the chunk writer is replaced by
one that appends fixed rows, so only the stage's own reading, checking and resuming is tested."""

import contextlib
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rait import config, io
from rait.data.schema import make_oeqa_item
from rait.errors import RaitError
from rait.stages import probe

ITEMS = [make_oeqa_item(f"Pool question number {i}?", [f"answer {i}"]) for i in range(7)]
CHUNK = 2
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected_row(item: dict) -> dict:
    return {**item, "task": "oeqa", "correctness": 0.5, "certainty": 0.25, "samples": ["x", "y"]}


def fake_run_chunks(items, out, done, plan, cfg, backend, loaded, embedder) -> None:
    with io.JsonlAppender(out) as sink:
        for start in range(done, len(items), probe.ROWS_PER_WRITE):
            sink.write([expected_row(item) for item in items[start:start + probe.ROWS_PER_WRITE]])


@contextlib.contextmanager
def modelless_probe():
    """probe.probe with the fake chunk writer, small chunks and no model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probe, "run_chunks", fake_run_chunks)
        patch.setattr(probe, "ROWS_PER_WRITE", CHUNK)
        yield lambda out, **kw: probe.probe(probe.ProbeConfig(**kw), ITEMS, out, loaded=(None, None, {}))


def table_bytes() -> bytes:
    return "".join(io.dumps_row(expected_row(item)) + "\n" for item in ITEMS).encode()


# ---- shard strings ---------------------------------------------------------------------------

@FAST
@given(st.one_of(st.text(max_size=12), st.from_regex(r"-?\d{0,3}/-?\d{0,3}(/\d)?", fullmatch=True)))
def test_shard_strings_parse_or_raise_cleanly(text):
    try:
        index, count = probe.parse_shard(text)
    except RaitError as exc:
        assert str(exc).startswith("--shard: ")
        return
    assert 0 <= index < count and [int(part) for part in text.split("/")] == [index, count]


@pytest.mark.parametrize("text", ["3/2", "a/b", "0/0", "1/0", "-1/2", "1/2/3", "", "/", "1/", "1.0/2", "½/2"])
def test_bad_shard_strings(text):
    with pytest.raises(RaitError, match="--shard"):
        probe.parse_shard(text)


def test_shard_option_combinations():
    assert probe.check_shard_options("1/3", None) == (1, 3)
    assert probe.check_shard_options(None, None) is None
    for merge in (0, -2):
        with pytest.raises(RaitError, match="--merge-shards: must be >= 1"):
            probe.check_shard_options(None, merge)
    with pytest.raises(RaitError, match="give one of them"):
        probe.check_shard_options("0/2", 2)


# ---- numeric options -------------------------------------------------------------------------

NUMERIC = [f for f in dataclasses.fields(probe.ProbeConfig) if f.name in
           {"samples", "shots", "temperature", "top_p", "max_new_tokens", "batch_size", "seed"}]
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                   st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0.5", "3", "1_0", " 2 "]))


@FAST
@given(st.dictionaries(st.sampled_from([f.name for f in NUMERIC]), VALUES, min_size=1))
def test_numeric_options_are_rejected_or_finite_and_in_bounds(section):
    try:
        cfg = config.build(probe.ProbeConfig, section, where="probe")
    except RaitError as exc:
        assert all(line.startswith("probe.") for line in str(exc).splitlines())
        return
    for f in NUMERIC:
        value = getattr(cfg, f.name)
        if value is None:
            continue
        assert isinstance(value, (int, float)) and math.isfinite(value)
        assert config.number_problem(value, f.metadata["bounds"]) is None
    config.check_values(cfg, "probe")


@pytest.mark.parametrize("field, value", [("samples", 0), ("temperature", float("nan")), ("top_p", 0.0),
                                          ("top_p", float("inf")), ("max_new_tokens", -1), ("shots", -1)])
def test_check_config_names_the_field_of_a_config_made_in_code(field, value):
    cfg = dataclasses.replace(probe.ProbeConfig(), **{field: value})
    with pytest.raises(RaitError, match=rf"^probe\.{field}: must be"):
        config.check_values(cfg, "probe")


# ---- damaged tables and progress files --------------------------------------------------------

def damaged(data: bytes, kind: str, where: int, noise: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    if kind == "append":
        return data + noise
    if kind == "corrupt-line":
        index = where % len(lines)
        return b"".join(lines[:index] + [noise.replace(b"\n", b" ") + b"\n"] + lines[index + 1:])
    if kind == "torn":
        return data[: where % (len(data) + 1)]
    raise ValueError(kind)


def start_state(folder: Path, state: str) -> tuple[Path, str]:
    """A finished table (state 'finished') or an interrupted one ('interrupted': no meta, a progress file)."""
    out = folder / "k.jsonl"
    with modelless_probe() as run:
        run(out)
    meta = probe.meta_path(out)
    fp = json.loads(meta.read_text())["fingerprint"]
    if state == "interrupted":
        meta.unlink()
        probe.progress_path(out).write_text(json.dumps({"fingerprint": fp}))
    return out, fp


def assert_clean_or_complete(out: Path, fp: str) -> None:
    """Probe again: a clean RaitError, or the whole correct table with its meta."""
    with modelless_probe() as run:
        try:
            rows = run(out)
        except RaitError as exc:
            assert "Traceback" not in str(exc) and len(str(exc).splitlines()) == 1
            return
    assert out.read_bytes() == table_bytes()
    assert rows == [expected_row(item) for item in ITEMS]
    assert json.loads(probe.meta_path(out).read_text())["fingerprint"] == fp
    assert not probe.progress_path(out).exists()


@FAST
@given(st.sampled_from(["finished", "interrupted"]), st.sampled_from(["append", "corrupt-line", "torn"]),
       st.integers(0, 10**6), st.binary(max_size=40))
def test_a_damaged_table_is_refused_or_resumed_correctly(state, kind, where, noise):
    with tempfile.TemporaryDirectory() as folder:
        out, fp = start_state(Path(folder), state)
        out.write_bytes(damaged(out.read_bytes(), kind, where, noise))
        assert_clean_or_complete(out, fp)


@FAST
@given(st.one_of(st.binary(max_size=60), st.sampled_from([b"", b"[]", b"null", b'{"fingerprint": 3}',
                                                          b'{"fingerprint": "other"}', b"\xff\xfe{"])),
       st.integers(0, len(ITEMS)))
def test_a_damaged_progress_file_is_refused_or_starts_again(progress, rows_kept):
    with tempfile.TemporaryDirectory() as folder:
        out, fp = start_state(Path(folder), "interrupted")
        out.write_bytes(b"".join(table_bytes().splitlines(keepends=True)[:rows_kept]))
        probe.progress_path(out).write_bytes(progress)
        assert_clean_or_complete(out, fp)


def test_damaged_table_with_overwrite_starts_again(tmp_path):
    out, fp = start_state(tmp_path, "interrupted")
    out.write_bytes(damaged(out.read_bytes(), "corrupt-line", 1, b"\xff garbage"))
    with modelless_probe() as run:
        with pytest.raises(RaitError, match=r"k\.jsonl.*line 2"):
            run(out)
        run(out, overwrite=True)
    assert out.read_bytes() == table_bytes()


def test_a_table_whose_rows_lost_their_numbers_is_refused(tmp_path):
    out, _ = start_state(tmp_path, "finished")
    lines = out.read_text().splitlines(keepends=True)
    row = json.loads(lines[3])
    row["correctness"] = 7
    out.write_text("".join(lines[:3] + [json.dumps(row) + "\n"] + lines[4:]))
    with modelless_probe() as run, pytest.raises(RaitError, match=r"k\.jsonl.*correctness"):
        run(out)


# ---- outputs and shards ------------------------------------------------------------------------

def test_output_paths_are_checked_before_anything_runs(tmp_path):
    (tmp_path / "outdir").mkdir()
    (tmp_path / "notes.txt").write_text("x\n")
    with modelless_probe() as run:
        with pytest.raises(RaitError, match="outdir: is a directory"):
            run(tmp_path / "outdir")
        with pytest.raises(RaitError, match="notes.txt is a file, not a folder"):
            run(tmp_path / "notes.txt" / "k.jsonl")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("x\n")
    with pytest.raises(RaitError, match="is also an input"):
        probe.probe(probe.ProbeConfig(), ITEMS, pool, dataset_meta={"spec": str(pool)})
    assert pool.read_text() == "x\n" and (tmp_path / "notes.txt").read_text() == "x\n"


def shards(tmp_path: Path, count: int, dataset_fp: str = "d") -> Path:
    out = tmp_path / "k.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probe, "run_chunks", fake_run_chunks)
        for index in range(count):
            probe.probe(probe.ProbeConfig(), probe.shard_items(ITEMS, index, count),
                        probe.shard_path(out, index, count), loaded=(None, None, {}),
                        dataset_meta={"fingerprint": dataset_fp, "shard": f"{index}/{count}"})
    return out


def test_merge_writes_the_table_or_nothing(tmp_path):
    out = shards(tmp_path, 3)
    with pytest.raises(RaitError, match="another dataset"):
        probe.merge_shards(ITEMS, out, 3, "other")
    with pytest.raises(RaitError, match="do not cover"):
        probe.merge_shards(ITEMS[:-1], out, 3, "d")
    assert not out.exists() and not probe.meta_path(out).exists()
    probe.merge_shards(ITEMS, out, 3, "d")
    assert out.read_bytes() == table_bytes() and probe.meta_path(out).exists()


def test_merge_with_a_missing_or_mismatching_shard_writes_nothing(tmp_path):
    out = shards(tmp_path, 2)
    meta = probe.meta_path(probe.shard_path(out, 1, 2))
    recorded = json.loads(meta.read_text())
    meta.write_text(json.dumps({**recorded, "config": {**recorded["config"], "samples": 3}}))
    with pytest.raises(RaitError, match=r"shard-1-of-2\.jsonl: probed with other settings"):
        probe.merge_shards(ITEMS, out, 2, "d")
    meta.write_text("{damaged")
    with pytest.raises(RaitError, match=r"shard 1/2 is missing or unfinished"):
        probe.merge_shards(ITEMS, out, 2, "d")
    meta.unlink()
    with pytest.raises(RaitError, match=r"--shard 1/2"):
        probe.merge_shards(ITEMS, out, 2, "d")
    assert not out.exists() and not probe.meta_path(out).exists()


def test_merge_refuses_to_replace_a_foreign_file(tmp_path):
    out = shards(tmp_path, 2)
    out.write_text("mine\n")
    with pytest.raises(RaitError, match="not written by `rait probe`"):
        probe.merge_shards(ITEMS, out, 2, "d")
    assert out.read_text() == "mine\n"


# ---- the MCQA certainty rule ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["raw", "Normalised", "", 3, None])
def test_an_unknown_mcqa_certainty_is_one_error(value):
    with pytest.raises(RaitError, match=r"^probe\.mcqa_certainty"):
        config.build(probe.ProbeConfig, {"mcqa_certainty": value}, where="probe")


def test_raw_entropy_needs_a_backend_that_reports_raw_letter_probabilities(tmp_path, monkeypatch):
    """A backend with option_probs only (renormalised) cannot give the reference's ranking: refused
    before anything runs, and nothing is written."""
    from types import SimpleNamespace

    from rait.data.schema import make_mcqa_item

    items = [make_mcqa_item("Largest planet?", {"A": "Mars", "B": "Jupiter"}, "B", subject="astronomy")]
    monkeypatch.setattr(probe, "get_backend", lambda name: SimpleNamespace(option_probs=None))
    cfg = probe.ProbeConfig(mcqa_certainty="raw-entropy", shots=0)
    with pytest.raises(RaitError, match="raw option-letter probabilities"):
        probe.probe(cfg, items, tmp_path / "m.jsonl", loaded=(None, None, {}))
    assert list(tmp_path.iterdir()) == []
