"""Loaders: every supported source becomes a validated `Dataset` of OEQA or MCQA items.

A DATASET spec is a built-in name (`demo-oeqa`, `demo-mcqa`), a local file or folder (format
detected from its extension and first row, or forced with `fmt`), or `hf:REPO[:CONFIG]`.

Each format is a *reader* (bytes -> numbered raw rows) plus a *builder* (raw row -> item via
`make_oeqa_item` / `make_mcqa_item`). A bad row raises one `RaitError` naming file, line and
field; with `lenient=True` it is recorded in `Dataset.skipped` instead, never dropped silently.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import dataclasses
import difflib
import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from rait.data.schema import Dataset, dedupe_ids, make_mcqa_item, make_oeqa_item
from rait.errors import RaitError, input_error
from rait.io import file_fingerprint, fingerprint
from rait.scoring import normalize

FORMATS = ("generic", "triviaqa-tsv", "triviaqa", "nq-open", "mmlu", "arc")
BUILTIN = {  # name -> {split: file in rait/data/demo}; the None split is the default
    "demo-oeqa": {None: "oeqa.jsonl", "shots": "oeqa_shots.jsonl"},
    "demo-mcqa": {None: "mcqa.jsonl", "dev": "mcqa_dev.jsonl"},
}
MMLU_SPLITS = ("dev", "val", "test")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")
# Known hub repos: (format, default config, default split). Test splits of TriviaQA and NQ
# have no public answers, so their default is the validation split.
HUB_REPOS = {
    "mandarjoshi/trivia_qa": ("triviaqa", "rc.nocontext", "validation"),
    "google-research-datasets/nq_open": ("nq-open", None, "validation"),
    "cais/mmlu": ("mmlu", "all", "test"),
    "allenai/ai2_arc": ("arc", "ARC-Challenge", "test"),
}
HUB_SPLIT_NAMES = {"val": "validation"}  # rait's MMLU folder names -> hub split names


@dataclasses.dataclass
class Row:
    """One raw record and where it came from; `data` is a RaitError when it could not be parsed."""

    where: str  # file (or "file, record N") for input_error
    line: int | None
    data: dict | RaitError


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

def load_dataset(spec: str, *, split: str | None = None, fmt: str | None = None, lenient: bool = False,
                 limit: int | None = None, fields: dict | None = None) -> Dataset:
    """Load `spec` into a Dataset; `limit` keeps the first N valid items in source order."""
    _check_format(fmt)
    fields = dict(fields or {})
    if limit is not None and limit < 1:
        raise RaitError(f"limit must be a positive number of items, got {limit}")
    if spec.startswith("hf:"):
        return _load_hub(spec, split=split, fmt=fmt, lenient=lenient, limit=limit, fields=fields)
    if spec in BUILTIN:
        path = _builtin_path(spec, split)
        name = spec if split is None else f"{spec}-{split}"
        return _load_file(path, name=name, fmt=fmt, lenient=lenient, limit=limit, fields=fields,
                          origin=f"{spec} (split {split or 'default'})")
    path = _local_path(spec)
    if path.is_dir():
        return _load_folder(path, split=split, fmt=fmt, lenient=lenient, limit=limit, fields=fields)
    if split is not None:
        raise RaitError(f"{spec}: --split applies to built-in, folder and hub datasets, not to a "
                        "single file")
    return _load_file(path, name=path.stem, fmt=fmt, lenient=lenient, limit=limit, fields=fields)


def detect_format(spec: str, *, split: str | None = None, fmt: str | None = None) -> str:
    """The format `load_dataset` reads `spec` as (e.g. 'arc', 'mmlu', 'hub:nq-open', 'builtin')."""
    _check_format(fmt)
    if spec.startswith("hf:"):
        repo = spec[3:].split(":", 1)[0]
        return "hub:" + (fmt or HUB_REPOS.get(repo.lower(), ("generic",))[0])
    if spec in BUILTIN:
        return "builtin"
    path = _local_path(spec)
    if path.is_dir():
        if fmt in (None, "mmlu") and _mmlu_split_dir(path, split or "test"):
            return "mmlu"
        return _detect(_folder_file(path, split), fmt)
    return _detect(path, fmt)


def choose_target(aliases: list[str]) -> str:
    """The loader's answers[0] among an answer's aliases when the source has no primary answer
    (TriviaQA lists lower-cased copies such as "paris" beside "Paris"), in alias order:
      1. usable aliases (stripped, with a letter or digit, not a "(disambiguation)" entry) that are
         not all lower case ("Paris"; "1914" has no case and counts too),
      2. else any usable alias ("paris"),
      3. else any non-empty alias (an item whose only alias is a disambiguation entry keeps it).
    Derived item ids depend on this order, so it stays as it is; it is often a redirect title
    ("Chi-Beria" for Chicago), which is why `rait build` trains on `alias_target` instead.
    """
    stripped = _stripped(aliases)
    usable = _usable(stripped)
    not_lower = [a for a in usable if not a.islower()]
    for tier in (not_lower, usable, stripped):
        if tier:
            return tier[0]
    raise RaitError("no answer alias (all are empty)")


def alias_target(aliases: list[str]) -> str:
    """A training target a user would accept, from aliases alone (no primary answer, no correct
    sample of the model). TriviaQA's alias lists are Wikipedia redirects: misspellings, old
    names, longer titles ("Chicago, Illinois", "City of Chicago") around one core name, so:
      1. each usable alias (as in `choose_target`) is normalised (rait.scoring.normalize) to words;
      2. the form that the most usable aliases contain as a run of whole words wins ("chicago" is
         in "chicago il", "city of chicago", ...); ties go to the form repeated most often as a
         whole alias, then to the form listed first (so answers[0] wins a full tie);
      3. its spelling: mixed case before ALL CAPS before all lower, then the larger share of
         capitalised words ("Roger Penrose" before "Roger penrose"), then the first listed.
    Falls back to `choose_target` when no alias is usable (e.g. only a disambiguation entry).
    """
    usable = [a for a in _usable(_stripped(aliases)) if normalize(a)]
    if not usable:
        return choose_target(aliases)
    forms = [tuple(normalize(a).split()) for a in usable]
    repeats = Counter(forms)
    ranking = {form: (sum(_contains(other, form) for other in forms), repeats[form]) for form in forms}
    best = max(ranking.values())
    winner = next(form for form in forms if ranking[form] == best)  # first listed among the best
    spellings = [a for a, form in zip(usable, forms) if form == winner]
    return max(spellings, key=_casing_rank)  # max keeps the first of equals


def _casing_rank(alias: str) -> tuple[bool, bool, float]:
    """Mixed case beats ALL CAPS beats all lower; then a larger share of capitalised words
    ("Roger Penrose" before "Roger penrose"; a share, so "F.B.I." ties "The F. B. I.")."""
    words = alias.split()
    capitalised = sum(word[:1].isupper() for word in words) / len(words)
    return not alias.islower() and not alias.isupper(), not alias.islower(), capitalised


def _stripped(aliases: list) -> list[str]:
    return [a.strip() for a in aliases if isinstance(a, str) and a.strip()]


def _usable(aliases: list[str]) -> list[str]:
    return [a for a in aliases if "(disambiguation)" not in a.lower() and any(c.isalnum() for c in a)]


def _contains(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    """Whether `part` occurs in `words` as a run of whole words."""
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


def default_shot_source(spec: str, split: str | None = None) -> tuple[str, str] | None:
    """Where few-shot examples come from when the user names none, or None (built-in shots).

    MMLU folder -> its `dev` split (shots matched by subject); demo sets -> their shot split."""
    shot_splits = {"demo-mcqa": "dev", "demo-oeqa": "shots"}
    if spec in shot_splits:
        return (spec, shot_splits[spec]) if split != shot_splits[spec] else None
    if spec.startswith("hf:") and spec[3:].split(":", 1)[0].lower() == "cais/mmlu":
        return (spec, "dev") if split != "dev" else None
    path = Path(spec)
    if path.is_dir() and split != "dev" and _mmlu_split_dir(path, split or "test") and _mmlu_split_dir(path, "dev"):
        return (spec, "dev")
    return None


# ---------------------------------------------------------------------------------------------
# Sources: built-in, file, folder, hub
# ---------------------------------------------------------------------------------------------

def _check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RaitError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)}){hint}")


def _local_path(spec: str) -> Path:
    path = Path(spec)
    if not path.exists():
        raise RaitError(f"{spec}: no such file or folder (built-in datasets: {', '.join(BUILTIN)}; "
                        "hub datasets: hf:REPO[:CONFIG])")
    return path


def _builtin_path(name: str, split: str | None) -> Path:
    splits = BUILTIN[name]
    if split not in splits:
        known = ", ".join(s for s in splits if s) or "none"
        raise RaitError(f"{name}: unknown split {split!r} (splits: default, {known})")
    path = Path(str(resources.files("rait.data") / "demo" / splits[split]))
    if not path.is_file():
        raise RaitError(f"{name}: the bundled file {path.name} is missing from the installation")
    return path


def _load_file(path: Path, *, name: str, fmt: str | None, lenient: bool, limit: int | None,
               fields: dict, origin: str | None = None) -> Dataset:
    kind = _detect(path, fmt)
    reader = _reader_for(path, kind)
    builder = _builder_for(kind, fields)
    items, skipped, notes = _collect(reader(path), builder, lenient=lenient, limit=limit)
    stamp = fingerprint({"file": file_fingerprint(path), "format": kind, "fields": fields,
                         "lenient": lenient, "limit": limit})
    return _finish(name, items, skipped, notes, source=origin or str(path), stamp=stamp, where=str(path))


def _load_folder(path: Path, *, split: str | None, fmt: str | None, lenient: bool, limit: int | None,
                 fields: dict) -> Dataset:
    mmlu_split = split or "test"
    if fmt in (None, "mmlu") and (files := _mmlu_split_dir(path, mmlu_split)):
        rows = (row for file in files for row in _mmlu_rows(file))
        items, skipped, notes = _collect(rows, _builder_for("mmlu", fields), lenient=lenient, limit=limit)
        stamp = fingerprint({"files": [(f.name, file_fingerprint(f)) for f in files], "format": "mmlu",
                             "split": mmlu_split, "lenient": lenient, "limit": limit, "fields": fields})
        notes.insert(0, f"{len(files)} subject files of split '{mmlu_split}'")
        return _finish(f"{path.name}-{mmlu_split}", items, skipped, notes, source=str(path), stamp=stamp,
                       where=str(path))
    if fmt == "mmlu":
        raise RaitError(f"{path}: no '<subject>_{mmlu_split}.csv' files found for MMLU split '{mmlu_split}'")
    file = _folder_file(path, split)
    return _load_file(file, name=file.stem, fmt=fmt, lenient=lenient, limit=limit, fields=fields)


def _mmlu_split_dir(path: Path, split: str) -> list[Path]:
    """The `<subject>_<split>.csv` files of an MMLU folder (root with split folders, or one split)."""
    folder = path / split if (path / split).is_dir() else path
    return sorted(folder.glob(f"*_{split}.csv"))


def _folder_file(path: Path, split: str | None) -> Path:
    """The one data file a non-MMLU folder stands for (the file whose name mentions `split`)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if split is not None:
        files = [p for p in files if split.lower() in p.stem.lower()]
    if len(files) == 1:
        return files[0]
    what = f"for split '{split}'" if split else "(pass --split to choose one)"
    found = ", ".join(p.name for p in files) or "no data files"
    raise RaitError(f"{path}: expected one data file {what}, found {found}")


