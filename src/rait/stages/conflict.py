"""`rait conflict`: the paper's static-conflict diagnostic of a RAIT set (Zhu et al. 2025, §3).

Each training prompt is represented by the model's last-layer hidden state, mean-pooled over the
prompt's question tokens (a chat set's prompt is rendered by the model's chat template, the ids it
trains on). Every prompt of a RAIT set opens with the same instruction ("Answer the following
question, and if you don't know the answer, only reply with 'I don't know': ..."); in a causal model
the hidden states of that shared header are identical in every row, so pooling over them pulls
every cosine similarity towards 1 and the 0.95-0.99 thresholds stop telling prompts apart. By
default (`pool: question`) the token-id prefix that all the set's prompts share is left out of the
mean; `pool: prompt` pools over every token (this module's earlier behaviour). The shared suffix of
a chat template is kept: its hidden states attend to the question and differ between rows.
The paper's reference code releases no CRSS implementation and our notes on it
(shared/notes/reference.md) say only "near-identical samples in the model's feature space"; which
layer, which tokens and how they are pooled is this module's choice, not the reference's.
Two samples are "similar" when the cosine similarity of their representations
exceeds a threshold; the Conflict Rate of Similar Samples (CRSS) is the share of similar
pairs whose labels differ (one vanilla, one IdK). A high CRSS means near-identical inputs are
taught opposite behaviours — the static conflict CRaFT's certainty ranking reduces.

    read the RAIT set -> check the settings and output paths -> reuse a finished result made from
    the same rows, model and thresholds, or: represent every prompt -> CRSS per threshold ->
    (projection plot) -> write the result last (it is its own marker; the plot its companion)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

from rait import config, io
from rait.config import option
from rait.errors import RaitError, input_error
from rait.knowledge import is_rait_set_row
from rait.options import ModelOptions, Overwrite
from rait.stage import Output, existing_foreign, result_output

LABELS = ("vanilla", "idk")
POOLS = ("question", "prompt")  # see ConflictConfig.pool


@dataclasses.dataclass
class ConflictConfig(ModelOptions, Overwrite):
    """Settings of `rait conflict`; `model` is the model whose representations are compared (the
    initial model)."""

    name: str | None = option(None, "display name of the RAIT set (default: its file name)")
    thresholds: list[float] = option(default_factory=lambda: [0.95, 0.96, 0.97, 0.98, 0.99],
                                     help="comma-separated cosine-similarity thresholds",
                                     at_least=-1, at_most=1)
    plot: str | None = option(None, "write a 2-D projection of the representations to this PNG")
    projection: str = option("pca", "projection for --plot (t-SNE needs scikit-learn)",
                             choices=["pca", "tsne"])
    pool: str = option("question", "tokens whose last-layer hidden states are averaged into a prompt's "
                       "representation: 'question' leaves out the token prefix every prompt of the set "
                       "shares (the instruction header, identical in every row, which pushes all "
                       "similarities towards 1); 'prompt' averages over all of the prompt's tokens",
                       choices=list(POOLS))

    def check(self) -> list[str]:
        problems = super().check()
        if not self.thresholds:
            problems.append("thresholds: need at least one cosine similarity in [-1, 1]")
        if self.pool not in POOLS:  # a config made in code is not checked against the choices
            problems.append(f"pool: must be 'question' or 'prompt', got {self.pool!r}")
        if self.plot and self.projection == "tsne" and importlib.util.find_spec("sklearn") is None:
            problems.append("projection: tsne needs scikit-learn (pip install scikit-learn); "
                            "or use --projection pca")
        return problems


def add_arguments(parser) -> None:
    parser.add_argument("rait_set", metavar="RAIT_SET", help="RAIT set (.jsonl with prompt + label)")
    parser.add_argument("--out", required=True, help="result file (.json)")
    config.add_arguments(parser, ConflictConfig)


def run(args) -> int:
    cfg = config.build(ConflictConfig, None, args, where="conflict")
    result = conflict(cfg, args.rait_set, args.out)
    print_summary(result)
    return 0


# ---- the stage -------------------------------------------------------------------------------

def conflict(cfg: ConflictConfig, data_path, out, *, loaded=None) -> dict:
    """`rait conflict` and the run's conflict stage: RAIT set file in, result file (+ plot) out.
    The set's name defaults to its file name. Returns the result."""
    data_path = Path(data_path)
    rows = read_rait_set(data_path)
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name=data_path.stem)
    return conflict_diagnostic(rows, out, cfg, loaded=loaded, inputs=[data_path])


