"""Malformed and edge inputs for every `rait` verb: the case definitions run by test_bad_input.py.

A `Case` is a verb, its arguments, the files to create in a fresh working directory before the
call, and what a clean outcome means for it:

- a bad input (`valid=False`): a non-zero exit, one `rait VERB: error: ...` line naming `names`
  (the offending file or option), nothing left behind, every input unchanged;
- an edge-but-valid input (`valid=True`, e.g. a UTF-8 BOM or CRLF line endings): exit 0, and
  `check(ctx)` (a list of problems with the outputs) is empty; inputs unchanged.

Placeholders in `argv`: `{model}` / `{chat_model}` (the tiny models built by conftest's fixtures),
`{tmp}` (the working directory), `{full}` (a character device on which every write fails with
ENOSPC: a private copy of /dev/full, or /dev/full itself). Cases that exercise a model path use
`./no-such-model` wherever the model should never be reached: a bad input must be rejected before
any model loads, and a case never pays for a load it does not need.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable

DIR = object()  # a file entry that is created as an (empty) directory
NO_MODEL = "./no-such-model"
ON_CPU = ["--device", "cpu"]


@dataclasses.dataclass
class Case:
    id: str
    verb: str
    argv: list[str]
    files: dict = dataclasses.field(default_factory=dict)  # relative path -> bytes | str | DIR
    valid: bool = False
    names: tuple[str, ...] = ()  # the error line must contain each of these ("a|b": a or b)
    check: Callable | None = None  # valid cases: ctx -> list of problems with the outputs
    setup: Callable | None = None  # ctx -> None: more preparation (broken model, chmod, device node)
    model: bool = False  # needs the tiny model fixture (also implied by "{model}" in argv)
    chat_model: bool = False
    devfull: bool = False  # needs ctx.full
    updates: tuple[str, ...] = ()  # inputs a valid case may legitimately rewrite (mode and type must stay)

    def needs_model(self) -> bool:
        return self.model or any("{model}" in a for a in self.argv)


# ---------------------------------------------------------------------------------------------
# data of the demo shape

OEQA_ITEMS = [
    {"id": "q1", "question": "What is the capital of France?", "answers": ["Paris"]},
    {"id": "q2", "question": "What is the capital of Italy?", "answers": ["Rome"]},
    {"id": "q3", "question": "Who painted the Mona Lisa?", "answers": ["Leonardo da Vinci", "Leonardo"]},
    {"id": "q4", "question": "How many days are in a week?", "answers": ["Seven", "7"]},
    {"id": "q5", "question": "What colour is the sky on a clear day?", "answers": ["Blue"]},
    {"id": "q6", "question": "What is the largest mammal on Earth?", "answers": ["Blue whale", "whale"]},
]

MCQA_ITEMS = [
    {"id": "m1", "question": "Which country is Mount Fuji in?",
     "choices": {"A": "Japan", "B": "Philippines", "C": "South Korea", "D": "China"}, "target": "A",
     "subject": "geography"},
    {"id": "m2", "question": "What is the capital of Switzerland?",
     "choices": {"A": "Basel", "B": "Bern", "C": "Zurich", "D": "Geneva"}, "target": "B", "subject": "geography"},
    {"id": "m3", "question": "Which is the world's largest hot desert?",
     "choices": {"A": "Sahara", "B": "Kalahari", "C": "Gobi", "D": "Arabian Desert"}, "target": "A",
     "subject": "geography"},
    {"id": "m4", "question": "What is CaCO3, the main component of chalk?",
     "choices": {"A": "Calcium carbonate", "B": "Calcium oxide", "C": "Calcium sulfate", "D": "Lime"},
     "target": "A", "subject": "chemistry"},
    {"id": "m5", "question": "Which of these is a markup language?",
     "choices": {"A": "HTML", "B": "Java", "C": "Python", "D": "C"}, "target": "A", "subject": "computing"},
    {"id": "m6", "question": "What was the capital of the Byzantine Empire?",
     "choices": {"A": "Alexandria", "B": "Constantinople", "C": "Rome", "D": "Athens"}, "target": "B",
     "subject": "history"},
]

# (correctness, certainty, flow), as in test_methods: q0-q3 vanilla candidates, q4-q9 IdK candidates
KNOWLEDGE_SPEC = [(1.0, 0.9, 0.0), (0.8, 0.5, 0.1), (0.6, 0.95, -0.2), (0.5, 0.3, 0.0), (0.4, 0.2, 0.3),
                  (0.3, 0.6, 0.0), (0.2, 0.1, -0.1), (0.0, 0.8, 0.0), (0.1, 0.4, -0.1), (0.0, 0.05, 0.2)]
KNOWLEDGE = [{"id": f"q{i}", "task": "oeqa", "question": f"Question number {i}?", "answers": [f"ans{i}", "alias"],
              "correctness": c, "certainty": k, "samples": ["x", "y", "z"], "flow": f}
             for i, (c, k, f) in enumerate(KNOWLEDGE_SPEC)]
MCQA_KNOWLEDGE = [{**item, "task": "mcqa", "correctness": c, "certainty": k, "probs": {"A": c}, "entropy": 0.5}
                  for item, (c, k) in zip(MCQA_ITEMS, [(0.9, 0.8), (0.7, 0.6), (0.2, 0.3), (0.1, 0.2),
                                                       (0.6, 0.9), (0.3, 0.1)])]

RAIT_SET = [
    {"id": f"q{i}", "prompt": f"Answer the question.\nQuestion: Question number {i}?\nAnswer:",
     "completion": " I don't know" if label == "idk" else f" ans{i}", "label": label, "task": "oeqa",
     "question": f"Question number {i}?", "correctness": c, "certainty": 0.5}
    for i, (label, c) in enumerate([("vanilla", 1.0), ("idk", 0.0), ("vanilla", 0.8), ("idk", 0.2),
                                    ("vanilla", 0.6), ("idk", 0.1)])]
TRAIN_ROWS = [{"prompt": row["prompt"], "completion": row["completion"]} for row in RAIT_SET[:4]]

EVAL_RESULT = {"model": "init", "dataset": "test", "prompt": "basic", "n": 6, "correct": 2, "wrong": 2,
               "refused": 2, "unparsed": 0, "Pc": 2 / 6, "Pw": 2 / 6, "Pr": 2 / 6, "THS": None, "THS_ci": None,
               "baseline": None, "by_subject": {}, "by_group": {}, "macro": None}

# The knowledge table `rait rehearse` starts from (q1 is known for sure, so it qualifies), and the
# sidecar `rait probe` writes beside it; its model is where `rait rehearse` trains from.
REHEARSE_TABLE = [{**item, "task": "oeqa", "correctness": 1.0 if item["id"] == "q1" else 0.2,
                   "certainty": 1.0 if item["id"] == "q1" else 0.3,
                   "samples": [item["answers"][0]] * 2 if item["id"] == "q1" else ["no", "idea"]}
                  for item in OEQA_ITEMS]


def probe_meta(model: str = NO_MODEL) -> dict:
    return {"config": {"model": model, "samples": 2, "max_new_tokens": 4, "shots": 0, "device": "cpu"},
            "dataset": {"name": "pool"}}


def conversation(text: str, role: str = "user") -> list[dict]:
    return [{"role": role, "content": text}]


# ---------------------------------------------------------------------------------------------
# file contents

def jsonl(rows, sep: str = "\n") -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + sep for row in rows).encode("utf-8")


def dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def with_field(rows, index: int, field: str, value, *, drop: bool = False) -> list[dict]:
    """A copy of rows whose row `index` has `field` set to `value` (or removed)."""
    rows = [dict(row) for row in rows]
    if drop:
        rows[index].pop(field, None)
    else:
        rows[index][field] = value
    return rows


def with_literal(rows, index: int, field: str, literal: str) -> bytes:
    """jsonl text with row `index`'s `field` replaced by a raw JSON literal (NaN, a huge integer)."""
    text = jsonl(with_field(rows, index, field, "__LITERAL__")).decode()
    return text.replace('"__LITERAL__"', literal, 1).encode()


