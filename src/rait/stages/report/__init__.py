"""`rait report`: a Markdown + self-contained HTML report of a run directory or result files.

    collect the inputs (each one checked) -> check the output folder -> draw the figures in a
    scratch folder -> render both pages -> move the figures into OUT/figures, write
    OUT/report.md and OUT/report.html last (a failure leaves OUT as it was)

A run directory (its layout: rait.layout) is read with an interrupted run's tolerance: a stage
that has not run, or has not finished (its sidecar is not written yet), is skipped with a note.
A finished file that is damaged is an error, and so is a file given by name that is neither an
eval result, a conflict result, a knowledge table nor a RAIT set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from rait import config, io, knowledge
from rait.config import option
from rait.errors import RaitError, input_error
from rait.layout import run_layout
from rait.metrics import percent
from rait.results import (RATES, check_conflict_result, check_count, check_eval_result, check_object,
                          result_outcomes, short)
from rait.stage import meta_path, remove

LABELS = ("vanilla", "idk")
SIMULTANEOUS_ALPHA = 0.05  # the family-wise error of the paired-difference table
DIFFERENCE_RESAMPLES = 10_000  # enough draws in each tail at 1 - 0.05 / pairs
RUN_OUTPUTS = "probe/knowledge.jsonl, rehearse/knowledge.jsonl, build/*.jsonl, eval/*.json, conflict/*.json"


@dataclasses.dataclass
class ReportConfig:
    out: str | None = option(None, "output folder (default: RUN_DIR/report, or ./rait-report for files)")
    title: str | None = option(None, "report title (default: from the run directory)")


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_FILE",
                        help="a run directory, or result files (eval/conflict .json, knowledge or RAIT .jsonl)")
    config.add_arguments(parser, ReportConfig)


def run(args) -> int:
    cfg = config.build(ReportConfig, None, args, where="report")
    written = write_report(args.inputs, cfg)
    print_summary(written)
    return 0


def write_report(inputs, cfg: ReportConfig | None = None) -> dict:
    """`rait report` and the run's report stage: run directories and result files in, OUT/report.md
    and OUT/report.html (+ OUT/figures/) out. Returns {"markdown", "html", "figures", "notes", "sections"}."""
    from rait.stages.report import html

    cfg = cfg or ReportConfig()
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    found = collect(inputs)
    out = Path(cfg.out) if cfg.out else default_out(inputs)
    check_out(out, [*inputs, *found["read"]])
    title = cfg.title or found["title"]
    print(f"rait report: {len(found['evals'])} eval results, "
          f"{'a' if found['knowledge'] else 'no'} knowledge table, {len(found['rait_sets'])} RAIT sets, "
          f"{len(found['conflicts'])} conflict results -> {out}", file=sys.stderr)
    with scratch_folder(out) as scratch:
        sections = make_sections(found, scratch)
        page = html.render(title, sections, found["notes"])
        placed = {f: out / "figures" / f.name for s in sections for f in s["figures"] if f.parent == scratch}
        sections = [{**s, "figures": [placed.get(f, f) for f in s["figures"]]} for s in sections]
        markdown = render_markdown(title, sections, found["notes"], out)
        publish(out, placed, markdown, page, [*inputs, *found["read"]])
    return {"markdown": out / "report.md", "html": out / "report.html",
            "figures": [f for s in sections for f in s["figures"]],
            "notes": found["notes"], "sections": [s["title"] for s in sections]}


def default_out(inputs: list[Path]) -> Path:
    if len(inputs) == 1 and inputs[0].is_dir():
        return run_layout(inputs[0])["report_dir"]
    return Path("rait-report")


# --------------------------------------------------------------------------- writing

def check_out(out: Path, inputs: list[Path]) -> None:
    """OUT is a folder (or nothing yet) that is no input and holds no input where a page goes."""
    if out.exists() and not out.is_dir():
        raise RaitError(f"{out}: is a file; --out names the folder the report is written into")
    for given in inputs:
        if out.exists() and given.exists() and out.resolve() == given.resolve():
            raise RaitError(f"{out}: is also an input; rait never writes into its inputs, choose another --out")
    for page in (out / "report.md", out / "report.html"):
        io.check_output_path(page, inputs)
    figures = out / "figures"
    if figures.exists() and not figures.is_dir():
        raise RaitError(f"{figures}: is a file, but the report puts its figures in this folder; "
                        "remove it or choose another --out")


@contextlib.contextmanager
def scratch_folder(out: Path):
    """A hidden scratch folder inside OUT for the figures, removed at the end; when the report
    fails, the folders this run created for OUT go too."""
    created = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)
    scratch = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
        yield scratch
    except OSError as exc:
        if created is not None:
            remove(created)
        raise RaitError(f"{out}: cannot write the report here ({exc.strerror})") from None
    except BaseException:
        if created is not None:
            remove(created)
        raise
    finally:
        if scratch is not None:
            remove(scratch)


def publish(out: Path, placed: dict[Path, Path], markdown: str, page: str, inputs: list[Path]) -> None:
    """Move the drawn figures into OUT/figures, then replace both pages (last, atomically). On a
    failure the pages stay as they were and the figures this run moved in are removed again."""
    for final in placed.values():
        io.check_output_path(final, inputs)
    moved: list[Path] = []
    try:
        with io.atomic_path(out / "report.md") as md_tmp, io.atomic_path(out / "report.html") as html_tmp:
            # errors="replace": a file name that is not valid Unicode must not stop the report
            md_tmp.write_text(markdown, encoding="utf-8", errors="replace")
            html_tmp.write_text(page, encoding="utf-8", errors="replace")
            for drawn, final in placed.items():
                final.parent.mkdir(exist_ok=True)
                os.replace(drawn, final)
                moved.append(final)
    except BaseException:
        for path in moved:
            remove(path)
        raise


# --------------------------------------------------------------------------- collecting

def collect(inputs: list[Path]) -> dict:
    """Everything the report shows: the stage outputs of run directories (rait.layout) and the
    given files, recognised by their content. Every file is checked; `read` lists them."""
    if not inputs:
        raise RaitError("give a run directory or result files")
    found = {"title": "rait report", "evals": [], "knowledge": None, "knowledge_path": None,
             "rait_sets": {}, "conflicts": {}, "notes": [], "read": [], "runs": []}
    runs = [path for path in inputs if path.is_dir()]
    several = len(runs) > 1  # replicates (seeds) of one study: every label says its run
    names = [path.resolve().name for path in runs]
    for name in names:
        if names.count(name) > 1:
            raise RaitError(f"two run directories named {name!r}: the report tells runs apart by their "
                            "folder names; give runs with distinct names")
    for path in inputs:
        if not path.exists():
            raise RaitError(f"{path}: not found (give a run directory or result files)")
        if path.is_dir():
            collect_run_dir(path, found, several)
        elif path.is_file():
            collect_file(path, found)
        else:
            raise RaitError(f"{path}: not a regular file or a folder (a device, pipe or socket)")
    add_item_outcomes(found)
    return found


def add_item_outcomes(found: dict) -> None:
    """Each eval result's per-item outcomes and, for a paired baseline, the baseline's: what the
    paired THS differences resample. Read here so that a damaged items file fails before drawing."""
    cache: dict[Path, dict | None] = {}

    def outcomes_of(path: Path, result: dict | None = None):
        key = path.resolve()
        if key not in cache:
            cache[key] = result_outcomes(path, result)
        return cache[key]

    for result in found["evals"]:
        result["_outcomes"] = outcomes_of(Path(result["_path"]), result)
        if (result.get("baseline") or {}).get("paired"):
            result["_baseline_outcomes"] = outcomes_of(Path(baseline_file(result)))


def collect_run_dir(run: Path, found: dict, several: bool = False) -> None:
    """One run directory's finished outputs. With several runs (`several`), every eval result,
    RAIT set and conflict result is labelled with its run's folder name, and the knowledge table
    shown is the first run's."""
    layout = run_layout(run)
    name = run.resolve().name
    found["runs"].append(name)
    found["title"] = f"rait report: {', '.join(found['runs'])}" if several else f"rait report: {name}"
    suffix = f" · {name}" if several else ""
    before, notes_before = outputs_found(found), len(found["notes"])
    for path in sorted(layout["eval_dir"].glob("*.json")):
        add_eval(path, found, io.read_json(path), run=name if several else None)
    for key in ("rehearse_table", "probe_table"):  # the rehearsal's table also carries the flow
        if layout[key].exists() and finished(layout[key], found):
            if found["knowledge"] is None or not several:
                add_knowledge(layout[key], found)
            else:
                found["notes"].append(f"{layout[key]}: the knowledge table shown is the first run's; "
                                      "this one is not shown")
            break
    for path in sorted(layout["build_dir"].glob("*.jsonl")):
        if finished(path, found):
            add_rait_set(path, found, list(io.read_jsonl(path)), suffix=suffix)
    for path in sorted(layout["conflict_dir"].glob("*.json")):
        add_conflict(path, found, io.read_json(path), suffix=suffix)
    if outputs_found(found) == before:
        unfinished = "; ".join(found["notes"][notes_before:])
        raise RaitError(f"{run}: no finished stage outputs to report (looked for {RUN_OUTPUTS})"
                        + (f"; {unfinished}" if unfinished else "; give the run directory of `rait run`, "
                                                                 "or result files"))


