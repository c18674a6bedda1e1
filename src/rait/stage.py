"""The stage contract: what a stage's output is, how a finished one is recognised, and how it is
written so that a failure or an interrupt leaves nothing half-written.

Every stage (rait.stages.*) writes one `Output`:
    path        the file or folder the user asked for (--out)
    marker      the file written last; it records the settings fingerprint, so its presence with
                the same fingerprint means "done with these settings"
    companions  other finished files that belong to it (per-item rows, a plot)
    partials    work in progress that an interrupted run resumes from

Three shapes cover the stages:
    sidecar_output(path)       a table or set with PATH.meta.json as its marker (probe, build)
    result_output(path, ...)   a JSON result that is its own marker (eval, conflict)
    folder_output(dir, name)   a folder with DIR/NAME as its marker (train, rehearse)
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Iterable

from rait import io
from rait.errors import RaitError

META_SUFFIX = ".meta.json"


def meta_path(path: str | Path) -> Path:
    """The sidecar of a table or RAIT set: PATH.meta.json (e.g. build/craft.jsonl.meta.json)."""
    path = Path(path)
    return path.with_name(path.name + META_SUFFIX)


@dataclasses.dataclass
class Output:
    path: Path
    marker: Path
    companions: list[Path] = dataclasses.field(default_factory=list)
    partials: list[Path] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Everything a finished output consists of (the marker last)."""
        own = [self.path] if self.path != self.marker else []
        return own + self.companions + [self.marker]

    def recorded(self) -> dict | None:
        """The marker's content, or None when there is no readable marker."""
        if not self.marker.is_file():
            return None
        try:
            data = io.read_json(self.marker)
        except RaitError:
            return None
        return data if isinstance(data, dict) else None

    def finished(self, fingerprint: str | None = None) -> dict | None:
        """The marker of a complete output (made with `fingerprint`, when given), else None."""
        recorded = self.recorded()
        if recorded is None or not all(p.exists() for p in self.files):
            return None
        if fingerprint is not None and recorded.get("fingerprint") != fingerprint:
            return None
        return recorded

    def clear(self) -> None:
        """Remove every part of this output (a stale one, or before starting afresh)."""
        for path in [self.marker, *self.companions, *self.partials, self.path]:
            remove(path)

    def finish(self, marker: dict) -> None:
        """Write the marker (atomically, last) and drop the partial work it replaces."""
        io.write_json_atomic(self.marker, marker)
        for path in self.partials:
            remove(path)


def sidecar_output(path: str | Path, partials: Iterable[str | Path] = ()) -> Output:
    path = Path(path)
    return Output(path, meta_path(path), partials=[Path(p) for p in partials])


def result_output(path: str | Path, companions: Iterable[str | Path] = (),
                  partials: Iterable[str | Path] = ()) -> Output:
    path = Path(path)
    return Output(path, path, [Path(p) for p in companions], [Path(p) for p in partials])


def folder_output(path: str | Path, marker_name: str, partials: Iterable[str | Path] = ()) -> Output:
    path = Path(path)
    return Output(path, path / marker_name, partials=[Path(p) for p in partials])


def remove(path: Path) -> None:
    """Delete a file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def existing_foreign(output: Output) -> bool:
    """Whether something is at the output's path that no rait stage wrote (no marker, no partial):
    a stage must not replace a user's file it did not make."""
    if not output.path.exists():
        return False
    return output.recorded() is None and not any(p.exists() for p in output.partials)