def json_literal(obj: dict, field: str, literal: str) -> bytes:
    text = dumps({**obj, field: "__LITERAL__"}).decode()
    return text.replace('"__LITERAL__"', literal, 1).encode()


def non_utf8(rows) -> bytes:
    """Valid jsonl except for one 0xFF byte inside a string on line 2."""
    lines = jsonl(rows).split(b"\n")
    lines[1] = lines[1].replace(b': "', b': "\xff', 1)
    return b"\n".join(lines)


def truncated(rows) -> bytes:
    """The last line cut off mid-object, without its newline (a write that was killed)."""
    return jsonl(rows)[:-12]


NESTED = b"[" * 100_000 + b"]" * 100_000  # json / yaml parsers recurse once per bracket
HUGE_INT = "1" * 5000  # over Python's 4300-digit int conversion limit
UNICODE_TEXT = "Quelle est la capitale de la France ? «東京» naïve 🚀 "


def unicode_rows(rows, field: str) -> list[dict]:
    return with_field(rows, 0, field, UNICODE_TEXT + str(rows[0][field]))


# ---------------------------------------------------------------------------------------------
# checks of valid cases' outputs (ctx: .tmp, .out, .err)

def jsonl_count(ctx, name: str, n: int) -> list[str]:
    path = ctx.tmp / name
    if not path.is_file():
        return [f"{name} was not written"]
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [] if len(rows) == n else [f"{name} has {len(rows)} rows, expected {n}"]


def exists(*names: str) -> Callable:
    def check(ctx) -> list[str]:
        return [f"{name} was not written" for name in names if not (ctx.tmp / name).exists()]
    return check


def json_field(name: str, field: str, expected=None, *, not_none: bool = False) -> Callable:
    def check(ctx) -> list[str]:
        path = ctx.tmp / name
        if not path.is_file():
            return [f"{name} was not written"]
        data = json.loads(path.read_text(encoding="utf-8"))
        if not_none:
            return [] if data.get(field) is not None else [f"{name}: {field} is missing or null"]
        return [] if data.get(field) == expected else [f"{name}: {field} is {data.get(field)!r}, expected {expected!r}"]
    return check


def data_summary(items: int) -> Callable:
    """`rait data --json` printed a summary with this many items."""
    def check(ctx) -> list[str]:
        start = ctx.out.find("{")
        try:
            summary = json.loads(ctx.out[start:])
        except ValueError:
            return ["stdout holds no JSON summary"]
        return [] if summary.get("items") == items else [f"summary says {summary.get('items')} items, expected {items}"]
    return check


def all_of(*checks: Callable) -> Callable:
    def check(ctx) -> list[str]:
        return [problem for c in checks for problem in c(ctx)]
    return check


def mode_is(name: str, mode: int) -> Callable:
    def check(ctx) -> list[str]:
        path = ctx.tmp / name
        if not path.exists():
            return [f"{name} was not written"]
        actual = stat.S_IMODE(path.stat().st_mode)
        return [] if actual == mode else [f"{name} has mode {actual:o}, expected {mode:o}"]
    return check


def json_has_keys(name: str, *keys: str) -> Callable:
    def check(ctx) -> list[str]:
        data = json.loads((ctx.tmp / name).read_text(encoding="utf-8"))
        return [f"{name} lost or lacks entry {key!r}" for key in keys if key not in data]
    return check


def text_contains(name: str, text: str) -> Callable:
    def check(ctx) -> list[str]:
        path = ctx.tmp / name
        if not path.is_file():
            return [f"{name} was not written"]
        return [] if text in path.read_text(encoding="utf-8") else [f"{name} does not mention {text!r}"]
    return check


# ---------------------------------------------------------------------------------------------
# setups

def broken_model(kind: str) -> Callable:
    """Copy the tiny model to ./broken-model and break it."""
    def setup(ctx) -> None:
        target = ctx.tmp / "broken-model"
        shutil.copytree(ctx.model, target)
        if kind == "unknown-type":
            config = json.loads((target / "config.json").read_text())
            config["model_type"] = "no-such-architecture"
            (target / "config.json").write_text(json.dumps(config))
        elif kind == "config-not-json":
            (target / "config.json").write_text('{"model_type": "llama", ')
        elif kind == "truncated-weights":
            weights = target / "model.safetensors"
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
        elif kind == "no-weights":
            (target / "model.safetensors").unlink()
        elif kind == "no-tokenizer":
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                (target / name).unlink(missing_ok=True)
        else:
            raise ValueError(kind)
    return setup


MODEL_BREAKS = ("unknown-type", "config-not-json", "truncated-weights", "no-weights", "no-tokenizer")
SOME_BREAKS = ("unknown-type", "truncated-weights", "no-tokenizer")
# the bad kinds kept for the inputs of the verbs that also load a model (the full set: data, build)
SHORT_KINDS = ("empty", "nonutf8", "truncated-last-line", "array-line", "nested-brackets", "huge-int",
               "directory", "nan")


def read_only_dir(name: str = "ro") -> Callable:
    def setup(ctx) -> None:
        if os.geteuid() == 0:
            import pytest

            pytest.skip("running as root: permissions are not enforced")
        (ctx.tmp / name).mkdir()
        (ctx.tmp / name).chmod(0o500)
    return setup


def file_mode(name: str, mode: int) -> Callable:
    def setup(ctx) -> None:
        (ctx.tmp / name).chmod(mode)
    return setup


# ---------------------------------------------------------------------------------------------
# generic malformed-file kinds

