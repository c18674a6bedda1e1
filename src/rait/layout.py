"""The layout of a run directory (written by `rait run`, read by `rait report`): the one place
that knows where each stage's output lives.

    manifest.json                 what ran, with which settings
    config.yaml                   the experiment as given
    probe/knowledge.jsonl         the pool's knowledge table (+ .meta.json)
    rehearse/knowledge.jsonl      the same with the knowledge flow (+ .meta.json)
    build/<method>.jsonl          RAIT sets (+ .meta.json)
    conflict/<method>.json        CRSS results (+ <method>.png)
    train/<method>/               fine-tuned models
    eval/<model>__<test>__<prompt>.json   eval results (+ .items.jsonl)
    report/                       report.md, report.html, figures/

Run directories made before this module existed have the same layout, so they still read.
"""

from __future__ import annotations

from pathlib import Path


def run_layout(run_dir: str | Path) -> dict[str, Path]:
    """Paths of a run directory's stage outputs."""
    run_dir = Path(run_dir)
    return {
        "manifest": run_dir / "manifest.json",
        "config": run_dir / "config.yaml",
        "probe_dir": run_dir / "probe",
        "probe_table": run_dir / "probe" / "knowledge.jsonl",
        "rehearse_dir": run_dir / "rehearse",
        "rehearse_table": run_dir / "rehearse" / "knowledge.jsonl",
        "build_dir": run_dir / "build",
        "conflict_dir": run_dir / "conflict",
        "train_dir": run_dir / "train",
        "eval_dir": run_dir / "eval",
        "report_dir": run_dir / "report",
    }


def rait_set_path(run_dir: str | Path, method: str) -> Path:
    return run_layout(run_dir)["build_dir"] / f"{method}.jsonl"


def conflict_path(run_dir: str | Path, method: str) -> Path:
    return run_layout(run_dir)["conflict_dir"] / f"{method}.json"


def conflict_plot_path(run_dir: str | Path, method: str) -> Path:
    return run_layout(run_dir)["conflict_dir"] / f"{method}.png"


def model_path(run_dir: str | Path, method: str) -> Path:
    return run_layout(run_dir)["train_dir"] / method


def eval_path(run_dir: str | Path, model_label: str, test: str, prompt: str) -> Path:
    return run_layout(run_dir)["eval_dir"] / f"{model_label}__{test}__{prompt}.json"


def items_path(result: str | Path) -> Path:
    """The per-item rows beside an eval result: FILE.items.jsonl for FILE.json (read by later
    evaluations for paired THS intervals, and by the report)."""
    result = Path(result)
    if result.suffix != ".json":
        return result.with_name(result.name + ".items.jsonl")
    return result.with_suffix(".items.jsonl")