def outputs_found(found: dict) -> int:
    return (len(found["evals"]) + (found["knowledge"] is not None) + len(found["rait_sets"])
            + len(found["conflicts"]))


def finished(path: Path, found: dict) -> bool:
    """Whether a table or set of a run directory is complete: its sidecar, written last, is there.
    One without (its stage was interrupted) is skipped with a note."""
    if meta_path(path).exists():
        return True
    found["notes"].append(f"{path}: not finished (no {meta_path(path).name}; was its stage interrupted?); skipped")
    return False


def collect_file(path: Path, found: dict) -> None:
    """A given file, recognised by its content."""
    if path.suffix == ".json":
        data = io.read_json(path)
        if isinstance(data, dict) and any(key in data for key in RATES):
            add_eval(path, found, data)
        elif isinstance(data, dict) and "crss" in data:
            add_conflict(path, found, data)
        else:
            raise RaitError(f"{path}: neither an eval result (with n, Pc, Pw, Pr; from `rait eval`) nor a "
                            "conflict result (with crss; from `rait conflict`)")
        return
    numbered = list(io.read_jsonl(path))
    if not numbered:
        raise RaitError(f"{path}: is empty; expected a knowledge table or a RAIT set")
    line, first = numbered[0]
    if knowledge.is_rait_set_row(first):  # before the table test: RAIT rows carry correctness too
        add_rait_set(path, found, numbered)
    elif "correctness" in first:
        add_knowledge(path, found)
    else:
        raise input_error(path, "neither a knowledge table (rows with correctness and certainty; from "
                                "`rait probe` / `rait rehearse`) nor a RAIT set (rows with a label and a "
                                "training target; from `rait build`)", line=line)


