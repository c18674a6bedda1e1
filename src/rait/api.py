"""rait as a library: every stage as one Python function, returning plain objects.

    import rait
    knowledge = rait.probe("demo-oeqa", part="pool", test_size=120, limit=8, samples=2)
    rait_set = rait.build(knowledge, method="corcer", size=8, allow_fewer=True)
    tuned = rait.train(rait_set, epochs=1)
    init = rait.evaluate("demo-oeqa", part="test", test_size=120, limit=6, name="init")
    result = rait.evaluate("demo-oeqa", part="test", test_size=120, limit=6, model=tuned, baseline=init)

Each function wraps the stage's own file-in/file-out entry function (the one its CLI verb and
`rait run` call), so a result here is the result the CLI gives:

- keyword arguments are the stage's config keys (its YAML keys; `--max-new-tokens` is
  `max_new_tokens=`), checked by `rait.config.build`: a misspelt one is the CLI's "unknown key ...;
  did you mean ...?" RaitError, a bad value its "must be >= 1" one;
- data is a dataset spec as the CLI takes it ("demo-oeqa", a path, "hf:REPO[:CONFIG]"), a list of
  item dicts (read as `rait.data.schema.item_from_row` reads a stored row; an OEQA answers[0]
  counts as the primary answer, as in a generic jsonl file, unless the row says `answer_source`)
  or a `datasets.Dataset` of such rows; the data options (part, test_size, split_seed, limit)
  carve and sample any of them the same way;
- `out=` writes the stage's files there, as the CLI would (and resumes or reuses them as it
  does); without it they go to a temporary directory. Data results (probe, rehearse, build,
  evaluate, conflict) hold their content in memory and keep their temporary directory as long as
  the result object lives; a trained model and a report are files, so their temporary directory
  is kept (pass out= to choose where);
- quiet unless `verbose=True`: what a stage prints (plan, progress bars, summary) is kept in the
  result's `log`; errors are raised as RaitError.

A result object is accepted wherever a later stage wants its file: build(knowledge),
train(rait_set), evaluate(..., model=tuned, baseline=init), report(init, result). Every result
is also an os.PathLike of its `path`.

The stage modules are reached through the CLI's verb table (`rait.cli.COMMANDS`), as the CLI
reaches them, and imported on first use: `import rait` stays light (no torch, transformers,
datasets or stage module).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io as _io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rait import config
from rait.errors import RaitError

__all__ = ["probe", "rehearse", "build", "conflict", "train", "evaluate", "report", "run",
           "KnowledgeTable", "RaitSet", "TrainedModel", "EvalResult", "ConflictResult", "Report", "RunResult"]


# ---------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass(kw_only=True, eq=False)
class Result:
    """What every stage returns: where its output lives (`path`) and what the stage printed
    (`log`, empty with verbose=True, when it went to the screen). An os.PathLike of `path`."""

    path: Path
    log: str = dataclasses.field(default="", repr=False)
    _tmp: Any = dataclasses.field(default=None, repr=False)  # the temporary directory it lives in

    def __fspath__(self) -> str:
        return str(self.path)


def _to_dataset(rows: list[dict]):
    import datasets  # only here: `import rait` never imports it

    return datasets.Dataset.from_list(rows)


@dataclasses.dataclass(kw_only=True, eq=False)
class KnowledgeTable(Result):
    """A knowledge table (rait.probe, rait.rehearse): one row per item, the item's fields +
    `task`, `correctness`, `certainty` (+ `samples`, or `probs` and `entropy`; after rehearsal
    `correctness_rehearsal`, `certainty_rehearsal`, `flow`). `meta` is its FILE.meta.json,
    `summary` the probe's summary (n, mean_correctness, mean_certainty, histogram, ...; after
    rehearsal also `rehearsal`: n, loss, flow shares)."""

    rows: list[dict]
    summary: dict
    meta: dict

    def __len__(self) -> int:
        return len(self.rows)

    def to_dataset(self):
        """The rows as a `datasets.Dataset`."""
        return _to_dataset(self.rows)


@dataclasses.dataclass(kw_only=True, eq=False)
class RaitSet(Result):
    """A RAIT training set (rait.build): rows with `id`, `prompt`, `completion`, `label`
    (vanilla / idk) and the knowledge fields that decided the label. `summary`: method, pool,
    counts {vanilla, idk}, requested, removed, stats, targets; `meta` its FILE.meta.json."""

    rows: list[dict]
    summary: dict
    meta: dict

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def counts(self) -> dict:
        return dict(self.summary["counts"])

    def to_dataset(self):
        return _to_dataset(self.rows)


@dataclasses.dataclass(kw_only=True, eq=False)
class TrainedModel(Result):
    """A fine-tuned model folder (rait.train): `path` is the folder (use it as `model=`), `info`
    its rait_train.json (base_model, recipe, steps, first_loss, final_loss, losses, ...)."""

    info: dict


@dataclasses.dataclass(kw_only=True, eq=False)
class EvalResult(Result):
    """An evaluation (rait.evaluate): `result` is the eval JSON (model, dataset, n, correct,
    wrong, refused, unparsed, Pc, Pw, Pr, THS, THS_ci, baseline, ...; `result["Pc"]` reads as
    `res["Pc"]`), `items` the per-item rows (id, question, answer, outcome, ...)."""

    result: dict
    items: list[dict]

    def __getitem__(self, key: str):
        return self.result[key]

    def get(self, key: str, default=None):
        return self.result.get(key, default)

    def to_dataset(self):
        return _to_dataset(self.items)


@dataclasses.dataclass(kw_only=True, eq=False)
class ConflictResult(Result):
    """The static-conflict diagnostic of a RAIT set (rait.conflict): `result` is its JSON (name,
    n, labels, crss {threshold: {pairs, conflicting, crss}}, ...)."""

    result: dict

    def __getitem__(self, key: str):
        return self.result[key]


@dataclasses.dataclass(kw_only=True, eq=False)
class Report(Result):
    """A report (rait.report): `path` is its folder; `markdown` and `html` the pages, `figures`
    the PNGs, `text` the Markdown itself, `sections` the section titles, `notes` what it noted."""

    markdown: Path
    html: Path
    figures: list[Path]
    sections: list[str]
    notes: list[str]
    text: str


@dataclasses.dataclass(kw_only=True, eq=False)
class RunResult(Result):
    """A finished `rait run` (rait.run): `path` is the run directory, `manifest` its
    manifest.json, `stages` {stage name: {status, seconds, summary, ...}}, `summary` {stage
    name: that stage's summary}, `report` the report.html (None when no report was written)."""

    manifest: dict
    stages: dict
    summary: dict
    report: Path | None


# ---------------------------------------------------------------------------------------------
# plumbing


def _stage(verb: str):
    """The module of a CLI verb, imported now (rait.cli.COMMANDS: the CLI's own verb table)."""
    from rait.cli import COMMANDS

    return importlib.import_module(COMMANDS[verb][0])


def _configs(function: str, classes: list, options: dict) -> list:
    """One config per class from the keyword arguments, each checked by rait.config.build as a
    YAML section is: a key no class knows is an "unknown key ...; did you mean" error, a key
    several classes know (rehearse's `seed`) sets each of them. Every problem is reported at once."""
    where = f"rait.{function}"
    names = {f.name: None for cls in classes for f in dataclasses.fields(cls)}
    values = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in options.items()}
    problems = [str(config.unknown_key_error(key, list(names), where)) for key in values if key not in names]
    built = []
    for cls in classes:
        own = {f.name for f in dataclasses.fields(cls)}
        try:
            built.append(config.build(cls, {k: v for k, v in values.items() if k in own}, where=where))
        except RaitError as exc:
            problems += str(exc).splitlines()
    if problems:
        raise RaitError("\n".join(dict.fromkeys(problems)))
    return built


