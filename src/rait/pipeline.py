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
from rait.config import build, option, unknown_key_error
from rait.errors import RaitError
from rait.io import fingerprint, package_versions, read_json, write_json_atomic
from rait.models import ModelOptions, model_option_problems

ALL_METHODS = ["vanilla", "cor", "corcer", "corflow", "craft"]
INIT = "init"  # model label of the initial (untuned) model


# ---------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class RunConfig(ModelOptions):
    """Top level of an experiment YAML. Nested sections are validated by their stage's dataclass.
    The model options (ModelOptions: model, dtype, device, revision, trust_remote_code,
    chat_template) are the initial model's and apply to every stage."""

    name: str = option("experiment", "run name (the default run directory is runs/NAME)")
    task: str = option("oeqa", "oeqa or mcqa; every dataset must be of this task", choices=["oeqa", "mcqa"])
    backend: str = option("hf", "generation backend for probing and evaluation", choices=["hf", "vllm"])
    template: str = option("plain", "how every stage puts a question to the model: plain text (base models: "
                                    "k-shot for the initial model) or the chat template (instruct models: "
                                    "zero-shot for the initial model's evaluations, as in the paper); a "
                                    "stage's own `template` key overrides it", choices=["plain", "chat"])
    vllm: dict = option(default_factory=dict, help="vLLM engine options for probing and evaluation "
                                                     "(rait.backends.vllm.VllmOptions)")
    seed: int = option(0, "seed for every stage")
    pool: dict = option(default_factory=dict, help="the pool: {dataset, split, part, test_size, split_seed, limit, ...}")
    shots: dict | None = option(None, "few-shot source: {dataset, split}; default: the pool's own dev/shots split or built-in shots")
    probe: dict = option(default_factory=dict, help="rait probe settings")
    rehearse: dict = option(default_factory=dict, help="rait rehearse selection settings")
    rehearse_train: dict = option(default_factory=dict, help="training overrides for the rehearsal model")
    methods: list = option(default_factory=lambda: list(ALL_METHODS), help="methods to build and train")
    build: dict = option(default_factory=dict, help="rait build settings shared by every method")
    sizes: dict = option(default_factory=dict, help="per-method RAIT set size overrides {method: N}")
    train: dict = option(default_factory=dict, help="training recipe, the same for every method")
    tests: list = option(default_factory=list, help="test sets: [{name, dataset, domain: in|out, ...}]")
    eval: dict = option(default_factory=dict, help="rait eval settings")
    init_prompts: list = option(default_factory=lambda: ["basic", "refuse"], help="prompts for the initial model")
    baseline_prompt: str = option("basic", "the initial model's prompt that THS is measured against")
    conflict: dict = option(default_factory=lambda: {"enabled": True}, help="static-conflict diagnostic")


DATASET_KEYS = ("dataset", "name", "domain")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML experiment; report every problem at once (with key paths)."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise RaitError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise RaitError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise RaitError(f"{path}: expected a mapping at the top level")
    cfg = build(RunConfig, raw, where=str(path))
    problems = validate(cfg, base_dir=path.parent, where=str(path))
    if problems:
        raise RaitError("\n".join(problems))
    return cfg