def add_eval(path: Path, found: dict, data, run: str | None = None) -> None:
    found["evals"].append({**check_eval_result(data, path), "_path": str(path), "_run": run})
    found["read"].append(path)


def add_knowledge(path: Path, found: dict) -> None:
    if found["knowledge"] is not None:
        raise RaitError(f"{path}: a second knowledge table; the report shows one ({found['knowledge_path']} "
                        "came first), give only one")
    found["knowledge"], found["knowledge_path"] = knowledge.read_table(path), str(path)
    found["read"].append(path)


def add_rait_set(path: Path, found: dict, numbered: list[tuple[int, dict]], suffix: str = "") -> None:
    for line, row in numbered:
        if not knowledge.is_rait_set_row(row):
            raise input_error(path, "not a RAIT set row (a RAIT set from `rait build` has a label and a "
                                    "training target in every row)", line=line)
        if row["label"] not in LABELS:
            raise input_error(path, f"must be vanilla or idk, got {short(row['label'])}", line=line, field="label")
    labels = [row["label"] for _, row in numbered]
    entry = {"vanilla": labels.count("vanilla"), "idk": labels.count("idk"), "n": len(labels),
             **sidecar_facts(path, labels)}
    name = path.stem + suffix
    if name in found["rait_sets"]:
        raise RaitError(f"{path}: a second RAIT set named {name!r}; give sets with distinct names")
    found["rait_sets"][name] = entry
    found["read"] += [path, meta_path(path)] if meta_path(path).exists() else [path]