@contextlib.contextmanager
def _output(verbose: bool) -> Iterator[_io.StringIO | None]:
    """Quiet unless verbose: stdout and stderr (the stages' prints, progress bars, Python
    warnings) go to a buffer, and log records below ERROR are held back, for the call's duration."""
    if verbose:
        yield None
        return
    buffer = _io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        logging.disable(previous)


def _log(buffer: _io.StringIO | None) -> str:
    return buffer.getvalue() if buffer is not None else ""


def _out_path(out, name: str, prefix: str):
    """(temporary directory or None, the output path): `out` as given, else NAME in a new
    temporary directory (removed with the result that holds it)."""
    if out is not None:
        return None, Path(os.fspath(out))
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return tmp, Path(tmp.name) / name


def _kept_dir(out, name: str, prefix: str) -> Path:
    """`out` as given, else NAME in a new temporary directory that is not removed (a model, a
    report: files are the result)."""
    if out is not None:
        return Path(os.fspath(out))
    return Path(tempfile.mkdtemp(prefix=prefix)) / name


@contextlib.contextmanager
def _removed_on_error(folder: Path | None):
    """The temporary folder `_kept_dir` made for `folder` is removed when the stage fails."""
    try:
        yield
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder.parent, ignore_errors=True)
        raise


def _is_hf_dataset(data) -> bool:
    return any(cls.__module__.split(".")[0] == "datasets" for cls in type(data).__mro__)


