"""`rait run CONFIG.yaml`: the whole experiment in one run directory, resumable and cached.

probe -> rehearse (train on known items, probe again -> flow) -> build each method -> conflict
diagnostic of each set -> train each -> eval the initial model (basic, refuse) and every tuned
model on every test set -> report.

Every stage has a fingerprint of its inputs: its config section, its datasets' fingerprints, the
fingerprints of the stages it reads, and the code version. The manifest records each stage's
status, fingerprint, timing and seed. A stage whose fingerprint matches a finished entry is
skipped; a changed setting re-runs exactly the stages that depend on it (their stale outputs are
removed first); a stage killed half-way is re-entered and resumes from its own partial outputs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rait import __version__
from rait.config import build, number_problem, option, unknown_key_error
from rait.errors import RaitError
from rait.io import fingerprint, package_versions, read_json, write_json_atomic, write_text_atomic
from rait.knowledge import mean
from rait.scoring import SCORING_VERSION
from rait.options import Generation, ModelOptions
from rait import layout
from rait.layout import run_layout
from rait.stage import meta_path, remove

ALL_METHODS = ["vanilla", "cor", "corcer", "corflow", "craft"]
INIT = "init"  # model label of the initial (untuned) model


# ---------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class RunConfig(Generation):
    """Top level of an experiment YAML. Nested sections are validated by their stage's dataclass.
    The model and generation options (rait.options.Generation: model, dtype, device, revision,
    trust_remote_code, chat_template, batch_size, seed, backend, vllm, template) are the initial
    model's and apply to every stage; a stage's own section overrides them."""

    name: str = option("experiment", "run name (the default run directory is runs/NAME)")
    task: str = option("oeqa", "oeqa or mcqa; every dataset must be of this task", choices=["oeqa", "mcqa"])
    pool: dict = option(default_factory=dict, help="the pool: {dataset, split, part, test_size, split_seed, limit, ...}")
    shots: dict | None = option(None, "few-shot source: {dataset, split}; default: the pool's own dev/shots split or built-in shots")
    probe: dict = option(default_factory=dict, help="rait probe settings")
    rehearse: dict = option(default_factory=dict, help="rait rehearse selection settings")
    rehearse_train: dict = option(default_factory=dict, help="training overrides for the rehearsal model")
    methods: list = option(default_factory=lambda: list(ALL_METHODS), help="methods to build and train")
    build: dict = option(default_factory=dict, help="rait build settings shared by every method")
    sizes: dict = option(default_factory=dict, help="per-method RAIT set size overrides {method: N}")
    train: dict = option(default_factory=dict, help="training recipe, the same for every method")
    tests: list = option(default_factory=list, help="test sets: [{name, dataset, domain: in|out, shots: {dataset, "
                                                    "split, size, split_seed}, ...}]")
    eval: dict = option(default_factory=dict, help="rait eval settings")
    init_prompts: list = option(default_factory=lambda: ["basic", "refuse"], help="prompts for the initial model")
    baseline_prompt: str = option("basic", "the initial model's prompt that THS is measured against")
    conflict: dict = option(default_factory=lambda: {"enabled": True}, help="static-conflict diagnostic")


DATASET_KEYS = ("dataset", "name", "domain")
TEST_KEYS = DATASET_KEYS + ("shots",)  # a test entry's keys besides its data options


@dataclasses.dataclass
class ShotSource:
    """A test entry's own shot source, `tests: [{..., shots: {...}}]`: the few-shot examples of
    its evaluations (instead of the experiment's `shots:`). Without `dataset` the shots are carved
    out of the test set itself (`size` of them, by the pool / test carving's seeded hash) and the
    test set is the rest: ARC-Challenge questions get ARC-Challenge shots, never one of their own."""

    dataset: str | None = option(None, "dataset the shots come from (default: the test set's own, carved)")
    split: str | None = option(None, "its split (default: the test set's split when dataset is omitted)")
    size: int | None = option(None, "carve this many shots out of it (the first N in split_seed rank order); "
                                    "required without dataset", at_least=1)
    split_seed: int = option(0, "seed of that carving", at_least=0)


def shot_settings(ref: dict, base_dir: Path, where: str) -> dict | None:
    """A test entry's `shots:` as the eval settings it stands for (shot_source, shot_split,
    shot_size, shot_split_seed), or None when it has none."""
    raw = ref.get("shots")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RaitError(f"{where}.shots: must be a mapping {{dataset, split, size, split_seed}}, "
                        f"got {type(raw).__name__}")
    shots = build(ShotSource, raw, where=f"{where}.shots")
    if shots.dataset is None:
        if shots.size is None:
            raise RaitError(f"{where}.shots.size: required when the shots are carved out of the test set "
                            "itself (no shots.dataset)")
        spec, split = _resolve_spec(str(ref["dataset"]), base_dir), shots.split or ref.get("split")
    else:
        spec, split = _resolve_spec(shots.dataset, base_dir), shots.split
    return {"shot_source": spec, "shot_split": split, "shot_size": shots.size,
            "shot_split_seed": shots.split_seed}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read and validate a YAML experiment, with `KEY.PATH=VALUE` overrides applied on top (see
    `apply_overrides`); report every problem at once (with key paths)."""
    path = Path(path)
    raw = resolved_yaml(path, overrides)
    cfg = build(RunConfig, raw, where=str(path))
    problems = validate(cfg, base_dir=path.parent, where=str(path))
    if problems:
        raise RaitError("\n".join(problems))
    return cfg


def resolved_yaml(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The experiment's YAML mapping with the overrides applied (the file itself is not changed)."""
    from rait.config import read_yaml

    return apply_overrides(read_yaml(path), overrides)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of the YAML mapping `raw` with each `KEY.PATH=VALUE` set: VALUE is read as YAML (`1`,
    `true`, `[a, b]`, `{lr: 1e-4}`, or a string), KEY.PATH names nested mappings by key and lists by
    index (`tests.0.limit=100`); missing mappings on the way are created. The result is validated
    like the file, so a misspelt key is the same "did you mean" error."""
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise RaitError(f"override {override!r}: write KEY=VALUE, with KEY a dotted path such as "
                            "train.epochs=1 or tests.0.limit=100")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise RaitError(f"override {override!r}: the value is not valid YAML ({problem})") from None
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RaitError(f"override {override!r}: {'.'.join(parts[:depth]) or 'the config'} is a "
                                    f"list of {len(node)}; {part!r} is not an index of it (0..{len(node) - 1})")
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise RaitError(f"override {override!r}: {'.'.join(parts[:depth])} is a value "
                                f"({node!r}), not a mapping, so it has no key {part!r} ({where})")
    return out


def validate(cfg: RunConfig, *, base_dir: Path, where: str) -> list[str]:
    """Every problem of the experiment that can be seen before any model loads: each stage
    section against its dataclass, the method and prompt names, and the datasets."""
    problems: list[str] = []

    def check(fn: Callable[[], Any]) -> Any:
        return collecting(problems, fn)

    section_problems(cfg, where, check, problems)
    problems += name_problems(cfg, where)
    dataset_problems(cfg, base_dir, where, check, problems)
    return problems


def collecting(problems: list[str], fn: Callable[[], Any]) -> Any:
    """fn(), or None with the lines of the RaitError it raised added to `problems`: every problem
    of a config is reported at once, not only the first."""
    try:
        return fn()
    except RaitError as exc:
        problems.extend(str(exc).splitlines())
        return None


def section_problems(cfg: RunConfig, where: str, check: Callable, problems: list[str]) -> None:
    from rait.stages.build import BuildConfig
    from rait.stages.eval import EvalConfig
    from rait.stages.probe import ProbeConfig
    from rait.stages.rehearse import RehearseConfig
    from rait.stages.train import TrainConfig

    check(lambda: build(ProbeConfig, cfg.probe, where=f"{where}: probe"))
    check(lambda: build(RehearseConfig, cfg.rehearse, where=f"{where}: rehearse"))
    if cfg.rehearse_train:  # otherwise the train section's problems would be reported twice
        check(lambda: build(TrainConfig, {**cfg.train, **cfg.rehearse_train}, where=f"{where}: rehearse_train"))
    check(lambda: build(BuildConfig, cfg.build, where=f"{where}: build"))
    check(lambda: build(TrainConfig, cfg.train, where=f"{where}: train"))
    check(lambda: build(EvalConfig, cfg.eval, where=f"{where}: eval"))
    for key in ("shot_size", "shot_split_seed"):  # one way: a carve belongs to its test set
        if key in cfg.eval:
            problems.append(f"{where}: eval.{key}: shots are carved per test set; give the test entry "
                            f"its own shots: {{size: K, split_seed: S}}")
    size_bounds = next(f for f in dataclasses.fields(BuildConfig) if f.name == "size").metadata["bounds"]
    for method, size in cfg.sizes.items():
        problem = ("must be an integer" if isinstance(size, bool) or not isinstance(size, int)
                   else number_problem(size, size_bounds))
        if problem:
            problems.append(f"{where}: sizes.{method}: {problem}")


def name_problems(cfg: RunConfig, where: str) -> list[str]:
    """Methods, sizes and prompts that name something that does not exist."""
    from rait.methods import method_names

    problems = []
    known = method_names()
    for i, method in enumerate(cfg.methods):
        if method not in known:
            problems.append(str(unknown_key_error(str(method), known, f"{where}: methods[{i}]"))
                            .replace("unknown key", "unknown method"))
    for method in cfg.sizes:
        if method not in cfg.methods:
            problems.append(f"{where}: sizes.{method}: not one of the configured methods")
    for prompt in cfg.init_prompts:
        if prompt not in ("basic", "refuse"):
            problems.append(f"{where}: init_prompts: {prompt!r} is not basic or refuse")
    if cfg.baseline_prompt not in cfg.init_prompts:
        problems.append(f"{where}: baseline_prompt: {cfg.baseline_prompt!r} must be one of init_prompts")
    return problems


def dataset_problems(cfg: RunConfig, base_dir: Path, where: str, check: Callable, problems: list[str]) -> None:
    """The pool, test and shot references: their options, names, domains, and that local ones load
    as datasets of the experiment's task (hub datasets are checked when the run loads them:
    validation never touches the network)."""
    from rait.data.split import DataOptions

    refs = [("pool", cfg.pool)] + [(f"tests[{i}]", t) for i, t in enumerate(cfg.tests)]
    if cfg.shots:
        refs.append(("shots", cfg.shots))
    if not cfg.pool:
        problems.append(f"{where}: pool: required (at least {{dataset: ...}})")
    if not cfg.tests:
        problems.append(f"{where}: tests: at least one test set is required")
    names = set()
    for key, ref in refs:
        if not isinstance(ref, dict) or "dataset" not in ref:
            problems.append(f"{where}: {key}.dataset: required")
            continue
        is_test = key.startswith("tests")
        opts = check(lambda ref=ref, key=key, is_test=is_test: build(
            DataOptions, {k: v for k, v in ref.items() if k not in (TEST_KEYS if is_test else DATASET_KEYS)},
            where=f"{where}: {key}"))
        shots = None
        if is_test:
            name = test_name(ref)
            if name in names:
                problems.append(f"{where}: {key}.name: duplicate test name {name!r}")
            names.add(name)
            if ref.get("domain", "in") not in ("in", "out"):
                problems.append(f"{where}: {key}.domain: must be 'in' or 'out'")
            if ref.get("shots") is not None:
                shots = check(lambda ref=ref, key=key: shot_settings(ref, base_dir, f"{where}: {key}"))
                if shots is None:
                    continue
        if opts is None or key == "shots" or str(ref["dataset"]).startswith("hf:"):
            continue
        dataset = check(lambda ref=ref, opts=opts, key=key, shots=shots:
                        _load(ref, opts, base_dir, f"{where}: {key}.dataset", shots=shots))
        if dataset is not None and dataset.task != cfg.task:
            problems.append(f"{where}: {key}.dataset: {ref['dataset']!r} is a {dataset.task} dataset, "
                            f"but task is {cfg.task}")
        elif dataset is not None and shots is not None and not str(shots["shot_source"]).startswith("hf:"):
            check(lambda dataset=dataset, shots=shots, key=key, ref=ref:
                  _check_test_shots(dataset, shots, cfg.task, test_name(ref), f"{where}: {key}.shots"))


def test_name(ref: dict) -> str:
    return str(ref.get("name") or Path(str(ref["dataset"])).stem.replace(":", "-"))


def _resolve_spec(spec: str, base_dir: Path) -> str:
    """Relative dataset paths in a config are relative to the config file, if they exist there."""
    if spec.startswith("hf:") or Path(spec).is_absolute() or Path(spec).exists():
        return spec
    candidate = base_dir / spec
    return str(candidate) if candidate.exists() else spec


def _load(ref: dict, opts, base_dir: Path, where: str, *, shots: dict | None = None):
    """The dataset of a pool or test reference; a test set whose `shots` are carved out of it
    (rait.stages.eval.load_test_set) without them."""
    from rait.data.split import load_with_options
    from rait.stages.eval import EvalConfig, load_test_set

    spec = _resolve_spec(str(ref["dataset"]), base_dir)
    try:
        if shots is None:
            return load_with_options(spec, opts)
        return load_test_set(spec, opts, EvalConfig(**shots))
    except RaitError as exc:
        raise RaitError(f"{where}: {exc}") from None


def _check_test_shots(dataset, shots: dict, task: str, name: str, where: str) -> None:
    """A test entry's own shot source loads, is of the experiment's task, holds enough items for
    its carving and none of the test set's: refused before anything runs."""
    from rait.stages.eval import EvalConfig, load_shots

    try:
        load_shots(EvalConfig(**shots), task, dataset.items, test=name)
    except RaitError as exc:
        raise RaitError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------- stages
@dataclasses.dataclass
class Stage:
    """One step of the plan. `config` is the stage's config object: the fingerprint covers it and
    `run(config)` runs exactly it, so what was fingerprinted is what ran."""

    name: str
    deps: list[str]
    config: Any  # a stage config dataclass, or a dict of them (rehearse: selection + training)
    inputs: dict  # fingerprints of what the stage reads besides its deps (datasets)
    run: Callable[[Any], dict]  # run(config) -> a small summary for the manifest
    outputs: list[Path]


class Run:
    """The run directory, its manifest, and the experiment's stages in order."""

    def __init__(self, cfg: RunConfig, run_dir: Path, config_dir: Path):
        from rait.data.split import DataOptions

        self.cfg, self.dir, self.config_dir = cfg, run_dir, config_dir
        self.layout = run_layout(run_dir)
        self.manifest_path = self.layout["manifest"]
        self.manifest = read_manifest(self.manifest_path)
        self._init_model = None
        self.datasets = {}
        self.test_refs = {test_name(t): t for t in cfg.tests}
        self.test_shots = {name: shot_settings(ref, config_dir, f"tests {name!r}")
                           for name, ref in self.test_refs.items()}
        for key, ref, is_test in [("pool", cfg.pool, False)] + [(test_name(t), t, True) for t in cfg.tests]:
            own = TEST_KEYS if is_test else DATASET_KEYS
            opts = build(DataOptions, {k: v for k, v in ref.items() if k not in own}, where=key)
            self.datasets[key] = _load(ref, opts, config_dir, key, shots=self.test_shots[key] if is_test else None)
        self.stages = self._plan()
        self.fingerprints: dict[str, str] = {}
        for stage in self.stages:
            deps = [self.fingerprints[d] for d in stage.deps]
            self.fingerprints[stage.name] = fingerprint(
                {"stage": stage.name, "config": self._portable(config_record(stage.config)),
                 "inputs": stage.inputs, "deps": deps, "version": __version__, "scoring": SCORING_VERSION})

    def _portable(self, record: Any) -> Any:
        """The record with this run directory's path replaced by a placeholder, so that two run
        directories with the same settings have the same fingerprints (--reuse-from)."""
        import json

        return json.loads(json.dumps(record, default=str).replace(json.dumps(str(self.dir))[1:-1], "$RUN"))

    # -- configuration of each stage -------------------------------------------------------
    def _common(self) -> dict:
        """The initial model's and generation options, which every stage shares."""
        return {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(ModelOptions)}

    def _generation(self) -> dict:
        return {**self._common(), **{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(Generation)}}

    def probe_config(self):
        from rait.stages.probe import ProbeConfig

        section = {**self._generation(), **self._experiment_shots(), **self.cfg.probe}
        return self._with_shots(build(ProbeConfig, section, where="probe"), self.cfg.pool)

    def train_config(self, rehearsal: bool = False):
        from rait.stages.train import TrainConfig

        section = {**self._common(), **self.cfg.train, **(self.cfg.rehearse_train if rehearsal else {})}
        return build(TrainConfig, section, where="rehearse_train" if rehearsal else "train")

    def rehearse_config(self):
        from rait.stages.rehearse import RehearseConfig

        # the rehearsal trains with the final SFT's recipe, so its prompts follow the build's template
        template = self.cfg.build.get("template", self.cfg.template)
        return build(RehearseConfig, {"seed": self.cfg.seed, "template": template, **self.cfg.rehearse},
                     where="rehearse")

    def build_config(self, method: str):
        from rait.stages.build import BuildConfig

        section = {"seed": self.cfg.seed, "template": self.cfg.template, **self.cfg.build, "method": method}
        if method in self.cfg.sizes:
            section["size"] = self.cfg.sizes[method]
        return build(BuildConfig, section, where=f"build ({method})")

    def conflict_config(self, method: str):
        from rait.stages.conflict import ConflictConfig

        section = {k: v for k, v in self.cfg.conflict.items() if k != "enabled"}
        return build(ConflictConfig, {**self._common(), "plot": str(layout.conflict_plot_path(self.dir, method)),
                                      **section, "name": method}, where="conflict")

    def eval_config(self, model_label: str, prompt: str, test: dict):
        """The evaluation of the initial model (model_label init-PROMPT) or of a tuned one (its
        method's name); every evaluation but the baseline's compares against the baseline."""
        from rait.stages.eval import EvalConfig

        tname = test_name(test)
        init = model_label.startswith(f"{INIT}-")
        baseline = None
        if not (init and prompt == self.cfg.baseline_prompt):
            baseline = str(self.eval_path(f"{INIT}-{self.cfg.baseline_prompt}", tname, self.cfg.baseline_prompt))
        model = self.cfg.model if init else str(layout.model_path(self.dir, model_label))
        # a test's own shots (tests[].shots) replace the experiment's: they decide its items too
        section = {**self._generation(), **self._experiment_shots(), **self.cfg.eval, "model": model,
                   "name": model_label, "prompt": prompt if init else self.cfg.eval.get("prompt"),
                   "baseline": baseline, **(self.test_shots.get(tname) or {})}
        ecfg = self._with_shots(build(EvalConfig, section, where="eval"), test)
        if init:
            from rait.prompts import default_shots
            from rait.stages.eval import check_shot_count

            k = ecfg.shots if ecfg.shots is not None else default_shots(self.cfg.task, ecfg.template)
            try:
                check_shot_count(k, ecfg)
            except RaitError as exc:
                raise RaitError(f"tests {tname!r}: {exc}") from None
        return ecfg

    def _experiment_shots(self) -> dict:
        """The experiment's own `shots: {dataset, split}`, as a stage's shot source."""
        if not self.cfg.shots:
            return {}
        keys = {"shot_source": _resolve_spec(str(self.cfg.shots["dataset"]), self.config_dir)}
        if self.cfg.shots.get("split"):
            keys["shot_split"] = self.cfg.shots["split"]
        return keys

    def _with_shots(self, stage_cfg, ref: dict):
        """The one shot-source rule (rait.prompts.with_shot_source), for the stage's dataset."""
        from rait.prompts import with_shot_source

        return with_shot_source(stage_cfg, _resolve_spec(str(ref["dataset"]), self.config_dir), ref.get("split"))

    # -- paths ---------------------------------------------------------------------------------
    def knowledge_path(self) -> Path:
        return self.layout["rehearse_table" if self._needs_flow() else "probe_table"]

    def eval_path(self, model_label: str, test: str, prompt: str) -> Path:
        return layout.eval_path(self.dir, model_label, test, prompt)

    def eval_outputs(self, model_label: str, test: str, prompt: str) -> list[Path]:
        """Per-item rows, then the result (written last); later evaluations pair with the items."""
        result = self.eval_path(model_label, test, prompt)
        return [layout.items_path(result), result]

    def _needs_flow(self) -> bool:
        from rait.methods import method_uses_flow

        return any(method_uses_flow(m) for m in self.cfg.methods)

    # -- the plan ------------------------------------------------------------------------------
    def _plan(self) -> list[Stage]:
        """Every stage with its config, built here once; all config problems are reported at once."""
        problems: list[str] = []

        def made(fn: Callable[[], Any]) -> Any:
            return collecting(problems, fn)

        cfg, d = self.cfg, self.dir
        pool = self.datasets["pool"]
        stages = [Stage("probe", [], made(self.probe_config), _data_inputs(pool), self._run_probe,
                        [self.layout["probe_dir"]])]
        upstream = "probe"
        if self._needs_flow():
            rehearsal = {"rehearse": made(self.rehearse_config), "train": made(lambda: self.train_config(True))}
            stages.append(Stage("rehearse", ["probe"], rehearsal, {}, self._run_rehearse, [self.layout["rehearse_dir"]]))
            upstream = "rehearse"
        for test in cfg.tests:
            tname = test_name(test)
            for prompt in cfg.init_prompts:
                label = f"{INIT}-{prompt}"
                deps = [] if prompt == cfg.baseline_prompt else [f"eval/{INIT}-{cfg.baseline_prompt}/{tname}"]
                stages.append(Stage(f"eval/{label}/{tname}", deps, made(lambda: self.eval_config(label, prompt, test)),
                                    _data_inputs(self.datasets[tname]),
                                    lambda ecfg, t=tname, p=prompt, m=label: self._run_eval(ecfg, m, t, p),
                                    self.eval_outputs(label, tname, prompt)))
        for method in cfg.methods:
            stages.append(Stage(f"build/{method}", [upstream], made(lambda: self.build_config(method)), {},
                                lambda bcfg, m=method: self._run_build(bcfg, m),
                                [layout.rait_set_path(d, method), meta_path(layout.rait_set_path(d, method))]))
            if cfg.conflict.get("enabled", True):
                stages.append(Stage(f"conflict/{method}", [f"build/{method}"], made(lambda: self.conflict_config(method)),
                                    {}, lambda ccfg, m=method: self._run_conflict(ccfg, m),
                                    [layout.conflict_path(d, method)]))
            stages.append(Stage(f"train/{method}", [f"build/{method}"], made(self.train_config), {},
                                lambda tcfg, m=method: self._run_train(tcfg, m),
                                [layout.model_path(d, method)]))
            for test in cfg.tests:
                tname = test_name(test)
                stages.append(Stage(f"eval/{method}/{tname}",
                                    [f"train/{method}", f"eval/{INIT}-{cfg.baseline_prompt}/{tname}"],
                                    made(lambda: self.eval_config(method, "tuned", test)),
                                    _data_inputs(self.datasets[tname]),
                                    lambda ecfg, m=method, t=tname: self._run_eval(ecfg, m, t, "tuned"),
                                    self.eval_outputs(method, tname, "tuned")))
        stages.append(Stage("report", [s.name for s in stages], None, {}, self._run_report, [self.layout["report_dir"]]))
        if problems:
            raise RaitError("\n".join(dict.fromkeys(problems)))
        return stages

    # -- stage bodies: each calls its stage's entry function with the planned config ----------
    def init_model(self):
        """The initial model, loaded once and shared by probe, conflict and its evaluations."""
        if self._init_model is None:
            from rait.models import load_model_from

            self._init_model = load_model_from(self.cfg)
        return self._init_model

    def _run_probe(self, pcfg) -> dict:
        from rait.stages.probe import probe

        pool = self.datasets["pool"]
        rows = probe(pcfg, pool.items, self.layout["probe_table"],
                     dataset_meta=_dataset_meta(pool), loaded=self._loaded_if_hf())
        return {"rows": len(rows), "mean_correctness": mean(r["correctness"] for r in rows),
                "mean_certainty": mean(r["certainty"] for r in rows)}

    def _run_rehearse(self, rehearsal: dict) -> dict:
        from rait.knowledge import flow_counts, read_table
        from rait.stages.rehearse import rehearse

        path = rehearse(self.datasets["pool"].items, self.layout["probe_table"], self.layout["rehearse_dir"],
                        rehearsal["rehearse"], rehearsal["train"])
        flows = [row["flow"] for row in read_table(path)]
        counts = flow_counts(flows)
        return {"rows": len(flows), "mean_flow": mean(flows), "rose": counts["rose"], "fell": counts["fell"]}

    def _run_build(self, bcfg, method: str) -> dict:
        from rait.stages.build import build as build_set

        meta = build_set(bcfg, self.knowledge_path(), layout.rait_set_path(self.dir, method))
        counts = meta["counts"]
        return {"rows": counts["vanilla"] + counts["idk"], "vanilla": counts["vanilla"], "idk": counts["idk"]}

    def _run_conflict(self, ccfg, method: str) -> dict:
        from rait.stages.conflict import conflict

        result = conflict(ccfg, layout.rait_set_path(self.dir, method), layout.conflict_path(self.dir, method),
                          loaded=self.init_model())
        by_threshold = result.get("crss") or {}
        return {f"crss@{t}": (v or {}).get("crss") for t, v in by_threshold.items()
                if str(t) in ("0.95", "0.99")}

    def _run_train(self, tcfg, method: str) -> dict:
        from rait.models import read_train_info
        from rait.stages.train import train_sft

        out = train_sft(layout.rait_set_path(self.dir, method), layout.model_path(self.dir, method), tcfg)
        info = read_train_info(str(out)) or {}
        return {"final_loss": info.get("final_loss")}

    def _run_eval(self, ecfg, model_label: str, test: str, prompt: str) -> dict:
        from rait.stages.eval import evaluate

        from rait.stages.eval import carved_out_meta

        ds, ref = self.datasets[test], self.test_refs[test]
        loaded = self._loaded_if_hf() if model_label.startswith(f"{INIT}-") else None
        meta = {**_dataset_meta(ds),
                **carved_out_meta(ecfg, _resolve_spec(str(ref["dataset"]), self.config_dir), ref.get("split"))}
        result = evaluate(ds.items, self.eval_path(model_label, test, prompt), ecfg,
                          dataset_meta=meta, loaded=loaded)
        return {k: result.get(k) for k in ("n", "Pc", "Pw", "Pr", "THS")}

    def _run_report(self, _config=None) -> dict:
        from rait.stages.report import write_report

        paths = write_report(self.dir)
        return {"html": str(paths.get("html")) if isinstance(paths, dict) else str(paths)}

    def _loaded_if_hf(self):
        return self.init_model() if self.cfg.backend == "hf" else None

    # -- bookkeeping ---------------------------------------------------------------------------
    def status(self, stage: Stage) -> str:
        entry = self.manifest["stages"].get(stage.name)
        if entry is None:
            return "new"
        if entry.get("fingerprint") != self.fingerprints[stage.name]:
            return "changed"
        if entry.get("status") == "done" and all(p.exists() for p in stage.outputs):
            return "cached"
        return "resume"

    def save_manifest(self) -> None:
        import platform

        import rait

        self.manifest.update({
            "name": self.cfg.name, "rait": rait.__version__, "python": platform.python_version(),
            "config": dataclasses.asdict(self.cfg), "versions": package_versions(
                ("torch", "transformers", "peft", "trl", "accelerate", "sentence-transformers")),
        })
        write_json_atomic(self.manifest_path, self.manifest)

    def reuse_from(self, source: Path) -> list[str]:
        """Adopt the finished stages of another run directory whose fingerprints match this plan
        (e.g. an ablation that shares the probe and rehearsal of the main run). Outputs are hard
        linked where possible, else copied, each through a temporary name."""
        if not run_layout(source)["manifest"].exists():
            raise RaitError(f"--reuse-from {source}: no manifest.json there (not a run directory)")
        if source.resolve() == self.dir.resolve():
            return []
        theirs = read_manifest(run_layout(source)["manifest"])["stages"]
        adopted = []
        for stage in self.stages:
            entry = theirs.get(stage.name)
            if (self.status(stage) == "cached" or not entry or entry.get("status") != "done"
                    or entry.get("fingerprint") != self.fingerprints[stage.name]):
                continue
            sources = [source / path.relative_to(self.dir) for path in stage.outputs]
            if not all(path.exists() for path in sources):
                continue
            for src, dst in zip(sources, stage.outputs):
                _link_or_copy(src, dst)
            self.manifest["stages"][stage.name] = {**entry, "reused_from": str(source)}
            adopted.append(stage.name)
        if adopted:
            self.save_manifest()
        return adopted

    def execute(self, stage: Stage) -> None:
        state = self.status(stage)
        if state == "cached":
            return
        if state == "changed":  # stale outputs of another configuration: never mix them
            for path in stage.outputs:
                remove(path)
        entry = {"status": "running", "fingerprint": self.fingerprints[stage.name], "seed": self.cfg.seed,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed": state == "resume"}
        self.manifest["stages"][stage.name] = entry
        self.save_manifest()
        t0 = time.time()
        summary = stage.run(stage.config)
        entry.update({"status": "done", "seconds": round(time.time() - t0, 1), "summary": summary,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "outputs": [str(p.relative_to(self.dir)) for p in stage.outputs]})
        self.save_manifest()


def config_record(config: Any) -> Any:
    """A stage config (or a dict of them) as JSON-able data for its fingerprint."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return {key: config_record(value) for key, value in config.items()}
    return config


def read_manifest(path: Path) -> dict:
    """A run directory's manifest ({"stages": {}} when there is none yet); a damaged one is an
    error that says how to recover, never a traceback."""
    if not path.exists():
        return {"stages": {}}
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
        raise RaitError(f"{path}: not a rait run manifest (no 'stages' mapping); remove it to re-run "
                        "every stage, or choose another --run-dir")
    return manifest


def _data_inputs(ds) -> dict:
    return {"data": ds.fingerprint, "ids": fingerprint([item["id"] for item in ds.items])}


def _link_or_copy(src: Path, dst: Path) -> None:
    """Place src (file or tree) at dst; a half-done copy is never left under dst's name."""
    def place(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system, or links not supported
            shutil.copy2(a, b)

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".reuse-tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    if src.is_dir():
        shutil.copytree(src, tmp, copy_function=place)
    else:
        place(str(src), str(tmp))
    if dst.is_dir():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _dataset_meta(ds) -> dict:
    return {"name": ds.name, "source": ds.source, "fingerprint": ds.fingerprint, "n": len(ds.items)}


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("config", help="experiment YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="set a key of the YAML for this run, e.g. train.epochs=1 seed=1 "
                             "tests.0.limit=100 (VALUE is YAML; the file is not changed)")
    parser.add_argument("--seed", type=int, help="the experiment's seed (the same as seed=N)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved experiment (the YAML with the overrides, every default "
                             "filled in) and stop")
    parser.add_argument("--run-dir", help="run directory (default: runs/NAME)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is cached) and stop")
    parser.add_argument("--only", help="run only stages whose name starts with this prefix (and what they need)")
    parser.add_argument("--reuse-from", metavar="RUN_DIR",
                        help="adopt finished stages of another run directory whose settings match "
                             "(e.g. an ablation reusing the main run's probe and rehearsal)")


def run_overrides(args) -> list[str]:
    return [*(args.overrides or []), *([f"seed={args.seed}"] if args.seed is not None else [])]


def run(args) -> int:
    import yaml

    overrides = run_overrides(args)
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    the_run = Run(cfg, run_dir, Path(args.config).parent)
    the_run.manifest["overrides"] = overrides
    if args.reuse_from and not args.dry_run:
        adopted = the_run.reuse_from(Path(args.reuse_from))
        print(f"rait run: reused {len(adopted)} finished stages of {args.reuse_from}"
              + (f" ({', '.join(adopted)})" if adopted else ""), file=sys.stderr)
    stages = the_run.stages
    if args.only:
        stages = _with_deps(stages, args.only)
    states = {s.name: the_run.status(s) for s in stages}
    print(f"rait run: {cfg.name} -> {run_dir}  ({len(stages)} stages, "
          f"{sum(v == 'cached' for v in states.values())} cached)", file=sys.stderr)
    if overrides:
        print(f"  overrides: {' '.join(overrides)}", file=sys.stderr)
    for stage in stages:
        print(f"  {states[stage.name]:>8}  {stage.name}", file=sys.stderr)
    if args.dry_run:
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    text = Path(args.config).read_text(encoding="utf-8")
    if overrides:  # the run's copy is what ran: the file with the overrides applied
        text = (f"# {args.config} with the overrides {' '.join(overrides)}\n"
                + yaml.safe_dump(resolved_yaml(Path(args.config), overrides), sort_keys=False, allow_unicode=True))
    write_text_atomic(run_layout(run_dir)["config"], text)
    t0 = time.time()
    for stage in stages:
        if states[stage.name] != "cached":
            print(f"\n=== {stage.name} ===", file=sys.stderr)
        the_run.execute(stage)
    _print_summary(the_run, time.time() - t0)
    return 0


def _with_deps(stages: list[Stage], prefix: str) -> list[Stage]:
    by_name = {s.name: s for s in stages}
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for dep in by_name[name].deps:
                add(dep)

    for s in stages:
        if s.name.startswith(prefix) and s.name != "report" or s.name == prefix:
            add(s.name)
    if not wanted:
        raise RaitError(f"--only {prefix!r}: no stage name starts with it")
    return [s for s in stages if s.name in wanted]


def _print_summary(the_run: Run, seconds: float) -> None:
    stages = the_run.manifest["stages"]
    print(f"\nrait run: {the_run.cfg.name} finished in {seconds:.0f} s ({the_run.dir})")
    print(f"{'stage':<32} {'seconds':>8}  summary")
    for name, entry in stages.items():
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in (entry.get("summary") or {}).items())
        print(f"{name:<32} {entry.get('seconds', 0):>8}  {summary}")
    report = the_run.layout["report_dir"] / "report.html"
    if report.exists():
        print(f"\nreport: {report}")


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