def sidecar_facts(path: Path, labels: list[str]) -> dict:
    """The pool size and the filters' removals from a RAIT set's sidecar (`rait build` writes
    PATH.meta.json), checked against the set's rows. A set without one (renamed, copied) has none."""
    sidecar = meta_path(path)
    if not sidecar.exists():
        return {}
    meta = check_object(io.read_json(sidecar), sidecar, None)
    counts = meta.get("counts")
    if counts is not None and counts != {label: labels.count(label) for label in LABELS}:
        raise input_error(sidecar, f"{short(counts)} does not match the {len(labels)} rows of {path} "
                                   f"({labels.count('vanilla')} vanilla, {labels.count('idk')} idk); the set "
                                   "was changed after `rait build`: build it again", field="counts")
    summary = check_object(meta.get("summary") or {}, sidecar, "summary")
    facts = {}
    if summary.get("pool") is not None:
        facts["pool"] = check_count(summary["pool"], sidecar, "summary.pool")
    removed = check_object(summary.get("removed") or {}, sidecar, "summary.removed")
    facts["removed"] = {name: check_count(count, sidecar, f"summary.removed.{name}") for name, count in removed.items()}
    return facts


def add_conflict(path: Path, found: dict, data, suffix: str = "") -> None:
    data = check_conflict_result(data, path)
    plot = data.get("plot")
    if plot and not Path(plot).is_absolute():  # relative to where conflict ran, or beside the file
        beside = path.parent / Path(plot).name
        plot = str(beside) if beside.exists() else plot
    name = (data.get("name") or path.stem) + suffix
    if name in found["conflicts"]:
        raise RaitError(f"{path}: a second conflict result named {name!r}; give results with distinct names")
    found["conflicts"][name] = {**data, "plot": plot}
    found["read"].append(path)


# --------------------------------------------------------------------------- sections

def ths_cell(result: dict) -> str:
    ci = result.get("THS_ci")
    return percent(result.get("THS")) + (f" [{percent(ci[0])}, {percent(ci[1])}]" if ci else "")


def model_label(result: dict) -> str:
    """How tables name a result: model (prompt), and its run when the report has several."""
    run = result.get("_run")
    return base_label(result) + (f" · {run}" if run else "")


def base_label(result: dict) -> str:
    """model (prompt): the same in every run, so replicates of one study line up by it."""
    return f"{result.get('model') or '?'} ({result.get('prompt') or '?'})"


def make_sections(found: dict, figures: Path) -> list[dict]:
    """Sections in reading order: {"title", "text", "tables": [(caption, header, rows)], "figures": [Path]}.
    The inputs are checked, so every section can be made; figures are drawn into `figures`."""
    sections = []
    for maker in (results_section, differences_section, seeds_section, groups_section, knowledge_section, flow_section,
                  composition_section, conflict_section):
        section = maker(found, figures)
        if section:
            sections.append(section)
    return sections


def test_sets(evals: list[dict]) -> dict[str, list[dict]]:
    by_set: dict[str, list[dict]] = {}
    for result in evals:
        by_set.setdefault(result.get("dataset") or "?", []).append(result)
    return by_set