def content_cases(verb: str, stem: str, argv: list[str], name: str, rows: list[dict], *,
                  text_field: str, numeric: str | None = None, valid_check: Callable | None = None,
                  valid_argv: list[str] | None = None, valid_kinds=("bom", "crlf", "unicode"),
                  kinds: tuple[str, ...] | None = None, files: dict | None = None) -> list[Case]:
    """The malformed-file kinds every jsonl input gets: `rows` is a valid file's content,
    `numeric` a numeric field (NaN / Infinity / a huge integer go there), `text_field` the string
    that gets non-ASCII text in the unicode case; `kinds` keeps only these bad kinds."""
    basename = Path(name).name
    base_files = dict(files or {})

    def case(kind: str, content, valid: bool = False) -> Case:
        entries = dict(base_files)
        if content is not None:
            entries[name] = content
        return Case(f"{verb}-{stem}-{kind}", verb, list(valid_argv if valid and valid_argv else argv), entries,
                    valid=valid, names=(basename,), check=valid_check if valid else None)

    cases = [
        case("empty", b""),
        case("blank-lines", b"\n  \n\t\n\n"),
        case("nonutf8", non_utf8(rows)),
        case("truncated-last-line", truncated(rows)),
        case("array-line", jsonl(rows[:1]) + json.dumps(rows[1:3]).encode() + b"\n"),
        case("scalar-line", jsonl(rows[:1]) + b"42\n"),
        case("nested-brackets", jsonl(rows[:1]) + NESTED + b"\n"),
        case("huge-int", with_literal(rows, 1, numeric or "id", HUGE_INT)),
        case("directory", DIR),
        case("missing", None),
    ]
    if numeric:
        cases += [case("nan", with_literal(rows, 1, numeric, "NaN")),
                  case("infinity", with_literal(rows, 1, numeric, "Infinity"))]
    if kinds is not None:
        cases = [c for c in cases if c.id.rsplit(f"{stem}-", 1)[1] in kinds]
    valid = {"bom": b"\xef\xbb\xbf" + jsonl(rows), "crlf": jsonl(rows, "\r\n"),
             "unicode": jsonl(unicode_rows(rows, text_field))}
    cases += [case(kind, valid[kind], valid=True) for kind in valid_kinds]
    return cases


def field_cases(verb: str, stem: str, argv: list[str], name: str, variants: dict, *, files=None,
                names: tuple[str, ...] | None = None) -> list[Case]:
    """One bad-input case per {kind: file content}."""
    return [Case(f"{verb}-{stem}-{kind}", verb, list(argv), {**(files or {}), name: content},
                 names=names or (Path(name).name,))
            for kind, content in variants.items()]


# ---------------------------------------------------------------------------------------------
# numeric options

VALUES = {"nan": "nan", "inf": "inf", "-inf": "-inf", "negative": "-1", "zero": "0", "huge-float": "1e309",
          "huge-int": "1e400", "above-one": "1.5", "one": "1.0", "fraction": "0.5", "neg-fraction": "-0.5"}


def option_cases(verb: str, argv: list[str], files: dict, flags: dict, *, extra: dict | None = None) -> list[Case]:
    """One case per (flag, invalid value kind): `flags` maps a flag to the kinds that are invalid
    for it (keys of VALUES, or literal values as 'kind=value')."""
    cases = []
    for flag, kinds in flags.items():
        names = ("|".join((flag, flag.lstrip("-").replace("-", "_"))),)
        for kind in kinds:
            label, literal_given, literal = kind.partition("=")
            value = literal if literal_given else VALUES[label]
            cases.append(Case(f"{verb}-opt-{flag.lstrip('-')}-{label}", verb, [*argv, f"{flag}={value}"], dict(files),
                              names=names, **(extra or {})))
    return cases


# =============================================================================================
# the cases, verb by verb

def data_cases() -> list[Case]:
    argv = ["items.jsonl", "--json"]
    cases = content_cases("data", "file", argv, "items.jsonl", OEQA_ITEMS, text_field="question",
                          valid_check=data_summary(6))
    cases += field_cases("data", "file", argv, "items.jsonl", {
        "id-nan": with_literal(OEQA_ITEMS, 1, "id", "NaN"),
        "id-list": jsonl(with_field(OEQA_ITEMS, 1, "id", ["q2"])),
        "question-list": jsonl(with_field(OEQA_ITEMS, 1, "question", ["What?"])),
        "answers-number": jsonl(with_field(OEQA_ITEMS, 1, "answers", 42)),
        "missing-question": jsonl(with_field(OEQA_ITEMS, 1, "question", None, drop=True)),
        "missing-answers": jsonl(with_field(OEQA_ITEMS, 1, "answers", None, drop=True)),
        "mcqa-labels-collide": jsonl(with_field(MCQA_ITEMS, 1, "choices",
                                                {"A": "Basel", "A ": "Bern", "B": "Zurich", "C": "Geneva"})),
        "mcqa-target-missing": jsonl(with_field(MCQA_ITEMS, 1, "target", None, drop=True)),
        "mixed-tasks": jsonl(OEQA_ITEMS[:3] + MCQA_ITEMS[:3]),
    })
    cases += [
        Case("data-file-duplicate-ids", "data", argv, {"items.jsonl": jsonl(with_field(OEQA_ITEMS, 1, "id", "q1"))},
             valid=True, check=data_summary(6)),  # documented: repeated ids get a '-2' suffix
        Case("data-file-int-and-str-ids", "data", argv,
             {"items.jsonl": jsonl(with_field(with_field(OEQA_ITEMS, 0, "id", 1), 1, "id", "1"))},
             valid=True, check=data_summary(6)),
        Case("data-json-array-file", "data", ["items.json", "--json"],
             {"items.json": json.dumps(OEQA_ITEMS).encode()}, valid=True, check=data_summary(6)),
        Case("data-csv-nonutf8", "data", ["items.csv"],
             {"items.csv": b"id,question,answers\nq1,What is the capital of France?,Paris\nq2,Caf\xe9?,Rome\n"},
             names=("items.csv",)),
        Case("data-csv-bom", "data", ["items.csv", "--json"],
             {"items.csv": b"\xef\xbb\xbfid,question,answers\nq1,What is the capital of France?,Paris\n"
                           b"q2,What is the capital of Italy?,Rome\n"}, valid=True, check=data_summary(2)),
    ]
    cases += option_cases("data", ["items.jsonl", "--part", "pool"], {"items.jsonl": jsonl(OEQA_ITEMS)}, {
        "--test-size": ["nan", "inf", "neg-fraction", "above-one"],
        "--limit": ["zero", "nan", "huge-int"],
        "--examples": ["negative"],
    })
    return cases


BUILD_ARGV = ["--knowledge", "knowledge.jsonl", "--out", "set.jsonl", "--method", "cor", "--size", "4",
              "--idk-ratio", "0.5"]
BUILD_OK = all_of(lambda ctx: jsonl_count(ctx, "set.jsonl", 4), exists("set.jsonl.meta.json"))