def _without_nulls(row: dict) -> dict:
    """An Arrow row as the dict it was made from: a column another row has is None here, and so
    is a struct field (an option letter) another row has."""
    clean = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        clean[key] = value
    return clean


def _rows(data, where: str, what: str) -> list[dict]:
    """A list of dicts, a datasets.Dataset (rows as dicts) or an iterable of dicts as a list of dicts."""
    if _is_hf_dataset(data):
        if type(data).__name__ in ("DatasetDict", "IterableDatasetDict"):
            raise RaitError(f"{where}: got a datasets.{type(data).__name__} with splits "
                            f"{', '.join(map(str, data))}; pass one split, e.g. data['test']")
        return [_without_nulls(dict(row)) for row in data]
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise RaitError(f"{where}: expected {what}, got {type(data).__name__}")
    rows = list(data)
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RaitError(f"{where}: items[{index}] is a {type(row).__name__}, not a dict")
    return [dict(row) for row in rows]


DATA = "a dataset spec (a built-in name, a path or hf:REPO[:CONFIG]), a list of item dicts or a datasets.Dataset"


def _dataset(data, opts, where: str):
    """(rait.data.Dataset, spec or None): a spec loaded with the data options as the CLI loads it;
    items in memory validated, then carved and sampled by the same options."""
    from rait.data.schema import Dataset
    from rait.data.split import carve, load_with_options, take

    if isinstance(data, (str, os.PathLike)):
        spec = os.fspath(data)
        return load_with_options(spec, opts), spec
    if not isinstance(data, Dataset):
        data = _memory_dataset(_rows(data, where, DATA), opts.lenient, where)
    for name in ("split", "format", "fields"):
        if getattr(opts, name) is not None:
            raise RaitError(f"{where}.{name}: applies to a dataset spec (a name, path or hf:...), not to "
                            "items in memory")
    data = carve(data, opts.part, test_size=opts.test_size, seed=opts.split_seed)
    if opts.limit is not None:
        data = take(data, opts.limit, seed=opts.split_seed)
    return data, None


def _memory_dataset(rows: list[dict], lenient: bool, where: str):
    """Items in memory as a rait.data.Dataset: each row checked as a stored item is
    (rait.data.schema.item_from_row), ids made unique as the loaders make them."""
    from rait import io
    from rait.data.schema import Dataset, dedupe_ids, item_from_row

    items, skipped = [], []
    for index, row in enumerate(rows):
        task = row.get("task") or ("mcqa" if "choices" in row else "oeqa")
        if task == "oeqa" and "answer_source" not in row:
            row = {**row, "answer_source": "primary"}  # as a generic file's answers[0]
        try:
            item = item_from_row(row, path=f"{where}: items[{index}]")
            if items and item["task"] != items[0]["task"]:
                raise RaitError(f"{where}: items[{index}] is {item['task'].upper()} but earlier items are "
                                f"{items[0]['task'].upper()}")
        except RaitError as exc:
            if not lenient:
                raise
            skipped.append((f"items[{index}]", str(exc)))
            continue
        items.append(item)
    if not items:
        raise RaitError(f"{where}: no items" + (f" ({len(skipped)} skipped; first: {skipped[0][1]})" if skipped else ""))
    dedupe_ids(items)
    notes = [f"{len(skipped)} items skipped (lenient)"] if skipped else []
    return Dataset(name="items", task=items[0]["task"], items=items, source="<items>",
                   fingerprint=io.fingerprint(items), skipped=skipped, notes=notes)


