"""Bad and edge inputs for every verb, counted against one contract (cases: bad_input_cases.py).

For a bad input, `rait.cli.main(argv)`, called in-process with a fresh temporary directory as the
working directory, must

1. exit:      return a non-zero status and raise nothing (argparse's SystemExit(2) counts as a
              non-zero status; anything else that escapes main() is a failure);
2. message:   print to stderr exactly one error line `rait VERB: error: ...`, as the last stderr
              line (progress lines before it are fine), no `Traceback`, and the line names the
              offending file and/or option (each of `Case.names`);
3. leftovers: leave the working directory's set of files and folders exactly as it was (no
              `*.tmp`, no partial output, no meta sidecar, no empty output folder);
4. inputs:    leave every entry that existed before with the same bytes, permission bits and
              inode type (a regular file stays a regular file, a device node stays a device).

An edge-but-valid input (`Case.valid`: a UTF-8 BOM, CRLF line endings, non-ASCII text, ...) must
exit 0 without an error line and write correct outputs (`Case.check`; its problems count under
check 1), leave no `*.tmp` behind and not touch its inputs (check 4; `Case.updates` may change
content, never mode or type).

Each call runs under an address-space cap (`memory_cap`), so an input that makes rait allocate
without bound fails its case with MemoryError instead of getting the whole run OOM-killed.

Every case records which of the four checks it passed (`record_property`, so `--junitxml` shows
them), and its assertion message says which failed and why. With RAIT_BAD_INPUT_RESULTS=FILE
set, each case also appends one JSON line {id, verb, valid, checks, problems, stderr_tail}
to FILE.
Many cases fail against the current code: that is their point, they are not marked xfail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from bad_input_cases import CASES, DIR, Case

CHECKS = ("exit", "message", "leftovers", "inputs")
UMASK = 0o022


# ---------------------------------------------------------------------------------------------
# preparing a case


def private_full_device(tmp: Path) -> Path:
    """A char device that fails every write with ENOSPC: a copy of /dev/full's node in `tmp` when
    we may create one (root), so a buggy `os.replace` onto it harms nothing; else /dev/full itself,
    which an unprivileged process cannot replace."""
    node = tmp / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        return node
    except (PermissionError, AttributeError, OSError):
        pass
    if os.geteuid() == 0:
        pytest.skip("cannot create a private full device, and /dev/full itself must not be put at risk")
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not present")
    return Path("/dev/full")


def prepare(case: Case, tmp: Path, request) -> types.SimpleNamespace:
    ctx = types.SimpleNamespace(tmp=tmp, model=None, chat_model=None, full=None, out="", err="")
    if case.needs_model():
        ctx.model = request.getfixturevalue("tiny_model_dir")
    if case.chat_model:
        ctx.chat_model = request.getfixturevalue("tiny_chat_model_dir")
    for name, content in case.files.items():
        path = tmp / name
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    if case.devfull:
        ctx.full = private_full_device(tmp)
    if case.setup:
        case.setup(ctx)
    return ctx


def expand(argv: list[str], ctx) -> list[str]:
    values = {"model": ctx.model, "chat_model": ctx.chat_model, "tmp": ctx.tmp, "full": ctx.full}
    return [arg.format(**values) if "{" in arg else arg for arg in argv]


# ---------------------------------------------------------------------------------------------
# observing it


def describe(path: Path) -> tuple:
    """(kind, permission bits, content digest or device number) of one directory entry, without
    following links or reading anything but regular files."""
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    if stat.S_ISDIR(st.st_mode):
        return ("dir", mode, None)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", mode, os.readlink(path))
    if stat.S_ISCHR(st.st_mode):
        return ("char-device", mode, st.st_rdev)
    return ("other", mode, None)


def snapshot(root: Path, extra: list[Path]) -> dict[str, tuple]:
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            entries[str(path.relative_to(root))] = describe(path)
    for path in extra:
        entries[str(path)] = describe(path)
    return entries


@contextlib.contextmanager
def memory_cap(headroom: int = 4 << 30):
    """Cap this process's address space at its current size + `headroom` while a case runs, so an
    input that makes rait allocate without bound (e.g. reading a --out that is /dev/full, which
    never ends) fails that case with MemoryError instead of getting the test run OOM-killed."""
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = pages * os.sysconf("SC_PAGE_SIZE") + headroom
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError):
        soft = None
    try:
        yield
    finally:
        if soft is not None:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def rebind_log_handlers(stream=None) -> None:
    """Point the stream handlers that libraries created in earlier cases (transformers makes one
    on first use) at this case's captured stderr, as in a fresh process; otherwise they write to
    an earlier case's closed capture and logging prints a "Logging error" traceback."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                target = stream or sys.stderr
                handler.stream = target  # not setStream(): it flushes the closed old stream
                if "flush" in vars(handler):  # transformers binds the stream's flush method too
                    handler.flush = target.flush