def build_cases() -> list[Case]:
    cases = content_cases("build", "knowledge", BUILD_ARGV, "knowledge.jsonl", KNOWLEDGE, text_field="question",
                          numeric="correctness", valid_check=BUILD_OK)
    craft = [*BUILD_ARGV, "--method", "craft"]
    cases += field_cases("build", "knowledge", BUILD_ARGV, "knowledge.jsonl", {
        "correctness-string": jsonl(with_field(KNOWLEDGE, 1, "correctness", "0.8")),
        "correctness-bool": jsonl(with_field(KNOWLEDGE, 1, "correctness", True)),
        "id-list": jsonl(with_field(KNOWLEDGE, 1, "id", ["q1"])),
        "missing-correctness": jsonl(with_field(KNOWLEDGE, 1, "correctness", None, drop=True)),
        "missing-answers": jsonl(with_field(KNOWLEDGE, 1, "answers", None, drop=True)),
        "missing-id": jsonl(with_field(KNOWLEDGE, 1, "id", None, drop=True)),
        "duplicate-ids": jsonl(with_field(KNOWLEDGE, 1, "id", "q0")),
        "int-and-str-ids": jsonl(with_field(with_field(KNOWLEDGE, 0, "id", 1), 1, "id", "1")),
        "correctness-above-one": jsonl(with_field(KNOWLEDGE, 1, "correctness", 1.5)),
        "mcqa-labels-collide": jsonl(with_field(MCQA_KNOWLEDGE, 1, "choices",
                                                {"A": "Basel", "A ": "Bern", "B": "Zurich", "C": "Geneva"})),
        "mixed-tasks": jsonl(KNOWLEDGE[:5] + MCQA_KNOWLEDGE[:3]),
        "rait-set-given": jsonl(RAIT_SET),
        "dataset-given": jsonl(OEQA_ITEMS),
    })
    cases += field_cases("build", "knowledge", craft, "knowledge.jsonl", {
        "flow-nan": with_literal(KNOWLEDGE, 5, "flow", "NaN"),
        "flow-string": jsonl(with_field(KNOWLEDGE, 5, "flow", "0.0")),
    })
    cases.append(Case("build-knowledge-eval-result-given", "build", BUILD_ARGV, {"knowledge.jsonl": dumps(EVAL_RESULT)},
                      names=("knowledge.jsonl",)))
    cases += user_method_cases()
    files = {"knowledge.jsonl": jsonl(KNOWLEDGE)}
    fewer = [*BUILD_ARGV, "--allow-fewer"]  # so a silently accepted value shows as exit 0, not a size error
    cases += option_cases("build", BUILD_ARGV, files, {"--size": ["zero", "negative", "nan", f"huge={10**30}"]})
    cases += option_cases("build", fewer, files, {
        "--idk-ratio": ["nan", "inf", "neg-fraction", "above-one"],
        "--threshold": ["nan", "inf", "-inf", "neg-fraction", "above-one"],
    })
    cases += build_output_cases()
    return cases


SELECTION = """\
try:
    from rait.methods import Selection
except ImportError:  # the module is being moved
    from rait.stages.build import Selection


"""
USER_METHODS = {
    "syntax-error": "def pick(table, cfg, rng)\n    return None\n",
    "wrong-signature": "def pick(table):\n    return None\n",
    "returns-wrong-type": "def pick(table, cfg, rng):\n    return [1, 2]\n",
    "raises": "def pick(table, cfg, rng):\n    raise ValueError('boom')\n",
    "no-such-function": "def other(table, cfg, rng):\n    return None\n",
    "not-callable": "pick = 3\n",
    "import-error": "import no_such_module_for_rait_tests\n\ndef pick(table, cfg, rng):\n    return None\n",
    "stray-item": SELECTION + "def pick(table, cfg, rng):\n    return Selection([dict(table[0], id='zzz')], [])\n",
    "item-twice": SELECTION + "def pick(table, cfg, rng):\n    return Selection([table[0], table[0]], [])\n",
    "foreign-rows": SELECTION + "def pick(table, cfg, rng):\n    return Selection([{'id': table[0]['id']}], [])\n",
}


def user_method_cases() -> list[Case]:
    argv = [*BUILD_ARGV, "--method", "mymethod.py:pick"]
    files = {"knowledge.jsonl": jsonl(KNOWLEDGE)}
    cases = [Case(f"build-method-{kind}", "build", argv, {**files, "mymethod.py": source}, names=("mymethod.py",))
             for kind, source in USER_METHODS.items()]
    cases += [
        Case("build-method-nonutf8-source", "build", argv,
             {**files, "mymethod.py": b'NAME = "caf\xe9"\n\ndef pick(table, cfg, rng):\n    return None\n'},
             names=("mymethod.py",)),
        Case("build-method-file-missing", "build", argv, files, names=("mymethod.py",)),
        Case("build-method-module-missing", "build", [*BUILD_ARGV, "--method", "no_such_module_xyz:pick"], files,
             names=("no_such_module_xyz",)),
    ]
    return cases


def build_output_cases() -> list[Case]:
    files = {"knowledge.jsonl": jsonl(KNOWLEDGE)}
    argv = [a for a in BUILD_ARGV if a not in ("--out", "set.jsonl")]
    info = {"other": {"file_name": "other.json"}}
    return [
        Case("build-out-is-input", "build", [*argv, "--out", "knowledge.jsonl"], files, names=("knowledge.jsonl",)),
        Case("build-out-is-directory", "build", [*argv, "--out", "outdir"], {**files, "outdir": DIR},
             names=("outdir",)),
        Case("build-out-below-file", "build", [*argv, "--out", "file.txt/set.jsonl"], {**files, "file.txt": "x\n"},
             names=("file.txt",)),
        Case("build-out-readonly-dir", "build", [*argv, "--out", "ro/set.jsonl"], files, setup=read_only_dir(),
             names=("ro",)),
        Case("build-out-dev-full", "build", [*argv, "--out", "{full}"], files, devfull=True, names=("full",)),
        Case("build-out-alpaca-keeps-modes", "build", [*argv, "--format", "alpaca", "--out", "sets/set.jsonl"],
             {**files, "sets": DIR, "sets/dataset_info.json": dumps(info)}, valid=True,
             setup=file_mode("sets/dataset_info.json", 0o644), updates=("sets/dataset_info.json",),
             check=all_of(lambda ctx: jsonl_count(ctx, "sets/set.jsonl", 4),
                          mode_is("sets/dataset_info.json", 0o644), json_has_keys("sets/dataset_info.json", "other", "set"),
                          mode_is("sets/set.jsonl", 0o644), mode_is("sets/set.jsonl.meta.json", 0o644))),
    ]


TRAIN_ARGV = ["train.jsonl", "--out", "model-out", "--model", NO_MODEL, *ON_CPU]
TRAIN_FAST = ["--epochs", "1", "--batch-size", "4", "--max-length", "64", "--save-steps", "1000",
              "--logging-steps", "1", "--method", "lora", "--no-merge"]