def _file(value, name: str, stack: contextlib.ExitStack, where: str, what: str) -> Path:
    """A stage input as a file: a path or a result as it is; rows (a list of dicts, a
    datasets.Dataset) written to a temporary jsonl that lives for the call."""
    from rait import io

    if isinstance(value, (str, os.PathLike)):
        return Path(os.fspath(value))
    rows = _rows(value, where, what)
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="rait-input-"))
    path = Path(folder) / name
    io.write_jsonl_atomic(path, rows)
    return path


def _sidecar(path: Path) -> dict:
    from rait import io
    from rait.stage import meta_path

    meta = meta_path(path)
    return io.read_json(meta) if meta.is_file() else {}


def _jsonl(path: Path) -> list[dict]:
    from rait import io

    return [row for _, row in io.read_jsonl(path)]


# ---------------------------------------------------------------------------------------------
# the stages


def probe(data, *, out=None, verbose: bool = False, **options) -> KnowledgeTable:
    """`rait probe`: the knowledge state (correctness, certainty) of a model on a pool.

    `data`: a dataset spec, a list of item dicts or a datasets.Dataset. `options`: the data
    options (part, test_size, split_seed, limit, split, format, lenient, fields) and the probe's
    (model, samples, shots, shot_source, shot_split, temperature, max_new_tokens, seed, ...; see
    `rait probe --help`). A spec's own shot split is its default few-shot source, as in the CLI;
    items in memory have none (built-in shots) unless shot_source= names one.
    `out`: the knowledge table file to write (+ FILE.meta.json)."""
    from rait.data.split import DataOptions
    from rait.prompts import with_shot_source

    stage = _stage("probe")
    opts, cfg = _configs("probe", [DataOptions, stage.ProbeConfig], options)
    tmp, path = _out_path(out, "knowledge.jsonl", "rait-probe-")
    with _output(verbose) as buffer:
        dataset, spec = _dataset(data, opts, "rait.probe")
        if spec is not None:
            cfg = with_shot_source(cfg, spec, opts.split)
        rows = stage.probe(cfg, dataset.items, path, dataset_meta=stage.dataset_record(dataset, spec))
    meta = _sidecar(path)
    return KnowledgeTable(path=path, rows=rows, summary=dict(meta.get("summary") or {}), meta=meta,
                          log=_log(buffer), _tmp=tmp)


def rehearse(data, knowledge, *, out=None, verbose: bool = False, **options) -> KnowledgeTable:
    """`rait rehearse`: train a copy of the model on the items it knows for sure, probe again,
    and join the knowledge flow into the table.

    `data`: the pool the table was probed on (the same data options); `knowledge`: the
    KnowledgeTable rait.probe returned, or the path of a table with its .meta.json (the second
    probe repeats the first one's settings). `options`: the data options, the selection's (size,
    oeqa_min_correctness, oeqa_min_certainty, mcqa_min_prob, template) and the training recipe's
    (as rait.train; `seed` sets both). `out`: the rehearsal folder (its knowledge.jsonl is the
    result; model/, rehearsal_set.jsonl and knowledge_rehearsed.jsonl beside it)."""
    from rait.data.split import DataOptions
    from rait.knowledge import read_table

    stage, train_stage = _stage("rehearse"), _stage("train")
    opts, rcfg, tcfg = _configs("rehearse", [DataOptions, stage.RehearseConfig, train_stage.TrainConfig], options)
    if not isinstance(knowledge, (str, os.PathLike)):
        raise RaitError("rait.rehearse: knowledge must be the KnowledgeTable rait.probe returned or the path of a "
                        "knowledge table (the second probe repeats the settings in its .meta.json)")
    tmp, folder = _out_path(out, "rehearse", "rait-rehearse-")
    with _output(verbose) as buffer:
        dataset, _ = _dataset(data, opts, "rait.rehearse")
        path = stage.rehearse(dataset.items, Path(os.fspath(knowledge)), folder, rcfg, tcfg)
    meta = _sidecar(path)
    summary = {**(meta.get("summary") or {}), "rehearsal": meta.get("rehearsal")}
    return KnowledgeTable(path=Path(path), rows=read_table(path), summary=summary, meta=meta, log=_log(buffer),
                          _tmp=tmp)