def _load_hub(spec: str, *, split: str | None, fmt: str | None, lenient: bool, limit: int | None,
              fields: dict) -> Dataset:
    repo, _, config = spec[3:].partition(":")
    if not repo:
        raise RaitError(f"{spec}: expected hf:REPO[:CONFIG]")
    kind, default_config, default_split = HUB_REPOS.get(repo.lower(), ("generic", None, "train"))
    kind = fmt or kind
    config = config or default_config
    split = split or default_split
    hub_split = HUB_SPLIT_NAMES.get(split, split) if kind == "mmlu" else split
    try:
        import datasets  # heavy: only for hub datasets

        table = datasets.load_dataset(repo, config, split=hub_split)
    except Exception as exc:  # network, missing repo, unknown config/split: all user-fixable
        raise RaitError(f"{spec}: cannot load split '{hub_split}' from the Hugging Face hub "
                        f"({type(exc).__name__}: {exc})") from None
    where = f"{spec} ({hub_split} split)"
    rows = [Row(f"{where}, row {i}", None, dict(r)) for i, r in enumerate(table, start=1)]
    notes = []
    if kind == "triviaqa":  # the same question id appears several times in TriviaQA's hub configs
        rows, dropped = _drop_repeated_question_ids(rows)
        if dropped:
            notes.append(f"{dropped} rows with a repeated question_id dropped (first kept)")
    items, skipped, more = _collect(iter(rows), _builder_for(kind, fields, hub=True), lenient=lenient,
                                    limit=limit)
    stamp = fingerprint({"hub": repo, "config": config, "split": hub_split, "format": kind,
                         "version": getattr(table, "_fingerprint", None), "fields": fields,
                         "lenient": lenient, "limit": limit})
    name = "-".join(p for p in (repo.split("/")[-1], config, split) if p)
    return _finish(name, items, skipped, notes + more, source=spec, stamp=stamp, where=where)