def call_main(argv: list[str]) -> tuple[int | None, BaseException | None]:
    from rait.cli import main

    try:
        return main(argv), None
    except SystemExit as exc:  # argparse's usage errors: status 2
        code = exc.code
        return (0 if code is None else code if isinstance(code, int) else 1), None
    except BaseException as exc:  # noqa: BLE001 - anything else escaping main() is what we count
        return None, exc


# ---------------------------------------------------------------------------------------------
# the four checks: each returns a list of problems (empty = passed)


def check_exit(case: Case, status, exc) -> list[str]:
    if exc is not None:
        return [f"raised {type(exc).__name__}: {str(exc)[:160]}"]
    if case.valid and status != 0:
        return [f"exit {status} for a valid input"]
    if not case.valid and status == 0:
        return ["exit 0 for a bad input"]
    return []


def check_message(case: Case, err: str, exc) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    prefix = f"rait {case.verb}: error: "
    errors = [line for line in lines if line.startswith(prefix)]
    problems = ["stderr holds a Traceback"] if "Traceback" in err else []
    if case.valid:
        return problems + [f"error line for a valid input: {line[:160]}" for line in errors]
    if exc is not None:
        return problems + ["no error message (an exception escaped main)"]
    if len(errors) != 1:
        return problems + [f"{len(errors)} '{prefix}' lines (expected exactly one)"
                           + (f"; last stderr line: {lines[-1][:160]!r}" if lines else "; stderr is empty")]
    if lines[-1] != errors[0]:
        problems.append(f"the error line is not the last stderr line (then: {lines[-1][:120]!r})")
    for name in case.names:
        if not any(alternative in errors[0] for alternative in name.split("|")):
            problems.append(f"the error does not name {name.split('|')[0]!r}: {errors[0][:200]!r}")
    return problems


def check_leftovers(case: Case, before: dict, after: dict) -> list[str]:
    new = sorted(set(after) - set(before))
    if case.valid:
        stray = [name for name in new if name.endswith(".tmp") or ".partial" in name or ".progress" in name]
        return [f"left behind: {', '.join(stray[:5])}"] if stray else []
    return [f"left behind: {', '.join(new[:5])}" + (f" (+{len(new) - 5} more)" if len(new) > 5 else "")] if new else []


def check_inputs(case: Case, before: dict, after: dict) -> list[str]:
    problems = []
    for name, (kind, mode, content) in before.items():
        if name not in after:
            problems.append(f"{name} was removed")
            continue
        kind2, mode2, content2 = after[name]
        if kind2 != kind:
            problems.append(f"{name} was replaced: {kind} -> {kind2}")
        elif mode2 != mode:
            problems.append(f"{name} mode changed {mode:o} -> {mode2:o}")
        elif content2 != content and name not in case.updates:
            problems.append(f"{name} content changed")
    return problems


# ---------------------------------------------------------------------------------------------
# the test


def restore_permissions(root: Path) -> None:
    """Let pytest clean the temporary directory up after a read-only case."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o700)


def save_result(case: Case, results: dict, err: str) -> None:
    target = os.environ.get("RAIT_BAD_INPUT_RESULTS")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"id": case.id, "verb": case.verb, "valid": case.valid,
                                     "checks": {name: not problems for name, problems in results.items()},
                                     "problems": results, "stderr_tail": err[-3000:]}) + "\n")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys, request, record_property):
    work = tmp_path / "work"
    work.mkdir()
    ctx = prepare(case, work, request)
    argv = [case.verb, *expand(case.argv, ctx)]
    watched = [ctx.full] if ctx.full is not None and not str(ctx.full).startswith(str(work)) else []
    monkeypatch.chdir(work)
    before = snapshot(work, watched)
    capsys.readouterr()
    rebind_log_handlers()
    old_umask = os.umask(UMASK)
    try:
        with memory_cap():
            status, exc = call_main(argv)
    finally:
        os.umask(old_umask)
        rebind_log_handlers(sys.__stderr__)  # later tests must not log into this case's capture
    captured = capsys.readouterr()
    ctx.out, ctx.err = captured.out, captured.err
    after = snapshot(work, watched)
    restore_permissions(work)

    results = {
        "exit": check_exit(case, status, exc),
        "message": check_message(case, ctx.err, exc),
        "leftovers": check_leftovers(case, before, after),
        "inputs": check_inputs(case, before, after),
    }
    if case.valid and case.check and status == 0 and exc is None:
        results["exit"] += case.check(ctx)  # a valid run must also have written correct outputs
    for name in CHECKS:
        record_property(f"check_{name}", "pass" if not results[name] else "FAIL")
    save_result(case, results, ctx.err)
    failed = {name: problems for name, problems in results.items() if problems}
    assert not failed, "; ".join(f"[{name}] " + " | ".join(problems) for name, problems in failed.items())