def train_cases() -> list[Case]:
    valid_argv = ["train.jsonl", "--out", "model-out", "--model", "{model}", *ON_CPU, *TRAIN_FAST]
    cases = content_cases("train", "data", TRAIN_ARGV, "train.jsonl", TRAIN_ROWS, text_field="prompt",
                          numeric="weight", valid_argv=valid_argv, valid_kinds=("bom", "crlf"), kinds=SHORT_KINDS,
                          valid_check=exists("model-out/rait_train.json"))
    rows = TRAIN_ROWS
    cases += field_cases("train", "data", TRAIN_ARGV, "train.jsonl", {
        "prompt-number": jsonl(with_field(rows, 1, "prompt", 42)),
        "completion-int-list": jsonl(with_field(rows, 1, "completion", [1, 2, 3])),
        "weight-string": jsonl(with_field(rows, 1, "weight", "1")),
        "weight-bool": jsonl(with_field(rows, 1, "weight", True)),
        "missing-prompt": jsonl(with_field(rows, 1, "prompt", None, drop=True)),
        "missing-completion": jsonl(with_field(rows, 1, "completion", None, drop=True)),
        "mixed-plain-and-chat": jsonl(with_field(with_field(rows, 1, "prompt", conversation("Q?")), 1, "completion",
                                                 conversation("A", "assistant"))),
        "messages-format": jsonl([{"messages": conversation(r["prompt"]) + conversation(r["completion"], "assistant")}
                                  for r in rows]),
        "alpaca-format": jsonl([{"instruction": r["prompt"], "input": "", "output": r["completion"]} for r in rows]),
        "knowledge-table-given": jsonl(KNOWLEDGE),
    })
    chat_rows = [{"prompt": conversation(r["prompt"]), "completion": conversation(r["completion"], "assistant")}
                 for r in rows]
    cases.append(Case("train-data-chat-rows-for-base-model", "train", valid_argv, {"train.jsonl": jsonl(chat_rows)},
                      names=("chat",)))
    config_argv = [*TRAIN_ARGV, "--config", "train.yaml"]
    data = {"train.jsonl": jsonl(rows)}
    cases += field_cases("train", "config", config_argv, "train.yaml", {
        "nonutf8": b"train:\n  epochs: 1 # caf\xe9\n",
        "invalid-yaml": b"train: {epochs: [1,\n",
        "section-not-mapping": b"train: [1, 2]\n",
        "unknown-key": b"train:\n  epocs: 2\n",
    }, files=data)
    cases += option_cases("train", TRAIN_ARGV, data, {
        "--epochs": ["nan", "inf", "zero", "negative"],
        "--learning-rate": ["nan", "zero", "negative"],
        "--lora-r": ["zero", "nan"],
        "--lora-dropout": ["nan", "one"],
        "--batch-size": ["zero"],
        "--max-length": ["zero"],
        "--warmup-ratio": ["nan", "one"],
        "--weight-decay": ["nan", "negative"],
        "--save-steps": ["zero"],
    })
    argv = [a for a in TRAIN_ARGV if a not in ("--out", "model-out")]
    cases += [
        Case("train-out-is-input", "train", [*argv, "--out", "train.jsonl"], data, names=("train.jsonl",)),
        Case("train-out-is-file", "train", [*argv, "--out", "notes.txt"], {**data, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("train-out-below-file", "train", [*argv, "--out", "notes.txt/model"], {**data, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("train-out-readonly-dir", "train", [*argv, "--out", "ro/model"], data, setup=read_only_dir(),
             names=("ro",)),
        Case("train-out-dev-full", "train", [*argv, "--out", "{full}"], data, devfull=True, names=("full",)),
    ]
    model_argv = ["train.jsonl", "--out", "model-out", "--model", "broken-model", *ON_CPU, *TRAIN_FAST]
    cases += [Case(f"train-model-{kind}", "train", model_argv, data, setup=broken_model(kind), model=True,
                   names=("broken-model",)) for kind in SOME_BREAKS]
    return cases


PROBE_ARGV = ["pool.jsonl", "--out", "k.jsonl", "--model", NO_MODEL, *ON_CPU]
PROBE_VALID = ["pool.jsonl", "--out", "k.jsonl", "--model", "{model}", *ON_CPU, "--shots", "1", "--batch-size", "8"]
PROBE_OK = all_of(lambda ctx: jsonl_count(ctx, "k.jsonl", 6), exists("k.jsonl.meta.json"))


def probe_cases() -> list[Case]:
    cases = content_cases("probe", "dataset", PROBE_ARGV, "pool.jsonl", MCQA_ITEMS, text_field="question",
                          valid_argv=PROBE_VALID, valid_check=PROBE_OK, kinds=SHORT_KINDS)
    cases += field_cases("probe", "dataset", PROBE_ARGV, "pool.jsonl", {
        "labels-collide": jsonl(with_field(MCQA_ITEMS, 1, "choices",
                                           {"A": "Basel", "A ": "Bern", "B": "Zurich", "C": "Geneva"})),
        "target-not-a-label": jsonl(with_field(MCQA_ITEMS, 1, "target", "E")),
        "choices-string": jsonl(with_field(MCQA_ITEMS, 1, "choices", "ABCD")),
    })
    pool = {"pool.jsonl": jsonl(MCQA_ITEMS)}
    cases += [
        Case("probe-chat-template-nonutf8", "probe", [*PROBE_ARGV, "--chat-template", "tmpl.jinja"],
             {**pool, "tmpl.jinja": b"{{ bos_token }}caf\xe9"}, names=("tmpl.jinja",)),
        Case("probe-chat-template-syntax", "probe", [*PROBE_ARGV, "--chat-template", "tmpl.jinja"],
             {**pool, "tmpl.jinja": "{% if %}"}, names=("tmpl.jinja",)),
        Case("probe-shot-source-nonutf8", "probe", [*PROBE_ARGV, "--shot-source", "shots.jsonl"],
             {**pool, "shots.jsonl": non_utf8(MCQA_ITEMS)}, names=("shots.jsonl",)),
        Case("probe-shot-source-other-task", "probe", [*PROBE_ARGV, "--shot-source", "shots.jsonl"],
             {**pool, "shots.jsonl": jsonl(OEQA_ITEMS)}, names=("shots.jsonl",)),
    ]
    cases += option_cases("probe", PROBE_ARGV, pool, {
        "--samples": ["zero", "nan"],
        "--temperature": ["nan", "inf", "negative"],
        "--top-p": ["nan", "zero", "above-one"],
        "--max-new-tokens": ["zero"],
        "--batch-size": ["zero"],
        "--shots": ["negative"],
        "--limit": ["zero"],
        "--gpu-memory-utilization": ["nan"],
        "--tensor-parallel-size": ["zero"],
        "--shard": ["count-zero=1/0", "index-too-big=2/2", "not-numbers=a/b"],
    })
    cases += option_cases("probe", [*PROBE_ARGV, "--part", "pool"], pool, {"--test-size": ["nan", "above-one"]})
    argv = [a for a in PROBE_ARGV if a not in ("--out", "k.jsonl")]
    cases += [
        Case("probe-out-is-input", "probe", [*argv, "--out", "pool.jsonl"], pool, names=("pool.jsonl",)),
        Case("probe-out-is-input-overwrite", "probe", [*argv, "--out", "pool.jsonl", "--overwrite"], pool,
             names=("pool.jsonl",)),
        Case("probe-out-is-directory", "probe", [*argv, "--out", "outdir"], {**pool, "outdir": DIR}, names=("outdir",)),
        Case("probe-out-below-file", "probe", [*argv, "--out", "notes.txt/k.jsonl"], {**pool, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("probe-out-readonly-dir", "probe", [*argv, "--out", "ro/k.jsonl"], pool, setup=read_only_dir(),
             names=("ro",)),
        Case("probe-out-dev-full", "probe", [*argv, "--out", "{full}"], pool, devfull=True, names=("full",)),
    ]
    model_argv = ["pool.jsonl", "--out", "k.jsonl", "--model", "broken-model", *ON_CPU, "--shots", "1"]
    cases += [Case(f"probe-model-{kind}", "probe", model_argv, pool, setup=broken_model(kind), model=True,
                   names=("broken-model",)) for kind in MODEL_BREAKS]
    return cases


EVAL_ARGV = ["test.jsonl", "--out", "r.json", "--model", NO_MODEL, *ON_CPU]
EVAL_RUN = ["--model", "{model}", *ON_CPU, "--max-new-tokens", "4", "--bootstrap", "0", "--shots", "1"]
EVAL_VALID = ["test.jsonl", "--out", "r.json", *EVAL_RUN]
EVAL_OK = all_of(json_field("r.json", "n", 6), exists("r.items.jsonl"))


def eval_cases() -> list[Case]:
    cases = content_cases("eval", "dataset", EVAL_ARGV, "test.jsonl", OEQA_ITEMS, text_field="question",
                          valid_argv=EVAL_VALID, valid_check=EVAL_OK, kinds=SHORT_KINDS)
    cases += field_cases("eval", "dataset", EVAL_ARGV, "test.jsonl", {
        "answers-empty": jsonl(with_field(OEQA_ITEMS, 1, "answers", [])),
        "question-list": jsonl(with_field(OEQA_ITEMS, 1, "question", ["Q?"])),
        "id-nan": with_literal(OEQA_ITEMS, 1, "id", "NaN"),
    })
    test = {"test.jsonl": jsonl(OEQA_ITEMS)}
    cases += [
        Case("eval-shot-source-nonutf8", "eval", [*EVAL_ARGV, "--shot-source", "shots.jsonl"],
             {**test, "shots.jsonl": non_utf8(OEQA_ITEMS)}, names=("shots.jsonl",)),
        Case("eval-shot-source-other-task", "eval", [*EVAL_ARGV, "--shot-source", "shots.jsonl"],
             {**test, "shots.jsonl": jsonl(MCQA_ITEMS)}, names=("shots.jsonl",)),
    ]
    cases += baseline_cases()
    cases += option_cases("eval", EVAL_ARGV, test, {
        "--bootstrap": ["negative", "nan"],
        "--batch-size": ["zero"],
        "--shots": ["negative"],
        "--max-new-tokens": ["zero"],
        "--limit": ["zero"],
    })
    cases += option_cases("eval", [*EVAL_ARGV, "--part", "test"], test, {"--test-size": ["nan"]})
    argv = ["test.jsonl", *EVAL_RUN]
    cases += [
        Case("eval-out-is-input", "eval", [*argv, "--out", "test.jsonl"], test, names=("test.jsonl",)),
        Case("eval-out-is-directory", "eval", [*argv, "--out", "outdir"], {**test, "outdir": DIR}, names=("outdir",)),
        Case("eval-out-below-file", "eval", [*argv, "--out", "notes.txt/r.json"], {**test, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("eval-out-readonly-dir", "eval", [*argv, "--out", "ro/r.json"], test, setup=read_only_dir(),
             names=("ro",)),
        Case("eval-out-dev-full", "eval", [*argv, "--out", "{full}"], test, devfull=True, names=("full",)),
    ]
    model_argv = ["test.jsonl", "--out", "r.json", "--model", "broken-model", *ON_CPU, "--max-new-tokens", "4",
                  "--bootstrap", "0"]
    cases += [Case(f"eval-model-{kind}", "eval", model_argv, test, setup=broken_model(kind), model=True,
                   names=("broken-model",)) for kind in SOME_BREAKS]
    return cases


def baseline_cases() -> list[Case]:
    """eval --baseline: a broken baseline must fail before the evaluation runs (the real tiny model
    is given, so a baseline that is wrongly accepted shows what is left behind)."""
    argv = [*EVAL_VALID, "--baseline", "baseline.json"]
    test = {"test.jsonl": jsonl(OEQA_ITEMS)}
    base = EVAL_RESULT
    cases = field_cases("eval", "baseline", argv, "baseline.json", {
        "pw-string": dumps({**base, "Pw": "0.33"}),
        "pw-nan": json_literal(base, "Pw", "NaN"),
        "pc-negative": dumps({**base, "Pc": -3}),
        "pw-seven": dumps({**base, "Pw": 7}),
        "n-huge-int": json_literal(base, "n", HUGE_INT),
        "json-list": dumps([base]),
        "empty": b"",
        "nonutf8": dumps({**base, "model": "init"}).replace(b'"init"', b'"in\xffit"'),
        "nested-brackets": NESTED,
        "knowledge-table-given": jsonl(KNOWLEDGE),
    }, files=test)
    cases += [
        Case("eval-baseline-missing", "eval", argv, test, names=("baseline.json",)),
        Case("eval-baseline-items-nonutf8", "eval", argv,
             {**test, "baseline.json": dumps({**base, "items_file": "baseline.items.jsonl"}),
              "baseline.items.jsonl": non_utf8([{"id": i["id"], "outcome": "wrong"} for i in OEQA_ITEMS])},
             names=("baseline.items.jsonl",)),
        Case("eval-baseline-bom", "eval", argv, {**test, "baseline.json": b"\xef\xbb\xbf" + dumps(base)}, valid=True,
             check=all_of(EVAL_OK, json_field("r.json", "THS", not_none=True))),
    ]
    return cases


CONFLICT_ARGV = ["raitset.jsonl", "--out", "c.json", "--model", NO_MODEL, *ON_CPU]
CONFLICT_VALID = ["raitset.jsonl", "--out", "c.json", "--model", "{model}", *ON_CPU]
CONFLICT_OK = json_field("c.json", "n", 6)


def conflict_cases() -> list[Case]:
    cases = content_cases("conflict", "raitset", CONFLICT_ARGV, "raitset.jsonl", RAIT_SET, text_field="prompt",
                          valid_argv=CONFLICT_VALID, valid_check=CONFLICT_OK, kinds=SHORT_KINDS)
    cases += field_cases("conflict", "raitset", CONFLICT_ARGV, "raitset.jsonl", {
        "label-missing": jsonl(with_field(RAIT_SET, 1, "label", None, drop=True)),
        "label-list": jsonl(with_field(RAIT_SET, 1, "label", ["idk"])),
        "label-unknown": jsonl(with_field(RAIT_SET, 1, "label", "maybe")),
        "prompt-number": jsonl(with_field(RAIT_SET, 1, "prompt", 3.5)),
        "knowledge-table-given": jsonl(KNOWLEDGE),
        "messages-format": jsonl([{"messages": conversation(r["prompt"]), "label": r["label"]} for r in RAIT_SET]),
    })
    chat = [{**r, "prompt": conversation(r["prompt"]), "completion": conversation(r["completion"], "assistant")}
            for r in RAIT_SET]
    data = {"raitset.jsonl": jsonl(RAIT_SET)}
    cases.append(Case("conflict-raitset-chat-rows-for-base-model", "conflict", CONFLICT_VALID,
                      {"raitset.jsonl": jsonl(chat)}, names=("chat",)))
    cases += option_cases("conflict", CONFLICT_ARGV, data, {
        "--thresholds": ["nan", "above-one", "below-minus-one=-2", "empty="],
        "--batch-size": ["zero"],
    })
    argv = ["raitset.jsonl", "--model", "{model}", *ON_CPU]
    cases += [
        Case("conflict-out-is-input", "conflict", [*argv, "--out", "raitset.jsonl"], data, names=("raitset.jsonl",)),
        Case("conflict-out-is-directory", "conflict", [*argv, "--out", "outdir"], {**data, "outdir": DIR},
             names=("outdir",)),
        Case("conflict-out-below-file", "conflict", [*argv, "--out", "notes.txt/c.json"],
             {**data, "notes.txt": "x\n"}, names=("notes.txt",)),
        Case("conflict-out-dev-full", "conflict", [*argv, "--out", "{full}"], data, devfull=True, names=("full",)),
    ]
    model_argv = ["raitset.jsonl", "--out", "c.json", "--model", "broken-model", *ON_CPU]
    cases += [Case(f"conflict-model-{kind}", "conflict", model_argv, data, setup=broken_model(kind), model=True,
                   names=("broken-model",)) for kind in SOME_BREAKS]
    return cases


REPORT_OK = text_contains("rait-report/report.md", "init (basic)")


def report_cases() -> list[Case]:
    argv = ["result.json"]
    cases = field_cases("report", "result", argv, "result.json", {
        "not-a-result": dumps({"foo": 1}),
        "json-list": dumps([EVAL_RESULT]),
        "pc-minus-three": dumps({**EVAL_RESULT, "Pc": -3}),
        "pc-seven": dumps({**EVAL_RESULT, "Pc": 7}),
        "pc-nan": json_literal(EVAL_RESULT, "Pc", "NaN"),
        "n-missing": dumps({k: v for k, v in EVAL_RESULT.items() if k != "n"}),
        "n-huge-int": json_literal(EVAL_RESULT, "n", HUGE_INT),
        "empty": b"",
        "nonutf8": dumps(EVAL_RESULT).replace(b'"init"', b'"in\xffit"'),
        "nested-brackets": NESTED,
        "truncated": dumps(EVAL_RESULT)[:-20],
    })
    cases += [
        Case("report-result-bom", "report", argv, {"result.json": b"\xef\xbb\xbf" + dumps(EVAL_RESULT)}, valid=True,
             check=REPORT_OK),
        Case("report-result-crlf", "report", argv, {"result.json": dumps(EVAL_RESULT).replace(b"\n", b"\r\n")},
             valid=True, check=REPORT_OK),
        Case("report-result-unicode-model", "report", argv,
             {"result.json": dumps({**EVAL_RESULT, "model": "init " + UNICODE_TEXT})}, valid=True,
             check=text_contains("rait-report/report.md", "«東京» naïve 🚀")),
        Case("report-missing-input", "report", argv, {}, names=("result.json",)),
    ]
    cases += field_cases("report", "table", ["table.jsonl"], "table.jsonl", {
        "correctness-seven": jsonl(with_field(KNOWLEDGE, 1, "correctness", 7)),
        "correctness-string": jsonl(with_field(KNOWLEDGE, 1, "correctness", "0.5")),
        "correctness-nan": with_literal(KNOWLEDGE, 1, "correctness", "NaN"),
        "truncated": truncated(KNOWLEDGE),
        "nonutf8": non_utf8(KNOWLEDGE),
    })
    cases += [
        Case("report-rundir-empty", "report", ["run"], {"run": DIR}, names=("run",)),
        Case("report-rundir-raitset-as-knowledge", "report", ["run"],
             {"run": DIR, "run/probe": DIR, "run/probe/knowledge.jsonl": jsonl(RAIT_SET)}, names=("knowledge.jsonl",)),
        Case("report-rundir-bad-eval", "report", ["run"],
             {"run": DIR, "run/eval": DIR, "run/eval/init__test__basic.json": dumps({**EVAL_RESULT, "Pw": "x"})},
             names=("init__test__basic.json",)),
    ]
    ok = {"result.json": dumps(EVAL_RESULT)}
    cases += [
        Case("report-out-is-input", "report", ["result.json", "--out", "result.json"], ok, names=("result.json",)),
        Case("report-out-is-file", "report", ["result.json", "--out", "notes.txt"], {**ok, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("report-out-below-file", "report", ["result.json", "--out", "notes.txt/report"],
             {**ok, "notes.txt": "x\n"}, names=("notes.txt",)),
        Case("report-out-readonly-dir", "report", ["result.json", "--out", "ro/report"], ok, setup=read_only_dir(),
             names=("ro",)),
        Case("report-out-dev-full", "report", ["result.json", "--out", "{full}"], ok, devfull=True, names=("full",)),
    ]
    return cases


REHEARSE_ARGV = ["pool.jsonl", "--knowledge", "k.jsonl", "--out", "reh", *ON_CPU]
REHEARSE_FILES = {"pool.jsonl": jsonl(OEQA_ITEMS), "k.jsonl": jsonl(REHEARSE_TABLE),
                  "k.jsonl.meta.json": dumps(probe_meta())}


def rehearse_cases() -> list[Case]:
    files = REHEARSE_FILES
    cases = field_cases("rehearse", "knowledge", REHEARSE_ARGV, "k.jsonl", {
        "empty": b"",
        "nonutf8": non_utf8(REHEARSE_TABLE),
        "nested-brackets": NESTED + b"\n",
        "rait-set-given": jsonl(RAIT_SET),
        "correctness-nan": with_literal(REHEARSE_TABLE, 0, "correctness", "NaN"),
    }, files=files)
    cases += field_cases("rehearse", "meta", REHEARSE_ARGV, "k.jsonl.meta.json", {
        "nonutf8": dumps(probe_meta()).replace(b"no-such-model", b"no-such-mod\xffel"),
        "not-an-object": dumps([probe_meta()]),
        "config-unknown-key": dumps({**probe_meta(), "config": {**probe_meta()["config"], "sampels": 3}}),
    }, files=files)
    cases += [
        Case("rehearse-meta-missing", "rehearse", REHEARSE_ARGV,
             {k: v for k, v in files.items() if not k.endswith(".meta.json")}, names=("k.jsonl",)),
        Case("rehearse-dataset-mismatch", "rehearse", REHEARSE_ARGV,
             {**files, "pool.jsonl": jsonl(with_field(OEQA_ITEMS, 2, "id", "other"))}, names=("k.jsonl",)),
        Case("rehearse-model-mismatch", "rehearse", [*REHEARSE_ARGV, "--model", "./other-model"], files,
             names=("other-model",)),
        Case("rehearse-out-is-file", "rehearse",
             [a if a != "reh" else "notes.txt" for a in REHEARSE_ARGV], {**files, "notes.txt": "x\n"},
             names=("notes.txt",)),
        Case("rehearse-out-is-knowledge", "rehearse",
             [a if a != "reh" else "k.jsonl" for a in REHEARSE_ARGV], files, names=("k.jsonl",)),
    ]
    cases += option_cases("rehearse", REHEARSE_ARGV, files, {
        "--size": ["negative"],
        "--oeqa-min-correctness": ["nan", "above-one"],
        "--mcqa-min-prob": ["nan", "above-one"],
        "--epochs": ["nan", "zero"],
        "--learning-rate": ["negative"],
        "--lora-dropout": ["one"],
    })
    broken = {**files, "k.jsonl.meta.json": dumps(probe_meta("broken-model"))}
    cases += [Case(f"rehearse-model-{kind}", "rehearse", REHEARSE_ARGV, broken, setup=broken_model(kind), model=True,
                   names=("broken-model",)) for kind in ("unknown-type", "truncated-weights")]
    return cases


RUN_BASE = """\
name: t
model: ./no-such-model
device: cpu
pool: {dataset: pool.jsonl}
tests:
  - {name: t1, dataset: test.jsonl}
methods: [cor]
build: {size: 4, idk_ratio: 0.5}
init_prompts: [basic, refuse]
baseline_prompt: basic
"""
RUN_ARGV = ["exp.yaml", "--dry-run", "--run-dir", "runs/t"]
RUN_FILES = {"pool.jsonl": jsonl(OEQA_ITEMS), "test.jsonl": jsonl(OEQA_ITEMS[:3])}


def run_yaml(text: str = "", **replace: str) -> str:
    """RUN_BASE with top-level keys replaced (value '' drops the key) and `text` appended."""
    lines = [line for line in RUN_BASE.splitlines() if line.split(":")[0] not in replace]
    if "tests" in replace:
        lines = [line for line in lines if not line.startswith("  - ")]
    lines += [f"{key}: {value}" for key, value in replace.items() if value]
    return "\n".join(lines) + "\n" + text


def run_cases() -> list[Case]:
    bad = {
        "unknown-key": (run_yaml("epocs: 3\n"), ("epocs",)),
        "unknown-key-in-section": (run_yaml("probe: {sampels: 5}\n"), ("sampels",)),
        "build-size-negative": (run_yaml(build="{size: -5, idk_ratio: 0.5}"), ("size",)),
        "build-idk-ratio-seven": (run_yaml(build="{size: 4, idk_ratio: 7}"), ("idk_ratio",)),
        "sizes-negative": (run_yaml("sizes: {cor: -5}\n"), ("sizes",)),
        "probe-samples-negative": (run_yaml("probe: {samples: -1}\n"), ("samples",)),
        "probe-temperature-nan": (run_yaml("probe: {temperature: .nan}\n"), ("temperature",)),
        "train-epochs-zero": (run_yaml("train: {epochs: 0}\n"), ("epochs",)),
        "eval-bootstrap-negative": (run_yaml("eval: {bootstrap: -1}\n"), ("bootstrap",)),
        "rehearse-size-negative": (run_yaml("rehearse: {size: -1}\n", methods="[craft]"), ("size",)),
        "seed-huge-int": (run_yaml(f"seed: {HUGE_INT}\n"), ("exp.yaml",)),
        "tests-missing": (run_yaml(tests=""), ("tests",)),
        "test-file-missing": (run_yaml(tests="[{name: t1, dataset: nope.jsonl}]"), ("nope.jsonl",)),
        "test-entry-not-mapping": (run_yaml(tests="[test.jsonl]"), ("tests",)),
        "pool-is-rait-set": (run_yaml(pool="{dataset: raitset.jsonl}"), ("raitset.jsonl",)),
        "pool-test-size-nan": (run_yaml(pool="{dataset: pool.jsonl, part: pool, test_size: .nan}"), ("test_size",)),
        "task-mismatch": (run_yaml(task="mcqa", pool="{dataset: mpool.jsonl}"), ("test.jsonl",)),
        "method-unknown": (run_yaml(methods="[craftt]"), ("craftt",)),
        "baseline-prompt-not-in-init": (run_yaml(init_prompts="[refuse]"), ("baseline_prompt",)),
        "duplicate-key": (run_yaml("name: t2\n"), ("name",)),
        "non-mapping": ("- a\n- b\n", ("exp.yaml",)),
        "invalid-yaml": ("pool: [1, 2\n", ("exp.yaml",)),
        "empty-file": ("", ("exp.yaml",)),
    }
    files = {**RUN_FILES, "raitset.jsonl": jsonl(RAIT_SET), "mpool.jsonl": jsonl(MCQA_ITEMS)}
    cases = [Case(f"run-yaml-{kind}", "run", RUN_ARGV, {**files, "exp.yaml": text},
                  names=tuple(dict.fromkeys(("exp.yaml", *names))))  # the file, and the key at fault
             for kind, (text, names) in bad.items()]
    cases += field_cases("run", "yaml", RUN_ARGV, "exp.yaml", {
        "nonutf8": RUN_BASE.encode().replace(b"name: t\n", b"name: t # caf\xe9\n", 1),
        "nested-brackets": NESTED + b"\n",
        "directory": DIR,
    }, files=files)
    cases += [
        Case("run-yaml-missing", "run", RUN_ARGV, files, names=("exp.yaml",)),
        Case("run-yaml-bom", "run", RUN_ARGV, {**files, "exp.yaml": b"\xef\xbb\xbf" + RUN_BASE.encode()}, valid=True,
             check=lambda ctx: [] if "build/cor" in ctx.err else ["the plan does not list build/cor"]),
        Case("run-yaml-crlf", "run", RUN_ARGV, {**files, "exp.yaml": RUN_BASE.replace("\n", "\r\n")}, valid=True,
             check=lambda ctx: [] if "build/cor" in ctx.err else ["the plan does not list build/cor"]),
    ]
    return cases


def all_cases() -> list[Case]:
    cases = (data_cases() + probe_cases() + rehearse_cases() + build_cases() + train_cases() + eval_cases()
             + conflict_cases() + report_cases() + run_cases())
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids: {duplicates}")
    return cases


CASES = all_cases()