def results_section(found: dict, figures: Path) -> dict | None:
    from rait.figures import pc_pw_plane

    if not found["evals"]:
        found["notes"].append("no eval results: results table and Pc-Pw plane skipped")
        return None
    by_set = test_sets(found["evals"])
    header = ["model (prompt)", "n", "Pc %", "Pw %", "Pr %", "unparsed", "THS % [95% CI]",
              "refused but baseline correct"]
    tables = []
    for name, results in by_set.items():
        rows = [[model_label(r), str(r["n"]), percent(r["Pc"]), percent(r["Pw"]), percent(r["Pr"]),
                 str(r.get("unparsed") or 0), ths_cell(r), over_cell(r)] for r in results]
        tables.append((f"Test set: {name}", header, rows))
    models = list(dict.fromkeys(model_label(r) for r in found["evals"]))
    wide = [[m] + [next((ths_cell(r) for r in by_set[s] if model_label(r) == m), "") for s in by_set]
            for m in models]
    tables.append(("THS % by model and test set", ["model (prompt)", *by_set], wide))
    panels = [{"title": name, "baseline": baseline_point(results),
               "points": [(model_label(r), r["Pc"], r["Pw"], r.get("THS")) for r in results]}
              for name, results in by_set.items()]
    figure = pc_pw_plane(panels, figures / "pc_pw_plane.png")
    text = ("Pc, Pw, Pr: shares of correct, wrong and refused answers, micro averages (every question "
            "counts once; MMLU's macro averages over subjects are in the group tables). THS (truthful helpfulness "
            "score) is measured against the baseline E1; 0 = the baseline, 1 = a perfect model. In "
            "the plane, the grey line through the origin and E1 is THS 0 and parallel lines are "
            "iso-THS lines, labelled where they cross the Pc axis.")
    return {"title": "Results", "text": text, "tables": tables, "figures": [figure]}


def differences_section(found: dict, figures: Path) -> dict | None:
    """The best model (highest THS) of each test set against every other, paired on the items:
    whether an ordering holds needs the interval of the difference, not two overlapping ones."""
    tables = []
    for name, results in test_sets(found["evals"]).items():
        for run in dict.fromkeys(r["_run"] for r in results):  # within each run: one baseline, one seed
            table = differences_table(name + (f", run {run}" if run else ""),
                                      [r for r in results if r["_run"] == run])
            if table:
                tables.append(table)
    if not tables:
        return None
    text = ("Paired bootstrap (10,000 resamples of the items, the same for both models and the baseline) "
            "of the THS difference between the model with the highest THS and each other one. The best "
            "model is picked after seeing the results, so the intervals are simultaneous over every pair "
            "of the test set's models (Bonferroni: each at 1 - 0.05 / pairs), which keeps the chance of "
            "any false 'ahead' or 'behind' below 5 %. 'ahead' when the whole interval is above 0.")
    return {"title": "Is the best model ahead? (paired THS differences)", "text": text,
            "tables": tables, "figures": []}


def differences_table(name: str, results: list[dict]):
    """(caption, header, rows) for one test set, or None when fewer than two models can be paired."""
    from rait.metrics import bootstrap_ths_diff_ci

    scored = [r for r in results if r.get("THS") is not None and (r.get("baseline") or {}).get("paired")
              and r["_outcomes"] is not None]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda r: r["THS"])
    # a THS difference only means something against one shared baseline
    scored = [r for r in scored if Path(baseline_file(r)).name == Path(baseline_file(best)).name]
    base = best["_baseline_outcomes"]
    if len(scored) < 2 or base is None:
        return None
    unparsed_as = (best.get("scoring") or {}).get("unparsed_as") or "wrong"
    # the best is chosen post hoc: intervals simultaneous over all k(k-1)/2 pairs correct for that
    pairs = len(scored) * (len(scored) - 1) // 2
    alpha = SIMULTANEOUS_ALPHA / pairs
    rows = []
    for other in scored:
        ids = [i for i in base if i in best["_outcomes"] and i in other["_outcomes"]]
        if other is best or not ids:
            continue
        try:
            low, high = bootstrap_ths_diff_ci([best["_outcomes"][i] for i in ids],
                                              [other["_outcomes"][i] for i in ids],
                                              [base[i] for i in ids], unparsed_as=unparsed_as,
                                              alpha=alpha, n_boot=DIFFERENCE_RESAMPLES)
        except RaitError as exc:  # the items files contradict the recorded THS
            raise RaitError(f"{best['_path']}, {other['_path']}: {exc}") from None
        verdict = "ahead" if low > 0 else ("behind" if high < 0 else "not separated")
        rows.append([model_label(other), str(len(ids)), percent(best["THS"] - other["THS"]),
                     f"[{percent(low)}, {percent(high)}]", verdict])
    if not rows:
        return None
    return (f"Test set: {name}, {model_label(best)} minus each other model",
            ["other model (prompt)", "items", "THS difference %", interval_header(alpha, pairs), model_label(best)],
            rows)


