"""File helpers shared by every stage: atomic writes, line-numbered jsonl reading,
append-only jsonl writing that survives interruption, and fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from rait.errors import RaitError, input_error


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for every non-blank line; a malformed line is an error."""
    path = Path(path)
    with open_text(path) as handle:
        for number, line in enumerate(lines_of(handle, path), start=1):
            if not line.strip():
                continue
            obj = parse_json(line, path, number)
            if not isinstance(obj, dict):
                raise input_error(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
            yield number, obj


def open_text(path: Path):
    """Open a text file for reading as bytes (`lines_of` decodes it line by line), or say why it
    cannot be read."""
    if path.is_dir():
        raise RaitError(f"{path}: is a directory; expected a file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise RaitError(f"{path}: no such file") from None
    except OSError as exc:
        raise RaitError(f"{path}: cannot read ({exc.strerror})") from None


def lines_of(handle, path: Path) -> Iterator[str]:
    """The UTF-8 lines of a file opened by `open_text` (a BOM is skipped); a byte that is not
    UTF-8 is an error naming its line."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise input_error(path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
                              line=number) from None


def parse_json(text: str, path, line: int | None = None) -> Any:
    """json.loads with every failure (syntax, nesting too deep, NaN/Infinity) as one RaitError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise input_error(path, f"not valid JSON ({exc.msg}, column {exc.colno})",
                          line=line if line is not None else exc.lineno) from None
    except RecursionError:
        raise input_error(path, "not valid JSON here (nested too deeply)", line=line) from None
    except ValueError as exc:  # a NaN/Infinity literal, or an integer too long to convert
        raise input_error(path, f"not valid JSON ({exc})", line=line) from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; write a finite number or null")


def dumps_row(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=False)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    The new file gets the permissions a plain `open` would give it (the umask; an existing
    file's mode is kept), not mkstemp's 0600. A failure or an interrupt removes the temporary."""
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~current_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RaitError(f"{path}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except OSError as exc:
        raise RaitError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """An output path rait may (re)place: not an input, not a folder, not a device or pipe, and
    its folder is a folder. Raises a RaitError saying what to choose instead."""
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise RaitError(f"{path}: is also an input; rait never overwrites its inputs, choose another output")
    if path.is_dir():
        raise RaitError(f"{path}: is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise RaitError(f"{path}: is not a regular file (a device, pipe or socket); give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RaitError(f"{path}: {parent} is a file, not a folder")
            break
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(dumps_row(row) + "\n")
            count += 1
    return count


def read_json(path: str | Path) -> Any:
    path = Path(path)
    with open_text(path) as handle:
        text = "".join(lines_of(handle, path))
    return parse_json(text, path)


def recover_jsonl(path: str | Path) -> list[dict]:
    """Read the complete rows of an append-only jsonl file and cut off a torn last line.

    Used to resume interrupted work: a kill can only tear the last line (no newline at its end),
    which is truncated away. A complete line that does not parse is corruption, not a torn
    write: it is an error naming the line, and the file is left as it is.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict] = []
    good_bytes = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break
            try:
                row = parse_json(raw.decode("utf-8"), path, number)
            except UnicodeDecodeError:
                raise input_error(path, "not UTF-8 text; remove the file (or use --overwrite) to start "
                                        "again", line=number) from None
            except RaitError as exc:
                raise RaitError(f"{exc}; the file is damaged: remove it (or use --overwrite) to start again") from None
            if not isinstance(row, dict):
                raise input_error(path, "expected a JSON object; the file is damaged: remove it (or use "
                                        "--overwrite) to start again", line=number)
            rows.append(row)
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
    return rows


class JsonlAppender:
    """Append rows to a jsonl file, each flushed and fsynced, so a kill loses at most one torn
    line (which `recover_jsonl` removes on the next run)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[dict]) -> None:
        try:
            for row in rows:
                self._handle.write(dumps_row(row) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:  # a full disk: the rows written so far stay resumable
            raise RaitError(f"{self.path}: cannot write ({exc.strerror}); free space and re-run to resume") from None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of the libraries that decide an output's numbers (None if absent),
    recorded in every stage's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def fingerprint(obj: Any) -> str:
    """A stable short hash of JSON-able data (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """sha256 (first 16 hex) of a file's bytes, or of a folder's files (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
