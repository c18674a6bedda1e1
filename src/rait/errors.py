"""The one exception users see. The CLI prints its message on one line and exits non-zero."""

from __future__ import annotations


class RaitError(Exception):
    """A problem the user can fix: bad input, missing file, unknown option, model not found."""


def input_error(path, message: str, *, line: int | None = None, field: str | None = None) -> RaitError:
    """Build an error that names the file, the line (1-based) and the field at fault."""
    where = str(path)
    if line is not None:
        where += f", line {line}"
    if field is not None:
        where += f", field '{field}'"
    return RaitError(f"{where}: {message}")