def seeds_section(found: dict, figures: Path) -> dict | None:
    """Replicates: the same model (prompt) on the same test set in several run directories (training
    seeds, probe seeds). THS as mean and standard deviation over the runs, and every pair of models'
    difference pooled over the runs: an ordering holds when its simultaneous interval excludes 0 and
    every run has the same sign."""
    tables = []
    for name, results in test_sets(found["evals"]).items():
        by_model: dict[str, list[dict]] = {}
        for result in results:
            if result["_run"] is not None:
                by_model.setdefault(base_label(result), []).append(result)
        replicated = {label: rs for label, rs in by_model.items() if len(rs) > 1}
        if not replicated:
            continue
        rows = []
        for label, rs in replicated.items():
            scores = [r["THS"] for r in rs if r.get("THS") is not None]
            rows.append([label, str(len(rs)), " / ".join(percent(r.get("THS")) for r in rs),
                         mean_sd_cell(scores), mean_sd_cell([r["Pc"] for r in rs]),
                         mean_sd_cell([r["Pw"] for r in rs])])
        tables.append((f"Test set: {name}, over runs", ["model (prompt)", "runs", "THS % in each run",
                                                         "THS % mean ± sd", "Pc % mean ± sd", "Pw % mean ± sd"],
                       rows))
        pooled = pooled_differences_table(name, replicated)
        if pooled:
            tables.append(pooled)
    if not tables:
        return None
    text = ("The same model (prompt) on the same test set in several runs (seeds): THS, Pc and Pw as mean ± "
            "standard deviation over the runs (sd with n - 1). Pooled differences: the mean over runs of "
            "THS(a) - THS(b), each run against its own baseline, on the items every run tested; the interval "
            "is a paired bootstrap of the test items (10,000 resamples, the same items for every run and "
            "model), simultaneous over all pairs of the test set (Bonferroni). It covers the test items at "
            "these seeds; the per-run differences show the seeds' spread. An ordering holds when the "
            "interval excludes 0 and every run's difference has the same sign.")
    return {"title": "Over seeds (replicate runs)", "text": text, "tables": tables, "figures": []}


def mean_sd_cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return percent(mean)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{percent(mean)} ± {percent(sd)}"


def pooled_differences_table(name: str, replicated: dict[str, list[dict]]):
    """(caption, header, rows) of every pair of models run in the same runs, or None."""
    from rait.metrics import bootstrap_pooled_ths_diff_ci

    usable = {label: {r["_run"]: r for r in rs if r.get("THS") is not None and r["_outcomes"] is not None
                      and r.get("_baseline_outcomes") is not None}
              for label, rs in replicated.items()}
    usable = {label: runs for label, runs in usable.items() if len(runs) > 1}
    labels = sorted(usable, key=lambda label: -sum(r["THS"] for r in usable[label].values()) / len(usable[label]))
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:] if set(usable[a]) == set(usable[b])]
    if not pairs:
        return None
    alpha = SIMULTANEOUS_ALPHA / len(pairs)
    rows = []
    for a, b in pairs:
        runs = sorted(usable[a])
        first = usable[a][runs[0]]
        unparsed_as = (first.get("scoring") or {}).get("unparsed_as") or "wrong"
        ids = set(first["_outcomes"])
        for run in runs:
            for result in (usable[a][run], usable[b][run]):
                ids &= set(result["_outcomes"]) & set(result["_baseline_outcomes"])
        ids = sorted(ids)
        if not ids:
            continue
        replicates = [([usable[a][run]["_outcomes"][i] for i in ids], [usable[b][run]["_outcomes"][i] for i in ids],
                       [usable[a][run]["_baseline_outcomes"][i] for i in ids]) for run in runs]
        try:
            low, high = bootstrap_pooled_ths_diff_ci(replicates, unparsed_as=unparsed_as, alpha=alpha,
                                                     n_boot=DIFFERENCE_RESAMPLES)
        except RaitError as exc:
            raise RaitError(f"{name}, {a} vs {b}: {exc}") from None
        per_run = [usable[a][run]["THS"] - usable[b][run]["THS"] for run in runs]
        mean = sum(per_run) / len(per_run)
        if low > 0 and all(d > 0 for d in per_run):
            verdict = f"{a} > {b}"
        elif high < 0 and all(d < 0 for d in per_run):
            verdict = f"{a} < {b}"
        elif low > 0 or high < 0:
            verdict = "not separated (the runs disagree in sign)"
        else:
            verdict = "not separated"
        rows.append([f"{a} - {b}", str(len(runs)), str(len(ids)), percent(mean), f"[{percent(low)}, {percent(high)}]",
                     " / ".join(percent(d) for d in per_run), verdict])
    if not rows:
        return None
    return (f"Test set: {name}, THS differences pooled over runs",
            ["a - b", "runs", "items", "mean difference %", interval_header(alpha, len(pairs)),
             "difference % in each run", "ordering"], rows)


