"""The item schema shared by every stage.

OEQA item: {"id", "task": "oeqa", "question", "answers": [preferred target, alias, ...],
            "answer_source": "primary" | "aliases"}
  answer_source says what answers[0] is: "primary" - the source's own answer (a TriviaQA `value`,
  an `answer` column, the first of a generic file's `answers`); "aliases" - the source has no
  primary answer and the loader picked answers[0] among the aliases (DPR's TriviaQA TSV), so it
  may be a redirect such as "Chi-Beria" for Chicago. Items made before the field existed lack it;
  `rait build` then treats answers[0] as not primary (rait.stages.build.vanilla_target).
MCQA item: {"id", "task": "mcqa", "question", "choices": {"A": text, ...}, "target": "B", "subject"}

Items are plain dicts so that they round-trip through jsonl unchanged; the constructors below
are the single place their fields are checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from rait.errors import input_error

TASKS = ("oeqa", "mcqa")
ANSWER_SOURCES = ("primary", "aliases")  # what an OEQA item's answers[0] is


@dataclasses.dataclass
class Dataset:
    """A loaded dataset: validated items plus where they came from."""

    name: str
    task: str
    items: list[dict]
    source: str
    fingerprint: str
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (where, reason)
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "3 items have 3 choices"

    def __len__(self) -> int:
        return len(self.items)


def derive_id(*parts: Any) -> str:
    """A deterministic id from an item's content (used when a source has none)."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return "q" + hashlib.sha1(blob).hexdigest()[:12]


def _text(value: Any, path, line, field) -> str:
    if not isinstance(value, str) or not value.strip():
        raise input_error(path, "must be a non-empty string", line=line, field=field)
    return value.strip()


def _id(value: Any, path, line) -> str | None:
    """An item id as text (a number id 7 becomes "7"), None when absent; lists, objects,
    booleans and non-finite numbers are errors."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
            isinstance(value, float) and value != value or value in (float("inf"), float("-inf"))):
        raise input_error(path, f"must be a string or an integer, got {value!r}", line=line, field="id")
    return str(value)


def make_oeqa_item(question: Any, answers: Any, *, id: Any = None, answer_source: Any = None,
                   path="<data>", line=None, **extra: Any) -> dict:
    """Validate and build an OEQA item; `answers[0]` is the preferred training target and
    `answer_source` (kept only when given) says whether the source named it or the loader chose it."""
    question = _text(question, path, line, "question")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)):
        raise input_error(path, "must be a list of strings", line=line, field="answers")
    cleaned = []
    for answer in answers:
        if not isinstance(answer, str):
            raise input_error(path, f"must hold strings, found {type(answer).__name__}", line=line,
                              field="answers")
        if answer.strip() and answer.strip() not in cleaned:
            cleaned.append(answer.strip())
    if not cleaned:
        raise input_error(path, "is empty (an OEQA item needs at least one answer)", line=line,
                          field="answers")
    if answer_source is not None and answer_source not in ANSWER_SOURCES:
        raise input_error(path, f"must be one of {', '.join(ANSWER_SOURCES)}, got {answer_source!r}",
                          line=line, field="answer_source")
    item_id = _id(id, path, line) or derive_id(question, *cleaned)
    source = {"answer_source": answer_source} if answer_source is not None else {}
    return {"id": item_id, "task": "oeqa", "question": question, "answers": cleaned, **source, **extra}


def make_mcqa_item(question: Any, choices: Any, target: Any, *, subject: Any = None, id: Any = None,
                   path="<data>", line=None, **extra: Any) -> dict:
    """Validate and build an MCQA item. Option text is kept verbatim (MMLU's literal 'None' is a
    real option)."""
    question = _text(question, path, line, "question")
    if not isinstance(choices, dict) or len(choices) < 2:
        raise input_error(path, "must be an object of at least two label -> text", line=line,
                          field="choices")
    clean_choices = {}
    for label, text in choices.items():
        if not isinstance(label, str) or not label.strip():
            raise input_error(path, f"has an invalid label {label!r}", line=line, field="choices")
        if not isinstance(text, (str, int, float)) or isinstance(text, bool) or str(text) == "":
            raise input_error(path, f"option {label!r} must be non-empty text", line=line, field="choices")
        if label.strip() in clean_choices:
            raise input_error(path, f"labels {label!r} and {label.strip()!r} are the same label once spaces are "
                                    "trimmed; give every option its own label", line=line, field="choices")
        clean_choices[label.strip()] = str(text)
    target = str(target).strip() if target is not None else ""
    if target not in clean_choices:
        raise input_error(path, f"{target!r} is not one of the option labels "
                          f"{', '.join(clean_choices)}", line=line, field="target")
    subject = str(subject).strip() if subject not in (None, "") else "general"
    item_id = _id(id, path, line) or derive_id(question, *clean_choices.values())
    return {"id": item_id, "task": "mcqa", "question": question, "choices": clean_choices,
            "target": target, "subject": subject, **extra}


def item_from_row(row: dict, *, path="<data>", line=None) -> dict:
    """Rebuild an item from a stored row (a knowledge table or an item jsonl), task by its fields."""
    task = row.get("task") or ("mcqa" if "choices" in row else "oeqa")
    keep = {k: v for k, v in row.items() if k not in ("id", "task", "question", "answers", "choices",
                                                       "target", "subject")}
    if task == "mcqa":
        return make_mcqa_item(row.get("question"), row.get("choices"), row.get("target"),
                              subject=row.get("subject"), id=row.get("id"), path=path, line=line, **keep)
    if task == "oeqa":
        return make_oeqa_item(row.get("question"), row.get("answers"), id=row.get("id"), path=path,
                              line=line, **keep)
    raise input_error(path, f"unknown task {task!r} (expected oeqa or mcqa)", line=line, field="task")


def dedupe_ids(items: list[dict]) -> list[dict]:
    """Make ids unique deterministically: a repeated id gets '-2', '-3', ... in file order."""
    seen: dict[str, int] = {}
    for item in items:
        base = item["id"]
        count = seen.get(base, 0) + 1
        seen[base] = count
        if count > 1:
            item["id"] = f"{base}-{count}"
    return items