def build(knowledge, *, out=None, verbose: bool = False, **options) -> RaitSet:
    """`rait build`: the RAIT training set a selection method makes of a knowledge table.

    `knowledge`: a KnowledgeTable (rait.probe / rait.rehearse), a table's path, or its rows (a
    list of dicts or a datasets.Dataset; samples are then scored with the probe's default match).
    `options`: method, size, idk_ratio, threshold, vanilla_min, idk_max, target, flow_rule,
    refusal_text, style, template, format, allow_fewer, seed. `out`: the set file (+ .meta.json)."""
    stage = _stage("build")
    (cfg,) = _configs("build", [stage.BuildConfig], options)
    tmp, path = _out_path(out, "rait_set.jsonl", "rait-build-")
    with contextlib.ExitStack() as stack, _output(verbose) as buffer:
        source = _file(knowledge, "knowledge.jsonl", stack, "rait.build",
                       "a KnowledgeTable, the path of a knowledge table, or its rows")
        meta = stage.build(cfg, source, path)
        print(stage.format_summary(meta["summary"]))
        rows = _jsonl(path)
    return RaitSet(path=path, rows=rows, summary=meta["summary"], meta=_sidecar(path), log=_log(buffer), _tmp=tmp)


def conflict(rait_set, *, out=None, verbose: bool = False, **options) -> ConflictResult:
    """`rait conflict`: the static-conflict diagnostic (CRSS) of a RAIT set in a model's
    representations. `rait_set`: a RaitSet, a path, or its rows. `options`: model (the initial
    model), thresholds, pool, plot, projection, name, and the model options. `out`: the result
    JSON."""
    stage = _stage("conflict")
    (cfg,) = _configs("conflict", [stage.ConflictConfig], options)
    tmp, path = _out_path(out, "conflict.json", "rait-conflict-")
    with contextlib.ExitStack() as stack, _output(verbose) as buffer:
        source = _file(rait_set, "rait_set.jsonl", stack, "rait.conflict", "a RaitSet, the path of a RAIT set, or its rows")
        result = stage.conflict(cfg, source, path)
        stage.print_summary(result)
    return ConflictResult(path=path, result=result, log=_log(buffer), _tmp=tmp)


def train(data, *, out=None, verbose: bool = False, **options) -> TrainedModel:
    """`rait train`: supervised fine-tuning (LoRA by default, or method="full").

    `data`: a RaitSet (its recorded prompt format goes with the model, so evaluate asks it the
    way it was trained), the path of a prompt/completion .jsonl, or its rows (a list of dicts or a
    datasets.Dataset). `options`: the recipe (model, method, epochs, learning_rate, batch_size,
    grad_accum, lora_r, lora_alpha, max_length, merge, seed, ...; see `rait train --help`).
    `out`: the model folder; without it a new temporary folder that is kept (the model is the
    result)."""
    from rait.models import read_train_info

    stage = _stage("train")
    (cfg,) = _configs("train", [stage.TrainConfig], options)
    folder = _kept_dir(out, "model", "rait-train-")
    with _output(verbose) as buffer, _removed_on_error(folder if out is None else None):
        source = (Path(os.fspath(data)) if isinstance(data, (str, os.PathLike))
                  else _rows(data, "rait.train", "a RaitSet, the path of a RAIT set, or its rows"))
        path = stage.train_sft(source, folder, cfg, progress=verbose)
    return TrainedModel(path=Path(path), info=read_train_info(str(path)) or {}, log=_log(buffer))


def evaluate(data, *, out=None, verbose: bool = False, **options) -> EvalResult:
    """`rait eval`: correct / wrong / refused (Pc, Pw, Pr) of a model on a test set, and its THS
    against a baseline.

    `data`: a dataset spec, a list of item dicts or a datasets.Dataset. `options`: the data
    options and the evaluation's (model: a path, hub id or TrainedModel; baseline: the EvalResult
    of the initial model, or its path; name, prompt, shots, shot_source, shot_split, shot_size,
    max_new_tokens, match, bootstrap, seed, ...; see `rait eval --help`). `out`: the result JSON
    (+ FILE.items.jsonl)."""
    from rait.data.split import DataOptions
    from rait.layout import items_path
    from rait.prompts import with_shot_source

    stage = _stage("eval")
    opts, cfg = _configs("evaluate", [DataOptions, stage.EvalConfig], options)
    tmp, path = _out_path(out, "result.json", "rait-eval-")
    with _output(verbose) as buffer:
        if isinstance(data, (str, os.PathLike)):  # as `rait eval DATASET` reads it
            spec = os.fspath(data)
            from rait import io

            io.check_output_path(path, [spec, cfg.baseline])
            cfg = with_shot_source(cfg, spec, opts.split)
            dataset = stage.load_test_set(spec, opts, cfg)
            carved = stage.carved_out_meta(cfg, spec, opts.split)
        else:
            if cfg.shot_size is not None and cfg.shot_source is None:
                raise RaitError("rait.evaluate.shot_size: carving shots out of the test set itself needs it as a "
                                "dataset spec (a name or path); for items in memory give shot_source= too")
            dataset, _ = _dataset(data, opts, "rait.evaluate")
            carved = {}
        meta = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint, **carved}
        result = stage.evaluate(dataset.items, path, cfg, dataset_meta=meta)
        stage.print_summary(result)
    return EvalResult(path=path, result=result, items=_jsonl(items_path(path)), log=_log(buffer), _tmp=tmp)