def interval_header(alpha: float, pairs: int) -> str:
    if pairs == 1:
        return "95% CI"
    return f"{100 * (1 - alpha):.4g}% CI (95% jointly over {pairs} pairs)"


def baseline_file(result: dict) -> str:
    """The baseline's result file: as recorded, else by name beside this result (the recorded
    path is relative to where the evaluation ran)."""
    recorded = Path(result["baseline"]["path"])
    beside = Path(result["_path"]).parent / recorded.name
    return str(recorded if recorded.exists() or not beside.exists() else beside)


def over_cell(result: dict) -> str:
    part = result.get("over_conservative")
    if not part:
        return "-"
    return f"{part['count']} ({percent(part.get('share'))}%)"


def baseline_point(results: list[dict]):
    for result in results:
        base = result.get("baseline")
        if base and base.get("Pc") is not None and base.get("Pw") is not None:
            return (base["Pc"], base["Pw"])
    return None


def rates_cell(cell: dict | None) -> str:
    if not cell:
        return ""
    ths = f" ({percent(cell['THS'])})" if cell.get("THS") is not None else ""
    return f"{percent(cell['Pc'])} / {percent(cell['Pw'])}{ths}"


def groups_section(found: dict, figures: Path) -> dict | None:
    tables = []
    for name, results in test_sets(found["evals"]).items():
        groups = list(dict.fromkeys(g for r in results for g in (r.get("by_group") or {})))
        if not groups:
            continue
        micro = [[model_label(r), *[rates_cell((r.get("by_group") or {}).get(g)) for g in groups]]
                 for r in results]
        tables.append((f"Test set: {name}: micro (every question counts once)", ["model (prompt)", *groups], micro))
        if any(r.get("by_group_macro") or r.get("macro") for r in results):
            macro = [[model_label(r), *[rates_cell((r.get("by_group_macro") or {}).get(g)) for g in groups],
                      rates_cell(r.get("macro"))] for r in results]
            tables.append((f"Test set: {name}: macro (each subject counts once, as the paper reports)",
                           ["model (prompt)", *groups, "all subjects"], macro))
    if not tables:
        return None
    return {"title": "By subject group", "text": "Pc % / Pw % (THS %) per MMLU group, as micro averages "
                                                 "(every question counts once) and as macro averages (the "
                                                 "unweighted mean over the group's subjects).",
            "tables": tables, "figures": []}


def knowledge_section(found: dict, figures: Path) -> dict | None:
    from rait.figures import knowledge_heatmap

    rows = found["knowledge"]
    if not rows:
        found["notes"].append("no knowledge table: knowledge-state heatmap skipped")
        return None
    stats = knowledge.field_distributions(rows, ("correctness", "certainty"))
    known = sum(row["correctness"] >= 0.5 for row in rows)
    figure = knowledge_heatmap([r["correctness"] for r in rows], [r["certainty"] for r in rows],
                               figures / "knowledge_state.png")
    table = ("Pool", ["questions", "mean correctness", "mean certainty", "correctness >= 0.5"],
             [[str(len(rows)), f"{stats['correctness']['mean']:.3f}", f"{stats['certainty']['mean']:.3f}",
               f"{known} ({percent(known / len(rows))}%)"]])
    return {"title": "Knowledge state of the pool", "text": f"From {found['knowledge_path']}.",
            "tables": [table], "figures": [figure]}