def conflict_diagnostic(rows: list[dict], out, cfg: ConflictConfig, loaded=None, *, inputs=()) -> dict:
    """CRSS of a RAIT set per threshold (+ optional projection plot); writes and returns the
    result. `inputs`: the files the rows came from (never written over)."""
    from rait.models import model_reference

    output = conflict_output(out, cfg)
    check_rows(rows)
    config.check_values(cfg, "conflict")
    check_outputs(output, cfg, inputs)
    model_ref = model_reference(cfg, loaded)
    run_fp = io.fingerprint({"rows": [[r.get("id"), r["prompt"], r["label"]] for r in rows],
                             "model": model_ref["identity"], "thresholds": cfg.thresholds,
                             "pool": cfg.pool})
    previous = finished_result(output, run_fp, cfg)
    if previous is not None:
        print(f"rait conflict: {output.path} is complete with the same settings; skipping", file=sys.stderr)
        return previous

    labels = [r["label"] for r in rows]
    counts = {label: labels.count(label) for label in LABELS}
    print(f"rait conflict: {len(rows)} prompts of {cfg.name or 'the RAIT set'} ({counts['vanilla']} vanilla, "
          f"{counts['idk']} IdK), last hidden states mean-pooled over the {cfg.pool}'s tokens, "
          f"thresholds {cfg.thresholds} -> {output.path}", file=sys.stderr)
    started = time.time()
    features, pooling = represent(rows, cfg, loaded)
    result = {
        "name": cfg.name, "model": cfg.model or model_ref["path"], "n": len(rows), "labels": counts,
        "feature": FEATURES[cfg.pool],
        "crss": crss_table(features, labels, cfg.thresholds),
        "plot": None, "fingerprint": run_fp, "seconds": None,
        **pooling,
    }
    output.clear()  # the old result and plot go before the new plot is written
    if cfg.plot:
        result.update(write_plot(features, labels, cfg))
    result["seconds"] = round(time.time() - started, 2)
    output.finish(result)
    return result


def conflict_output(out, cfg: ConflictConfig) -> Output:
    """The result (its own marker) and, with --plot, the projection plot beside it."""
    return result_output(out, companions=[cfg.plot] if cfg.plot else [])



def check_outputs(output: Output, cfg: ConflictConfig, inputs) -> None:
    """The result and the plot may be (re)placed: neither is an input, a folder or the other, and a
    result file rait did not write is replaced only with --overwrite."""
    inputs = [str(p) for p in inputs]
    for path in [output.path, *output.companions]:
        io.check_output_path(path, inputs)
    if output.companions and Path(output.companions[0]).resolve() == output.path.resolve():
        raise RaitError(f"{output.path}: --plot and --out name the same file; give the plot its own (.png)")
    if not cfg.overwrite and existing_foreign(output):
        raise RaitError(f"{output.path}: exists and is not a rait conflict result; choose another --out "
                        "(or use --overwrite to replace it)")


def finished_result(output: Output, run_fp: str, cfg: ConflictConfig) -> dict | None:
    """The existing result if it was made from the same rows, model and thresholds, with the plot
    asked for now (same file, same projection)."""
    if cfg.overwrite:
        return None
    done = output.finished(run_fp)
    if done is None:
        return None
    if cfg.plot and (done.get("plot") != str(cfg.plot) or done.get("projection") != cfg.projection):
        return None
    return done


# ---- the RAIT set ----------------------------------------------------------------------------

def read_rait_set(path) -> list[dict]:
    """RAIT rows with a `prompt` (non-empty text, or chat messages) and a `label` of vanilla / idk;
    anything else (a knowledge table, another output format, a bad row, no rows) is one error
    naming the file and line."""
    path = Path(path)
    rows = []
    for line, row in io.read_jsonl(path):
        problem = row_problem(row)
        if problem is not None:
            field, message = problem
            raise input_error(path, message, line=line, field=field)
        rows.append(row)
    if not rows:
        raise RaitError(f"{path}: the RAIT set is empty; build one with `rait build`")
    return rows