def _drop_repeated_question_ids(rows: list[Row]) -> tuple[list[Row], int]:
    seen: set = set()
    kept = []
    for row in rows:
        qid = row.data.get("question_id")
        if qid is not None and qid in seen:
            continue
        seen.add(qid)
        kept.append(row)
    return kept, len(rows) - len(kept)


def _finish(name: str, items: list[dict], skipped: list, notes: list[str], *, source: str, stamp: str,
            where: str) -> Dataset:
    if not items:
        detail = f" ({len(skipped)} rows skipped; first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise RaitError(f"{where}: no items{detail}")
    renamed = len(items) - len({item["id"] for item in items})
    dedupe_ids(items)
    if renamed:
        notes.append(f"{renamed} repeated ids made unique with a '-2', '-3', ... suffix")
    return Dataset(name=name, task=items[0]["task"], items=items, source=source, fingerprint=stamp,
                   skipped=skipped, notes=notes)


def _collect(rows: Iterator[Row], builder: Callable[[Row], dict], *, lenient: bool,
             limit: int | None) -> tuple[list[dict], list[tuple[str, str]], list[str]]:
    """Build items from rows; a bad row is an error, or with `lenient` a (where, reason) entry."""
    items, skipped = [], []
    notes = Counter()
    for row in rows:
        try:
            if isinstance(row.data, RaitError):
                raise row.data
            item = builder(row)
            if items and item["task"] != items[0]["task"]:
                raise input_error(row.where, f"is an {item['task'].upper()} row but earlier rows are "
                                  f"{items[0]['task'].upper()}", line=row.line)
        except RaitError as exc:
            if not lenient:
                raise
            skipped.append((_where(row), _reason(str(exc), row)))
            continue
        for note in item.pop("_notes", ()):
            notes[note] += 1
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items, skipped, [f"{n} {'item' if n == 1 else 'items'} {note}" for note, n in notes.items()]