def flow_section(found: dict, figures: Path) -> dict | None:
    from rait.figures import flow_histogram

    rows = [r for r in (found["knowledge"] or []) if r.get("flow") is not None]
    if not rows:
        found["notes"].append("no knowledge flow (rehearsal not run): flow histogram skipped")
        return None
    flow = [r["flow"] for r in rows]
    figure = flow_histogram(flow, [r["correctness"] for r in rows], figures / "knowledge_flow.png")
    counts = knowledge.flow_counts(flow)
    table = ("Flow", ["questions", "rose", "fell", "unchanged"],
             [[str(len(flow)), str(counts["rose"]), str(counts["fell"]), str(counts["same"])]])
    return {"title": "Knowledge flow", "text": "Correctness after rehearsal minus before, per question.",
            "tables": [table], "figures": [figure]}


def composition_section(found: dict, figures: Path) -> dict | None:
    from rait.figures import composition_bars

    sets = found["rait_sets"]
    if not sets:
        found["notes"].append("no RAIT sets: composition chart skipped")
        return None
    figure = composition_bars(sets, figures / "rait_composition.png")
    rows = [[name, str(v["n"]), str(v["vanilla"]), str(v["idk"]), percent(v["idk"] / v["n"]) if v["n"] else "-",
             str(v.get("pool", "-")), removed_cell(v.get("removed"))] for name, v in sets.items()]
    text = "Pool and removed IdK candidates are from each set's sidecar (written by `rait build`)."
    return {"title": "RAIT sets", "text": text, "figures": [figure],
            "tables": [("Composition", ["method", "samples", "vanilla", "IdK", "IdK %", "pool",
                                        "IdK candidates removed"], rows)]}


def removed_cell(removed: dict | None) -> str:
    if removed is None:
        return "-"
    return ", ".join(f"{name}: {count}" for name, count in removed.items()) or "none"


def conflict_section(found: dict, figures: Path) -> dict | None:
    conflicts = found["conflicts"]
    if not conflicts:
        found["notes"].append("no conflict results: CRSS table skipped")
        return None
    thresholds = list(dict.fromkeys(t for c in conflicts.values() for t in c["crss"]))
    rows = []
    for name, result in conflicts.items():
        cells = []
        for t in thresholds:
            row = result["crss"].get(t)
            cells.append("" if not row else f"{percent(row.get('crss'))} ({row['conflicting']}/{row['pairs']})")
        rows.append([name, *cells])
    plots = [Path(c["plot"]) for c in conflicts.values() if c.get("plot") and Path(c["plot"]).is_file()]
    text = ("CRSS: share of similar sample pairs (cosine similarity of the initial model's mean-pooled "
            "last hidden states above the threshold) that carry opposite labels; cells are CRSS % "
            "(conflicting / similar pairs). Lower means less static conflict.")
    return {"title": "Static conflict (CRSS)", "text": text, "figures": plots,
            "tables": [("CRSS by threshold", ["method", *[f"> {t}" for t in thresholds]], rows)]}


# --------------------------------------------------------------------------- Markdown

def md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(title: str, sections: list[dict], notes: list[str], out: Path) -> str:
    parts = [f"# {title}", ""]
    for section in sections:
        parts += [f"## {section['title']}", ""]
        if section["text"]:
            parts += [section["text"], ""]
        for caption, header, rows in section["tables"]:
            parts += [f"**{caption}**", "", md_table(header, rows), ""]
        for figure in section["figures"]:
            parts += [f"![{figure.stem}]({relative(figure, out)})", ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(parts)


def relative(path: Path, base: Path) -> str:
    """A link that survives moving the run directory (figures of other stages are siblings)."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def print_summary(written: dict) -> None:
    lines = [f"report: {written['markdown']}", f"        {written['html']} (self-contained)",
             f"sections: {', '.join(written['sections']) or 'none'}",
             f"figures: {len(written['figures'])}"]
    lines += [f"note: {note}" for note in written["notes"]]
    print("\n".join(lines))


__all__ = ["ReportConfig", "write_report", "collect"]