def report(*inputs, out=None, verbose: bool = False, **options) -> Report:
    """`rait report`: Markdown + self-contained HTML (+ PNG figures) of run directories or
    results. `inputs`: EvalResults, a KnowledgeTable, RaitSets, ConflictResults, run
    directories or paths of such files (or one list of them). `options`: title. `out`: the
    folder; without it a new temporary folder that is kept (the pages are the result)."""
    stage = _stage("report")
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    if not inputs:
        raise RaitError("rait.report: give at least one run directory or result")
    for index, given in enumerate(inputs):
        if not isinstance(given, (str, os.PathLike)):
            raise RaitError(f"rait.report: input {index} is a {type(given).__name__}; give results of rait.* or "
                            "paths")
    if "out" in options:
        raise RaitError("rait.report: out is a keyword of its own")
    (cfg,) = _configs("report", [stage.ReportConfig], options)
    folder = _kept_dir(out, "report", "rait-report-")
    cfg = dataclasses.replace(cfg, out=str(folder))
    with _output(verbose) as buffer, _removed_on_error(folder if out is None else None):
        written = stage.write_report([os.fspath(given) for given in inputs], cfg)
        stage.print_summary(written)
    markdown = Path(written["markdown"])
    return Report(path=folder, markdown=markdown, html=Path(written["html"]),
                  figures=[Path(f) for f in written["figures"]], sections=list(written["sections"]),
                  notes=list(written["notes"]), text=markdown.read_text(encoding="utf-8"), log=_log(buffer))


def run(config_path, overrides=(), *, run_dir=None, seed: int | None = None, only: str | None = None,
        reuse_from=None, verbose: bool = False) -> RunResult:
    """`rait run CONFIG`: the whole experiment of a YAML config in its run directory, resumable
    and cached (the CLI's own `rait.pipeline.run`).

    `overrides`: KEY.PATH=VALUE strings (["train.epochs=1", "tests.0.limit=100"]) or a mapping
    {"train.epochs": 1}; `run_dir` (default runs/NAME), `seed`, `only` (a stage-name prefix) and
    `reuse_from` (another run directory) are the CLI's --run-dir, --seed, --only, --reuse-from."""
    pipeline = _stage("run")
    if isinstance(overrides, str):
        raise RaitError("rait.run: overrides is a list of KEY=VALUE strings (or a mapping), not one string")
    if isinstance(overrides, dict):
        overrides = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]  # JSON is YAML
    parser = argparse.ArgumentParser(prog="rait run")
    pipeline.add_arguments(parser)
    args = parser.parse_args([os.fspath(config_path)])  # every option the CLI has, at its default
    args.overrides, args.seed, args.only = [str(o) for o in overrides], seed, only
    args.reuse_from = os.fspath(reuse_from) if reuse_from is not None else None
    with _output(verbose) as buffer:
        if run_dir is None:
            run_dir = Path("runs") / pipeline.load_config(args.config, pipeline.run_overrides(args)).name
        args.run_dir = os.fspath(run_dir)
        pipeline.run(args)
    from rait.layout import run_layout

    paths = run_layout(run_dir)
    manifest = pipeline.read_manifest(paths["manifest"])
    stages = manifest.get("stages", {})
    html = paths["report_dir"] / "report.html"
    return RunResult(path=Path(run_dir), manifest=manifest, stages=stages,
                     summary={name: entry.get("summary") for name, entry in stages.items()},
                     report=html if html.exists() else None, log=_log(buffer))