def _where(row: Row) -> str:
    return row.where if row.line is None else f"{row.where}, line {row.line}"


def _reason(message: str, row: Row) -> str:
    prefix = _where(row)
    return message[len(prefix):].lstrip(", :") if message.startswith(prefix) else message


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------

def _detect(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "triviaqa-tsv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        first = _first_record(path)
        if isinstance(first.get("question"), dict):
            return "arc"
        if isinstance(first.get("answer"), list) and "answers" not in first:
            return "nq-open"
        return "generic"
    if suffix == ".csv":
        header = _csv_header(path)
        return "mmlu" if _mmlu_columns(header) is not None else "generic"
    raise RaitError(f"{path}: cannot tell the format from the extension '{suffix or '(none)'}'; "
                    f"pass --format (one of {', '.join(FORMATS)})")


def _first_record(path: Path) -> dict:
    reader = _json_rows if path.suffix.lower() == ".json" else _jsonl_rows
    for row in reader(path):
        if isinstance(row.data, RaitError):
            raise row.data
        return row.data
    raise RaitError(f"{path}: no items (the file is empty)")


def _csv_header(path: Path) -> list[str]:
    with _open_text(path) as lines:
        for row in csv.reader(lines):
            if any(cell.strip() for cell in row):
                return row
    raise RaitError(f"{path}: no items (the file is empty)")


def _mmlu_columns(first_row: list[str]) -> dict | None:
    """Column positions of an MMLU csv: with header (`[id,lang,]question,A,B,C,D,target|answer`)
    or without (`question,A,B,C,D,answer`); None when the row fits neither."""
    cells = [c.strip() for c in first_row]
    lowered = [c.lower() for c in cells]
    target = next((name for name in ("target", "answer") if name in lowered), None)
    letters = [c for c in cells if len(c) == 1 and c in LETTERS]
    if "question" in lowered and target and len(letters) >= 2:
        return {"header": True, "question": lowered.index("question"), "target": lowered.index(target),
                "id": lowered.index("id") if "id" in lowered else None,
                "choices": {c: cells.index(c) for c in letters}}
    if len(cells) == 6 and cells[5] in ("A", "B", "C", "D"):
        return {"header": False, "question": 0, "target": 5, "id": None,
                "choices": {letter: i + 1 for i, letter in enumerate("ABCD")}}
    return None


# ---------------------------------------------------------------------------------------------
# Readers: path -> Rows
# ---------------------------------------------------------------------------------------------

def _reader_for(path: Path, kind: str) -> Callable[[Path], Iterator[Row]]:
    if kind == "triviaqa-tsv":
        return _tsv_rows
    if kind == "mmlu":
        return _mmlu_rows
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows
    if suffix == ".json":
        return _json_rows
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows
    raise RaitError(f"{path}: format '{kind}' is read from .jsonl, .json or .csv files, not '{suffix}'")


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[Iterator[str]]:
    """The file's decoded lines (rait.io: a BOM skipped, a non-UTF-8 byte an error naming its line)."""
    from rait.io import lines_of, open_text

    with open_text(path) as handle:
        yield lines_of(handle, path)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    from rait.io import lines_of, open_text

    with open_text(path) as handle:
        yield from enumerate(lines_of(handle, path), start=1)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    from rait.io import parse_json

    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            obj = parse_json(line, path, number)
        except RaitError as exc:  # a bad row: an error here, or skipped and reported with --lenient
            yield Row(str(path), number, exc)
            continue
        if not isinstance(obj, dict):
            obj = input_error(path, "expected a JSON object", line=number)
        yield Row(str(path), number, obj)


def _json_rows(path: Path) -> Iterator[Row]:
    """A JSON array of objects (or {"data": [...]}); a .json file holding JSON lines also works."""
    text = "".join(line for _, line in _decoded_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: it is JSON lines
            yield from _jsonl_rows(path)
            return
        raise input_error(path, f"not valid JSON ({exc.msg}, column {exc.colno})", line=exc.lineno) from None
    except (RecursionError, ValueError):  # nested too deeply, or an integer too long
        from rait.io import parse_json

        data = parse_json(text, path)  # raises the one clean error for it
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise input_error(path, "expected a JSON array of objects")
    for index, obj in enumerate(data, start=1):
        where = f"{path}, record {index}"
        yield Row(where, None, obj if isinstance(obj, dict) else input_error(where, "expected a JSON object"))


def _csv_rows(path: Path) -> Iterator[Row]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # long alias lists
    with _open_text(path) as lines:
        reader = csv.reader(lines)
        header = None
        try:
            for cells in reader:
                if header is None:
                    header = [c.strip() for c in cells]
                    continue
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    yield Row(str(path), reader.line_num, input_error(
                        path, f"has {len(cells)} columns, the header has {len(header)}", line=reader.line_num))
                    continue
                yield Row(str(path), reader.line_num, dict(zip(header, cells)))
        except UnicodeDecodeError as exc:
            raise RaitError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise input_error(path, f"malformed CSV ({exc})", line=reader.line_num) from None


def _tsv_rows(path: Path) -> Iterator[Row]:
    """DPR's TriviaQA/NQ TSV: `question<TAB>python-list-of-aliases`, no header, some cells quoted."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    with _open_text(path) as lines:
        reader = csv.reader(lines, delimiter="\t")
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                line = reader.line_num
                if len(cells) != 2:
                    yield Row(str(path), line, input_error(
                        path, f"expected 2 tab-separated columns (question, aliases), found {len(cells)}",
                        line=line))
                    continue
                row = Row(str(path), line, {"question": cells[0]})
                try:
                    row.data["answers"] = _literal_list(cells[1], row, "answers")
                except RaitError as exc:
                    row.data = exc
                yield row
        except UnicodeDecodeError as exc:
            raise RaitError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise input_error(path, f"malformed TSV ({exc})", line=reader.line_num) from None


def _mmlu_rows(path: Path) -> Iterator[Row]:
    """One MMLU csv (with or without header); the subject comes from `<subject>_<split>.csv`."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    match = re.fullmatch(r"(.+)_(dev|val|validation|test|train|auxiliary_train)", path.stem)
    subject = match.group(1) if match else path.stem
    with _open_text(path) as lines:
        reader = csv.reader(lines)
        columns = None
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                line = reader.line_num
                if columns is None:
                    columns = _mmlu_columns(cells)
                    if columns is None:
                        raise input_error(path, "not an MMLU csv (expected a header with question, A..D "
                                          "and target, or 6 columns question,A,B,C,D,answer)", line=line)
                    if columns["header"]:
                        continue
                width = 1 + max(columns["choices"].values()) if columns["choices"] else 0
                if len(cells) < max(width, columns["target"] + 1):
                    yield Row(str(path), line, input_error(path, f"has only {len(cells)} columns", line=line))
                    continue
                yield Row(str(path), line, {
                    "id": cells[columns["id"]] if columns["id"] is not None else None,
                    "question": cells[columns["question"]],
                    # option text verbatim: the literal "None" is a real MMLU option
                    "choices": {label: cells[i] for label, i in columns["choices"].items()},
                    "target": cells[columns["target"]].strip(),
                    "subject": subject})
        except UnicodeDecodeError as exc:
            raise RaitError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise input_error(path, f"malformed CSV ({exc})", line=reader.line_num) from None


# ---------------------------------------------------------------------------------------------
# Builders: Row -> item
# ---------------------------------------------------------------------------------------------

def _builder_for(kind: str, fields: dict, *, hub: bool = False) -> Callable[[Row], dict]:
    if kind == "arc":
        return _hub_arc_item if hub else _arc_item
    if kind == "mmlu":
        return _hub_mmlu_item if hub else _mmlu_item
    if kind == "triviaqa" and hub:
        return _hub_triviaqa_item
    if kind in ("triviaqa", "triviaqa-tsv"):
        return lambda row: _generic_item(row, fields, pick_target=True)
    return lambda row: _generic_item(row, fields, pick_target=False)


def _get(row: Row, fields: dict, name: str, *, required: bool = True) -> Any:
    column = fields.get(name, name)
    if column not in row.data:
        if required:
            mapped = f" (mapped to '{name}')" if column != name else ""
            raise input_error(row.where, f"is missing{mapped}", line=row.line, field=column)
        return None
    return row.data[column]


def _has(row: Row, fields: dict, name: str) -> bool:
    return fields.get(name, name) in row.data


def _generic_item(row: Row, fields: dict, *, pick_target: bool) -> dict:
    """question + answers (OEQA) or question + choices + target (MCQA); `qid` counts as an id."""
    question = _get(row, fields, "question")
    item_id = _get(row, fields, "id", required=False)
    if item_id is None and "id" not in fields:
        item_id = row.data.get("qid")
    if _has(row, fields, "choices"):
        return _generic_mcqa(row, fields, question, item_id)
    if not (_has(row, fields, "answers") or _has(row, fields, "answer")):
        raise input_error(row.where, "is missing (a row needs 'answers' for OEQA or 'choices' + 'target' "
                          "for MCQA; map other column names with `fields`)", line=row.line,
                          field=fields.get("answers", "answers"))
    answers, primary = _answers(row, fields)
    source = "primary"  # an `answer` column, or a generic file's answers[0]: the file's own target
    if isinstance(primary, str) and primary.strip():
        answers = [primary] + [a for a in answers if a != primary]
    elif pick_target:  # TriviaQA without a value: the target is only picked among aliases
        source = "aliases"
        if all(isinstance(a, str) for a in answers) and any(a.strip() for a in answers):
            target = choose_target(answers)
            answers = [target] + [a for a in answers if a != target]
    return make_oeqa_item(question, answers, id=item_id, answer_source=source, path=row.where,
                          line=row.line)


def _answers(row: Row, fields: dict) -> tuple[list, Any]:
    """(answer list, primary answer or None); list columns from csv/tsv are Python literals."""
    column = fields.get("answers", "answers")
    value = row.data.get(column)
    primary = row.data.get(fields.get("answer", "answer"))
    if value is None and isinstance(primary, list):  # NQ-Open: `answer` is the list
        value, primary, column = primary, None, fields.get("answer", "answer")
    if value is None:
        value = []
    if isinstance(value, str) and value.lstrip().startswith("["):
        value = _literal_list(value, row, column)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise input_error(row.where, f"must be a list of strings, found {type(value).__name__}",
                          line=row.line, field=column)
    if not any(isinstance(a, str) and a.strip() for a in value) and not (isinstance(primary, str) and primary.strip()):
        raise input_error(row.where, "is empty (an OEQA item needs at least one answer)", line=row.line,
                          field=column)
    return value, primary


def _literal_list(text: str, row: Row, column: str) -> list:
    try:
        value = ast.literal_eval(text.strip())  # a literal only: never eval()
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise input_error(row.where, "is not a valid list literal", line=row.line, field=column) from None
    if not isinstance(value, (list, tuple)):
        raise input_error(row.where, f"must be a list of strings, found {type(value).__name__}",
                          line=row.line, field=column)
    return list(value)


def _generic_mcqa(row: Row, fields: dict, question: Any, item_id: Any) -> dict:
    choices = _get(row, fields, "choices")
    column = fields.get("choices", "choices")
    if isinstance(choices, str) and choices.lstrip()[:1] in "[{":
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise input_error(row.where, "is not valid JSON", line=row.line, field=column) from None
    if isinstance(choices, list):  # hub style: a list of option texts, labelled A, B, ...
        choices = dict(zip(LETTERS, choices))
    target = _get(row, fields, "target", required=False)
    if target is None and not _has(row, fields, "target"):
        target = row.data.get("answer")
    if target is None:
        raise input_error(row.where, "is missing", line=row.line, field=fields.get("target", "target"))
    if isinstance(target, int) and not isinstance(target, bool) and isinstance(choices, dict):
        target = LETTERS[target] if 0 <= target < len(choices) else str(target)
    subject = _get(row, fields, "subject", required=False)
    return make_mcqa_item(question, choices, target, subject=subject, id=item_id, path=row.where,
                          line=row.line)


def _mmlu_item(row: Row) -> dict:
    data = row.data
    return make_mcqa_item(data["question"], data["choices"], data["target"], subject=data["subject"],
                          id=data["id"], path=row.where, line=row.line)


def _hub_mmlu_item(row: Row) -> dict:
    """cais/mmlu: {question, subject, choices: [4 texts], answer: index}."""
    data = row.data
    choices, answer = data.get("choices"), data.get("answer")
    if not isinstance(choices, list):
        raise input_error(row.where, "must be a list of option texts", line=row.line, field="choices")
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise input_error(row.where, f"{answer!r} is not an option index", line=row.line, field="answer")
    return make_mcqa_item(data.get("question"), dict(zip(LETTERS, choices)), LETTERS[answer],
                          subject=data.get("subject"), id=data.get("id"), path=row.where, line=row.line)


def _hub_triviaqa_item(row: Row) -> dict:
    """mandarjoshi/trivia_qa: {question, question_id, answer: {value, aliases, ...}}; the primary
    `value` is the target when present, else one is chosen from the aliases."""
    answer = row.data.get("answer")
    if not isinstance(answer, dict):
        raise input_error(row.where, "must be an object with 'value' and 'aliases'", line=row.line,
                          field="answer")
    aliases = [a for a in answer.get("aliases") or [] if isinstance(a, str) and a.strip()]
    value, source = answer.get("value"), "primary"
    if not (isinstance(value, str) and value.strip() and value.strip() != "<unk>"):
        value, source = (choose_target(aliases) if aliases else None), "aliases"
    if value is None:
        raise input_error(row.where, "has no answer value or aliases", line=row.line, field="answer.aliases")
    answers = [value] + [a for a in aliases if a != value]
    return make_oeqa_item(row.data.get("question"), answers, id=row.data.get("question_id"),
                          answer_source=source, path=row.where, line=row.line)


def _arc_item(row: Row) -> dict:
    """AI2 ARC: numeric labels 1..N are mapped by position to A..; 3- and 5-choice items keep their
    own labels (A-C, A-E) and are counted in the dataset notes."""
    data = row.data
    question = data.get("question")
    if not isinstance(question, dict):
        raise input_error(row.where, "must be an object with 'stem' and 'choices'", line=row.line,
                          field="question")
    options = question.get("choices")
    if not isinstance(options, list) or not all(isinstance(o, dict) for o in options):
        raise input_error(row.where, "must be a list of {text, label}", line=row.line, field="question.choices")
    labels = [str(o.get("label", "")).strip() for o in options]
    key = str(data.get("answerKey", "")).strip()
    if key not in labels:
        raise input_error(row.where, f"{key!r} is not one of the option labels {', '.join(labels)}",
                          line=row.line, field="answerKey")
    notes = []
    if all(label.isdigit() for label in labels):
        notes.append(f"with numeric labels 1-{len(labels)}, mapped by position to letters")
        key = LETTERS[labels.index(key)]
        labels = list(LETTERS[:len(labels)])
    if len(labels) != 4:
        notes.append(f"with {len(labels)} choices, kept with labels {labels[0]}-{labels[-1]}")
    item = make_mcqa_item(question.get("stem"), {label: o.get("text") for label, o in zip(labels, options)},
                          key, subject="science", id=data.get("id"), path=row.where, line=row.line)
    item["_notes"] = notes  # removed by _collect, which turns them into Dataset.notes
    return item


def _hub_arc_item(row: Row) -> dict:
    """allenai/ai2_arc: {id, question: str, choices: {text: [...], label: [...]}, answerKey}."""
    data = row.data
    choices = data.get("choices") or {}
    texts, labels = choices.get("text") or [], choices.get("label") or []
    options = [{"text": t, "label": lab} for t, lab in zip(texts, labels)]
    shaped = {"id": data.get("id"), "answerKey": data.get("answerKey"),
              "question": {"stem": data.get("question"), "choices": options}}
    return _arc_item(Row(row.where, row.line, shaped))