def validate(cfg: RunConfig, *, base_dir: Path, where: str) -> list[str]:
    """Check every section against its stage's dataclass before any model loads."""
    from rait.data.split import DataOptions
    from rait.evaluation import EvalConfig
    from rait.knowledge.probe import ProbeConfig
    from rait.knowledge.rehearse import RehearseConfig
    from rait.methods import BuildConfig, method_names
    from rait.training import TrainConfig

    problems: list[str] = model_option_problems(cfg, where)

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RaitError as exc:
            problems.extend(str(exc).splitlines())
            return None

    check(lambda: build(ProbeConfig, cfg.probe, where=f"{where}: probe"))
    check(lambda: build(RehearseConfig, cfg.rehearse, where=f"{where}: rehearse"))
    check(lambda: build(TrainConfig, {**cfg.train, **cfg.rehearse_train}, where=f"{where}: rehearse_train"))
    check(lambda: build(BuildConfig, cfg.build, where=f"{where}: build"))
    check(lambda: build(TrainConfig, cfg.train, where=f"{where}: train"))
    check(lambda: build(EvalConfig, cfg.eval, where=f"{where}: eval"))
    from rait.backends import vllm_section

    check(lambda: vllm_section(None, cfg.vllm, where=where))
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
        opts = check(lambda ref=ref, key=key: build(
            DataOptions, {k: v for k, v in ref.items() if k not in DATASET_KEYS}, where=f"{where}: {key}"))
        if key.startswith("tests"):
            name = test_name(ref)
            if name in names:
                problems.append(f"{where}: {key}.name: duplicate test name {name!r}")
            names.add(name)
            if ref.get("domain", "in") not in ("in", "out"):
                problems.append(f"{where}: {key}.domain: must be 'in' or 'out'")
        # hub datasets are checked when the run loads them: validation never touches the network
        if opts is None or key == "shots" or str(ref["dataset"]).startswith("hf:"):
            continue
        dataset = check(lambda ref=ref, opts=opts, key=key: _load(ref, opts, base_dir, f"{where}: {key}.dataset"))
        if dataset is not None and dataset.task != cfg.task:
            problems.append(f"{where}: {key}.dataset: {ref['dataset']!r} is a {dataset.task} dataset, "
                            f"but task is {cfg.task}")
    return problems


def test_name(ref: dict) -> str:
    return str(ref.get("name") or Path(str(ref["dataset"])).stem.replace(":", "-"))


def _resolve_spec(spec: str, base_dir: Path) -> str:
    """Relative dataset paths in a config are relative to the config file, if they exist there."""
    if spec.startswith("hf:") or Path(spec).is_absolute() or Path(spec).exists():
        return spec
    candidate = base_dir / spec
    return str(candidate) if candidate.exists() else spec


def _load(ref: dict, opts, base_dir: Path, where: str):
    from rait.data.split import load_with_options

    try:
        return load_with_options(_resolve_spec(str(ref["dataset"]), base_dir), opts)
    except RaitError as exc:
        raise RaitError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------- stages
@dataclasses.dataclass
class Stage:
    name: str
    deps: list[str]
    section: dict  # what the fingerprint covers besides deps
    run: Callable[[], dict]  # returns a small summary for the manifest
    outputs: list[Path]