def row_problem(row: dict) -> tuple[str | None, str] | None:
    """(field or None, what is wrong) for a row the diagnostic cannot use, else None."""
    from rait.prompts import is_conversation

    if "label" not in row and ("correctness" in row or "certainty" in row):
        return None, ("this is a knowledge table (from `rait probe` / `rait rehearse`), not a RAIT set; "
                      "build the set from it with `rait build` and give that")
    prompt = row.get("prompt")
    if prompt is None and is_rait_set_row(row):
        return "prompt", ("missing: this RAIT set is in another format; the diagnostic needs the trl "
                          "format (prompt + completion): re-build it with --format trl")
    if not ((isinstance(prompt, str) and prompt.strip()) or is_conversation(prompt)):
        return "prompt", ("must be a non-empty string or a list of {role, content} chat messages "
                          "(the RAIT set's trl format; re-build it with --format trl)")
    if row.get("label") not in LABELS:
        return "label", f"must be 'vanilla' or 'idk', got {row.get('label')!r}"
    return None


def check_rows(rows: list[dict]) -> None:
    """Rows given in code hold the same as a read RAIT set."""
    if not rows:
        raise RaitError("the RAIT set is empty: nothing to analyse")
    for number, row in enumerate(rows, start=1):
        problem = row_problem(row) if isinstance(row, dict) else ("row", "must be an object")
        if problem is not None:
            field, message = problem
            raise input_error("the RAIT set", message, line=number, field=field)


def write_plot(features, labels: list[str], cfg: ConflictConfig) -> dict:
    """The 2-D projection plot of the representations; returns the result fields naming it."""
    from rait.figures import projection_figure

    points = project(features, cfg.projection, cfg.seed)
    projection_figure(points, labels, cfg.plot, title=f"{cfg.name or 'RAIT set'}: {cfg.projection.upper()} "
                                                      "of prompt representations")
    return {"plot": str(cfg.plot), "projection": cfg.projection}


# ---- representations and CRSS ----------------------------------------------------------------

FEATURES = {
    "question": "last-layer hidden state, mean-pooled over the prompt tokens after the token prefix "
                "all prompts of the set share (the last token where nothing follows it)",
    "prompt": "last-layer hidden state, mean-pooled over prompt tokens",
}


def shared_prefix_length(encoded) -> int:
    """Length of the longest token-id prefix common to every prompt of `encoded` (lists of ids).
    Fewer than two prompts share no header: 0 (a single prompt is pooled over all its tokens).
    Identical prompts share all of them (each is then represented by its last token)."""
    if len(encoded) < 2:
        return 0
    shortest, longest = min(encoded), max(encoded)  # lexicographic: their common prefix is everyone's
    length = 0
    for a, b in zip(shortest, longest):
        if a != b:
            break
        length += 1
    return length


def represent(rows, cfg: ConflictConfig, loaded):
    """((n, hidden) array of mean-pooled last hidden states of the prompts, the pooling's result
    fields), chunk by chunk so progress shows. With pool "question" the token prefix shared by the
    whole set (not by one chunk) is left out of every mean."""
    import numpy as np
    from tqdm.auto import tqdm

    from rait.backends import hf

    if loaded is None:
        from rait.models import load_model_from

        loaded = load_model_from(cfg)
    model, tok, _ = loaded
    prompts = [r["prompt"] for r in rows]
    skip, last_token = 0, 0
    if cfg.pool == "question":
        encoded = hf.encode(tok, prompts)
        skip = shared_prefix_length(encoded)
        last_token = sum(len(ids) <= skip for ids in encoded)
        if last_token:
            print(f"rait conflict: {last_token} prompt(s) have no token after the {skip} shared ones; "
                  "each is represented by its last token", file=sys.stderr)
    chunk = max(1, cfg.batch_size) * 8
    parts = []
    with tqdm(total=len(prompts), desc="represent", unit="prompt", file=sys.stderr) as bar:
        for start in range(0, len(prompts), chunk):
            parts.append(hf.mean_hidden(model, tok, prompts[start:start + chunk], batch_size=cfg.batch_size,
                                        skip=skip))
            bar.update(len(parts[-1]))
    return np.concatenate(parts), {"pool": cfg.pool, "shared_prefix_tokens": skip,
                                   "last_token_rows": last_token}


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
    if result.get("pool") == "question":
        fallback = result.get("last_token_rows") or 0
        lines.append(f"  features: mean over the tokens after the {result['shared_prefix_tokens']} the prompts "
                     "share" + (f" ({fallback} prompt(s) with none after them: last token)" if fallback else ""))
    if result.get("plot"):
        lines.append(f"  projection plot: {result['plot']}")
    print("\n".join(lines))
