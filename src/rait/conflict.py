"""`rait conflict`: the paper's static-conflict diagnostic of a RAIT set (Zhu et al. 2025, §3).

Each training prompt is represented by the model's last-layer hidden state, mean-pooled over the
prompt's tokens (a chat set's prompt is rendered by the model's chat template, the ids it trains
on). Two samples are "similar" when the cosine similarity of their representations
exceeds a threshold; the Conflict Rate of Similar Samples (CRSS) is the share of similar
pairs whose labels differ (one vanilla, one IdK). A high CRSS means near-identical inputs are
taught opposite behaviours — the static conflict CRaFT's certainty ranking reduces.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from rait import config
from rait.config import option
from rait.errors import RaitError, input_error
from rait.io import fingerprint, read_json, read_jsonl, write_json_atomic
from rait.models import ModelOptions, model_option_problems

LABELS = ("vanilla", "idk")


@dataclasses.dataclass
class ConflictConfig(ModelOptions):
    """Settings of `rait conflict`; `model` is the model whose representations are compared (the
    initial model)."""

    name: str | None = option(None, "display name of the RAIT set (default: its file name)")
    batch_size: int = option(8, "prompts per forward pass")
    thresholds: list[float] = option(default_factory=lambda: [0.95, 0.96, 0.97, 0.98, 0.99],
                                     help="comma-separated cosine-similarity thresholds")
    plot: str | None = option(None, "write a 2-D projection of the representations to this PNG")
    projection: str = option("pca", "projection for --plot (t-SNE needs scikit-learn)",
                             choices=["pca", "tsne"])
    seed: int = option(0, "seed of the t-SNE projection")
    overwrite: bool = option(False, "recompute even if a complete result with the same settings exists")


def add_arguments(parser) -> None:
    parser.add_argument("rait_set", metavar="RAIT_SET", help="RAIT set (.jsonl with prompt + label)")
    parser.add_argument("--out", required=True, help="result file (.json)")
    config.add_arguments(parser, ConflictConfig)


def run(args) -> int:
    cfg = config.build(ConflictConfig, None, args, where="conflict")
    if cfg.name is None:
        cfg.name = Path(args.rait_set).stem
    rows = read_rait_set(args.rait_set)
    result = conflict_diagnostic(rows, args.out, cfg)
    print_summary(result)
    return 0


def read_rait_set(path) -> list[dict]:
    """RAIT rows with a `prompt` (non-empty text, or chat messages) and a `label` of vanilla / idk."""
    from rait.prompts import is_conversation

    rows = []
    for line, row in read_jsonl(path):
        prompt = row.get("prompt")
        if not ((isinstance(prompt, str) and prompt.strip()) or is_conversation(prompt)):
            raise input_error(path, "must be a non-empty string or a list of {role, content} chat messages "
                                    "(the RAIT set's trl format; re-build it with --format trl)",
                              line=line, field="prompt")
        if row.get("label") not in LABELS:
            raise input_error(path, f"must be 'vanilla' or 'idk', got {row.get('label')!r}", line=line,
                              field="label")
        rows.append(row)
    if not rows:
        raise RaitError(f"{path}: the RAIT set is empty")
    return rows


def check_config(cfg: ConflictConfig) -> None:
    problems = model_option_problems(cfg, "conflict")
    if problems:
        raise RaitError("\n".join(problems))
    bad = [t for t in cfg.thresholds if not -1.0 <= t <= 1.0]
    if not cfg.thresholds or bad:
        raise RaitError(f"conflict.thresholds: need cosine similarities in [-1, 1], got {cfg.thresholds}")
    if cfg.plot and cfg.projection == "tsne":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise RaitError("--projection tsne needs scikit-learn (pip install scikit-learn); "
                            "or use --projection pca") from None


def conflict_diagnostic(rows: list[dict], out, cfg: ConflictConfig, loaded=None) -> dict:
    """CRSS of a RAIT set per threshold (+ optional projection plot); writes and returns the result."""
    from rait.evaluation import model_reference

    out = Path(out)
    if not rows:
        raise RaitError("the RAIT set is empty: nothing to analyse")
    check_config(cfg)
    model_ref = model_reference(cfg, loaded)
    run_fp = fingerprint({"rows": [[r.get("id"), r["prompt"], r["label"]] for r in rows],
                          "model": model_ref["identity"], "thresholds": cfg.thresholds})
    previous = existing(out, run_fp, cfg)
    if previous is not None:
        print(f"rait conflict: {out} is complete with the same settings; skipping", file=sys.stderr)
        return previous

    labels = [r["label"] for r in rows]
    counts = {label: labels.count(label) for label in LABELS}
    print(f"rait conflict: {len(rows)} prompts of {cfg.name or 'the RAIT set'} ({counts['vanilla']} vanilla, "
          f"{counts['idk']} IdK), mean-pooled last hidden states, thresholds {cfg.thresholds} -> {out}",
          file=sys.stderr)
    started = time.time()
    features = represent(rows, cfg, loaded)
    result = {
        "name": cfg.name, "model": cfg.model or model_ref["path"], "n": len(rows), "labels": counts,
        "feature": "last-layer hidden state, mean-pooled over prompt tokens",
        "crss": crss_table(features, labels, cfg.thresholds),
        "plot": None, "fingerprint": run_fp, "seconds": None,
    }
    if cfg.plot:
        from rait.report.figures import projection_figure

        points = project(features, cfg.projection, cfg.seed)
        projection_figure(points, labels, cfg.plot, title=f"{cfg.name or 'RAIT set'}: {cfg.projection.upper()} "
                                                          "of prompt representations")
        result["plot"] = str(cfg.plot)
        result["projection"] = cfg.projection
    result["seconds"] = round(time.time() - started, 2)
    write_json_atomic(out, result)
    return result


def existing(out: Path, run_fp: str, cfg: ConflictConfig) -> dict | None:
    if cfg.overwrite or not out.exists():
        return None
    try:
        result = read_json(out)
    except RaitError:
        return None
    if not isinstance(result, dict) or result.get("fingerprint") != run_fp:
        return None
    if cfg.plot and not Path(cfg.plot).exists():
        return None
    return result


def represent(rows, cfg: ConflictConfig, loaded):
    """(n, hidden) array of mean-pooled last hidden states of the prompts, chunk by chunk so
    progress shows."""
    import numpy as np
    from tqdm.auto import tqdm

    from rait.backends import hf

    if loaded is None:
        from rait.models import load_model_from

        loaded = load_model_from(cfg)
    model, tok, _ = loaded
    prompts = [r["prompt"] for r in rows]
    chunk = max(1, cfg.batch_size) * 8
    parts = []
    with tqdm(total=len(prompts), desc="represent", unit="prompt", file=sys.stderr) as bar:
        for start in range(0, len(prompts), chunk):
            parts.append(hf.mean_hidden(model, tok, prompts[start:start + chunk], batch_size=cfg.batch_size))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def crss_table(features, labels, thresholds) -> dict:
    """{"0.95": {pairs, conflicting, crss}, ...} with threshold keys as JSON-friendly strings."""
    from rait.metrics import crss

    table = crss(features, labels, thresholds)
    return {str(float(t)): dict(value) for t, value in table.items()}


def project(features, method: str = "pca", seed: int = 0):
    """(n, 2) projection: PCA by SVD of the centred features, or t-SNE (scikit-learn)."""
    import numpy as np

    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    points = centred @ components.T
    if points.shape[1] < 2:  # one feature dimension: pad so the plot still has two axes
        points = np.hstack([points, np.zeros((len(points), 2 - points.shape[1]))])
    return points


def print_summary(result: dict) -> None:
    lines = [f"{result['name']}: {result['n']} samples ({result['labels']['vanilla']} vanilla, "
             f"{result['labels']['idk']} IdK)",
             f"  {'threshold':>9} {'similar pairs':>14} {'conflicting':>12} {'CRSS %':>7}"]
    for t, row in result["crss"].items():
        value = "-" if row.get("crss") is None else f"{100 * row['crss']:.2f}"
        lines.append(f"  {t:>9} {row['pairs']:>14} {row['conflicting']:>12} {value:>7}")
    if result.get("plot"):
        lines.append(f"  projection plot: {result['plot']}")
    print("\n".join(lines))