class Run:
    """The run directory, its manifest, and the experiment's stages in order."""

    def __init__(self, cfg: RunConfig, run_dir: Path, config_dir: Path):
        from rait.data.split import DataOptions

        self.cfg, self.dir, self.config_dir = cfg, run_dir, config_dir
        self.manifest_path = run_dir / "manifest.json"
        self.manifest = read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}
        self._init_model = None
        self.datasets = {}
        self.test_refs = {test_name(t): t for t in cfg.tests}
        for key, ref in [("pool", cfg.pool)] + [(test_name(t), t) for t in cfg.tests]:
            opts = build(DataOptions, {k: v for k, v in ref.items() if k not in DATASET_KEYS}, where=key)
            self.datasets[key] = _load(ref, opts, config_dir, key)
        self.stages = self._plan()
        self.fingerprints: dict[str, str] = {}
        for stage in self.stages:
            deps = [self.fingerprints[d] for d in stage.deps]
            self.fingerprints[stage.name] = fingerprint(
                {"stage": stage.name, "section": stage.section, "deps": deps, "version": __version__})

    # -- configuration of each stage -------------------------------------------------------
    def _common(self) -> dict:
        """The initial model's options and the seed, which every stage shares."""
        keys = [f.name for f in dataclasses.fields(ModelOptions)] + ["seed"]
        return {key: getattr(self.cfg, key) for key in keys}

    def probe_config(self):
        from rait.knowledge.probe import ProbeConfig

        section = {**self._common(), "backend": self.cfg.backend, "template": self.cfg.template,
                   "vllm": self.cfg.vllm, **self.cfg.probe}
        section.update(self._shot_keys(section, self.cfg.pool))
        return build(ProbeConfig, section, where="probe")

    def train_config(self, rehearsal: bool = False):
        from rait.training import TrainConfig

        section = {**self._common(), **self.cfg.train, **(self.cfg.rehearse_train if rehearsal else {})}
        return build(TrainConfig, section, where="rehearse_train" if rehearsal else "train")

    def rehearse_config(self):
        from rait.knowledge.rehearse import RehearseConfig

        # the rehearsal trains with the final SFT's recipe, so its prompts follow the build's template
        template = self.cfg.build.get("template", self.cfg.template)
        return build(RehearseConfig, {"seed": self.cfg.seed, "template": template, **self.cfg.rehearse},
                     where="rehearse")

    def build_config(self, method: str):
        from rait.methods import BuildConfig

        section = {"seed": self.cfg.seed, "template": self.cfg.template, **self.cfg.build, "method": method}
        if method in self.cfg.sizes:
            section["size"] = self.cfg.sizes[method]
        return build(BuildConfig, section, where=f"build ({method})")

    def eval_config(self, model: str | None, name: str, prompt: str | None, test: dict):
        from rait.evaluation import EvalConfig

        section = {**self._common(), "backend": self.cfg.backend, "template": self.cfg.template,
                   "vllm": self.cfg.vllm, **self.cfg.eval, "model": model, "name": name, "prompt": prompt}
        section.update(self._shot_keys(section, test))
        return build(EvalConfig, section, where="eval")

    def _shot_keys(self, section: dict, ref: dict) -> dict:
        """Where few-shot examples come from: the stage's own section, else the experiment's
        `shots`, else the dataset's own shot split (MMLU dev, demo shots), else built-in shots."""
        from rait.data.loaders import default_shot_source

        if section.get("shot_source"):
            return {}
        if self.cfg.shots:
            keys = {"shot_source": _resolve_spec(str(self.cfg.shots["dataset"]), self.config_dir)}
            if self.cfg.shots.get("split"):
                keys["shot_split"] = self.cfg.shots["split"]
            return keys
        found = default_shot_source(_resolve_spec(str(ref["dataset"]), self.config_dir), ref.get("split"))
        return {"shot_source": found[0], "shot_split": found[1]} if found else {}

    # -- paths ---------------------------------------------------------------------------------
    def knowledge_path(self) -> Path:
        return self.dir / "rehearse" / "knowledge.jsonl" if self._needs_flow() else self.dir / "probe" / "knowledge.jsonl"

    def eval_path(self, model_label: str, test: str, prompt: str) -> Path:
        return self.dir / "eval" / f"{model_label}__{test}__{prompt}.json"

    def eval_outputs(self, model_label: str, test: str, prompt: str) -> list[Path]:
        """Per-item rows, then the result (written last); later evaluations pair with the items."""
        from rait.evaluation import items_path

        result = self.eval_path(model_label, test, prompt)
        return [items_path(result), result]

    def _needs_flow(self) -> bool:
        from rait.methods import method_uses_flow

        return any(method_uses_flow(m) for m in self.cfg.methods)

    # -- the plan ------------------------------------------------------------------------------
    def _plan(self) -> list[Stage]:
        cfg, d = self.cfg, self.dir
        pool = self.datasets["pool"]
        stages = [Stage("probe", [], {"probe": dataclasses.asdict(self.probe_config()), "pool": pool.fingerprint,
                                      "pool_ids": fingerprint([i["id"] for i in pool.items])},
                        self._run_probe, [d / "probe"])]
        upstream = "probe"
        if self._needs_flow():
            stages.append(Stage("rehearse", ["probe"], {"rehearse": dataclasses.asdict(self.rehearse_config()),
                                                        "train": dataclasses.asdict(self.train_config(True))},
                                self._run_rehearse, [d / "rehearse"]))
            upstream = "rehearse"
        baseline_tests = []
        for test in cfg.tests:
            tname = test_name(test)
            ds = self.datasets[tname]
            for prompt in cfg.init_prompts:
                name = f"eval/{INIT}-{prompt}/{tname}"
                ecfg = self.eval_config(cfg.model, f"{INIT}-{prompt}", prompt, test)
                deps = [] if prompt == cfg.baseline_prompt else [f"eval/{INIT}-{cfg.baseline_prompt}/{tname}"]
                stages.append(Stage(name, deps, {"eval": dataclasses.asdict(ecfg), "data": ds.fingerprint,
                                                 "ids": fingerprint([i["id"] for i in ds.items])},
                                    lambda t=tname, p=prompt: self._run_eval(INIT, t, p),
                                    self.eval_outputs(f"{INIT}-{prompt}", tname, prompt)))
            baseline_tests.append((tname, test))
        for method in cfg.methods:
            stages.append(Stage(f"build/{method}", [upstream], {"build": dataclasses.asdict(self.build_config(method))},
                                lambda m=method: self._run_build(m),
                                [d / "build" / f"{method}.jsonl", d / "build" / f"{method}.jsonl.meta.json"]))
            if cfg.conflict.get("enabled", True):
                stages.append(Stage(f"conflict/{method}", [f"build/{method}"], {"conflict": cfg.conflict},
                                    lambda m=method: self._run_conflict(m), [d / "conflict" / f"{method}.json"]))
            stages.append(Stage(f"train/{method}", [f"build/{method}"], {"train": dataclasses.asdict(self.train_config())},
                                lambda m=method: self._run_train(m), [d / "train" / method]))
            for tname, test in baseline_tests:
                ds = self.datasets[tname]
                ecfg = self.eval_config(str(d / "train" / method), method, cfg.eval.get("prompt"), test)
                stages.append(Stage(f"eval/{method}/{tname}",
                                    [f"train/{method}", f"eval/{INIT}-{cfg.baseline_prompt}/{tname}"],
                                    {"eval": dataclasses.asdict(ecfg), "data": ds.fingerprint},
                                    lambda m=method, t=tname: self._run_eval(m, t, "tuned"),
                                    self.eval_outputs(method, tname, "tuned")))
        report_deps = [s.name for s in stages]
        stages.append(Stage("report", report_deps, {}, self._run_report, [d / "report"]))
        return stages

    # -- stage bodies --------------------------------------------------------------------------
    def init_model(self):
        """The initial model, loaded once and shared by probe, conflict and its evaluations."""
        if self._init_model is None:
            from rait.models import load_model_from

            self._init_model = load_model_from(self.cfg)
        return self._init_model

    def _run_probe(self) -> dict:
        from rait.knowledge.probe import probe_items

        pool = self.datasets["pool"]
        rows = probe_items(pool.items, self.dir / "probe" / "knowledge.jsonl", self.probe_config(),
                           dataset_meta=_dataset_meta(pool), loaded=self._loaded_if_hf())
        return {"rows": len(rows), "mean_correctness": _mean(r["correctness"] for r in rows),
                "mean_certainty": _mean(r["certainty"] for r in rows)}

    def _run_rehearse(self) -> dict:
        from rait.io import read_jsonl
        from rait.knowledge.rehearse import rehearse

        path = rehearse(self.datasets["pool"].items, self.dir / "probe" / "knowledge.jsonl", self.dir / "rehearse",
                        self.rehearse_config(), self.train_config(rehearsal=True))
        flows = [row["flow"] for _, row in read_jsonl(path)]
        return {"rows": len(flows), "mean_flow": _mean(flows), "rose": sum(f > 0 for f in flows),
                "fell": sum(f < 0 for f in flows)}

    def _run_build(self, method: str) -> dict:
        from rait.io import read_jsonl
        from rait.methods import build_rait_set, write_rait_set

        knowledge = self.knowledge_path()
        table = [row for _, row in read_jsonl(knowledge)]
        bcfg = self.build_config(method)
        rows, summary = build_rait_set(table, bcfg)
        write_rait_set(rows, self.dir / "build" / f"{method}.jsonl", bcfg,
                       {"knowledge": str(knowledge), "summary": summary})
        return {"rows": len(rows), "vanilla": sum(r["label"] == "vanilla" for r in rows),
                "idk": sum(r["label"] == "idk" for r in rows)}

    def _run_conflict(self, method: str) -> dict:
        from rait.conflict import ConflictConfig, conflict_diagnostic, read_rait_set

        rows = read_rait_set(self.dir / "build" / f"{method}.jsonl")
        section = {k: v for k, v in self.cfg.conflict.items() if k != "enabled"}
        ccfg = build(ConflictConfig, {**self._common(), "plot": str(self.dir / "conflict" / f"{method}.png"),
                                      **section, "name": method}, where="conflict")
        result = conflict_diagnostic(rows, self.dir / "conflict" / f"{method}.json", ccfg,
                                     loaded=self.init_model())
        by_threshold = result.get("crss") or {}
        return {f"crss@{t}": (v or {}).get("crss") for t, v in by_threshold.items()
                if str(t) in ("0.95", "0.99")}

    def _run_train(self, method: str) -> dict:
        from rait.models import read_train_info
        from rait.training import train_sft

        out = train_sft(self.dir / "build" / f"{method}.jsonl", self.dir / "train" / method, self.train_config())
        info = read_train_info(str(out)) or {}
        return {"final_loss": info.get("final_loss")}

    def _run_eval(self, model_label: str, test: str, prompt: str) -> dict:
        from rait.evaluation import evaluate

        ds = self.datasets[test]
        baseline = None
        if model_label != INIT or prompt != self.cfg.baseline_prompt:
            baseline = str(self.eval_path(f"{INIT}-{self.cfg.baseline_prompt}", test, self.cfg.baseline_prompt))
        if model_label == INIT:
            ecfg = self.eval_config(self.cfg.model, f"{INIT}-{prompt}", prompt, self.test_refs[test])
            out = self.eval_path(f"{INIT}-{prompt}", test, prompt)
            loaded = self._loaded_if_hf()
        else:
            ecfg = self.eval_config(str(self.dir / "train" / model_label), model_label,
                                    self.cfg.eval.get("prompt"), self.test_refs[test])
            out = self.eval_path(model_label, test, prompt)
            loaded = None
        ecfg = dataclasses.replace(ecfg, baseline=baseline)
        result = evaluate(ds.items, out, ecfg, dataset_meta=_dataset_meta(ds), loaded=loaded)
        return {k: result.get(k) for k in ("n", "Pc", "Pw", "Pr", "THS")}

    def _run_report(self) -> dict:
        from rait.report import write_report

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
        if not (source / "manifest.json").exists():
            raise RaitError(f"--reuse-from {source}: no manifest.json there (not a run directory)")
        if source.resolve() == self.dir.resolve():
            return []
        theirs = read_json(source / "manifest.json").get("stages", {})
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
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        entry = {"status": "running", "fingerprint": self.fingerprints[stage.name], "seed": self.cfg.seed,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed": state == "resume"}
        self.manifest["stages"][stage.name] = entry
        self.save_manifest()
        t0 = time.time()
        summary = stage.run()
        entry.update({"status": "done", "seconds": round(time.time() - t0, 1), "summary": summary,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "outputs": [str(p.relative_to(self.dir)) for p in stage.outputs]})
        self.save_manifest()


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


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("config", help="experiment YAML (see configs/)")
    parser.add_argument("--run-dir", help="run directory (default: runs/NAME)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is cached) and stop")
    parser.add_argument("--only", help="run only stages whose name starts with this prefix (and what they need)")
    parser.add_argument("--reuse-from", metavar="RUN_DIR",
                        help="adopt finished stages of another run directory whose settings match "
                             "(e.g. an ablation reusing the main run's probe and rehearsal)")


def run(args) -> int:
    cfg = load_config(args.config)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    the_run = Run(cfg, run_dir, Path(args.config).parent)
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
    for stage in stages:
        print(f"  {states[stage.name]:>8}  {stage.name}", file=sys.stderr)
    if args.dry_run:
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(Path(args.config).read_text(encoding="utf-8"), encoding="utf-8")
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
    report = the_run.dir / "report" / "report.html"
    if report.exists():
        print(f"\nreport: {report}")


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
