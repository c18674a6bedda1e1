"""`rait report`: a Markdown + self-contained HTML report of a run directory or result files.

It gathers what it finds (eval results, the pool's knowledge table, RAIT sets, conflict
results), draws the figures (PNG files beside the report, embedded in the HTML) and writes
OUT/report.md and OUT/report.html. Whatever is missing is skipped with a note.

Run directory layout read here (written by `rait run`):
  probe/knowledge.jsonl, rehearse/knowledge.jsonl (with flow), build/<method>.jsonl (+ .meta.json),
  eval/<model>__<testset>__<prompt>.json (+ .items.jsonl), conflict/<method>.json, manifest.json
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from rait import config
from rait.config import option
from rait.errors import RaitError
from rait.io import read_json, read_jsonl, write_text_atomic


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
    """Collect, draw and write the report; returns {"markdown", "html", "figures", "notes", ...}."""
    from rait.report import html

    cfg = cfg or ReportConfig()
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    found = collect(inputs)
    out = Path(cfg.out) if cfg.out else default_out(inputs)
    title = cfg.title or found["title"]
    print(f"rait report: {len(found['evals'])} eval results, "
          f"{'a' if found['knowledge'] else 'no'} knowledge table, {len(found['rait_sets'])} RAIT sets, "
          f"{len(found['conflicts'])} conflict results -> {out}", file=sys.stderr)
    sections = make_sections(found, out / "figures")
    markdown = render_markdown(title, sections, found["notes"], out)
    write_text_atomic(out / "report.md", markdown)
    write_text_atomic(out / "report.html", html.render(title, sections, found["notes"]))
    figures = [f for s in sections for f in s["figures"]]
    return {"markdown": out / "report.md", "html": out / "report.html", "figures": figures,
            "notes": found["notes"], "sections": [s["title"] for s in sections]}


def default_out(inputs: list[Path]) -> Path:
    if len(inputs) == 1 and inputs[0].is_dir():
        return inputs[0] / "report"
    return Path("rait-report")


# --------------------------------------------------------------------------- collecting

def collect(inputs: list[Path]) -> dict:
    """Everything the report can show, found by globbing a run directory or by the content of
    the given files."""
    found = {"title": "rait report", "evals": [], "knowledge": None, "knowledge_path": None,
             "rait_sets": {}, "conflicts": {}, "manifest": None, "notes": []}
    for path in inputs:
        if not path.exists():
            raise RaitError(f"{path}: not found (give a run directory or result files)")
        if path.is_dir():
            collect_run_dir(path, found)
        else:
            collect_file(path, found)
    return found


def collect_run_dir(run: Path, found: dict) -> None:
    found["title"] = f"rait report: {run.resolve().name}"
    if (run / "manifest.json").exists():
        found["manifest"] = safe_json(run / "manifest.json", found["notes"])
    for path in sorted((run / "eval").glob("*.json")):
        add_eval(path, found)
    for name in ("rehearse", "probe"):  # the rehearsal table also carries the flow
        table = run / name / "knowledge.jsonl"
        if table.exists() and found["knowledge"] is None:
            add_knowledge(table, found)
    for path in sorted((run / "build").glob("*.jsonl")):
        add_rait_set(path, found)
    for path in sorted((run / "conflict").glob("*.json")):
        add_conflict(path, found)
    if not any((found["evals"], found["knowledge"], found["rait_sets"], found["conflicts"])):
        found["notes"].append(f"{run}: no stage outputs found (eval/, probe/, build/, conflict/)")


def collect_file(path: Path, found: dict) -> None:
    if path.suffix == ".json":
        data = safe_json(path, found["notes"])
        if isinstance(data, dict) and "Pc" in data:
            add_eval(path, found, data)
        elif isinstance(data, dict) and "crss" in data:
            add_conflict(path, found, data)
        elif data is not None:
            found["notes"].append(f"{path}: neither an eval nor a conflict result; skipped")
        return
    rows = safe_rows(path, found["notes"])
    if rows and "correctness" in rows[0]:
        add_knowledge(path, found, rows)
    elif rows and "label" in rows[0]:
        add_rait_set(path, found, rows)
    elif rows is not None:
        found["notes"].append(f"{path}: neither a knowledge table nor a RAIT set; skipped")


def safe_json(path: Path, notes: list) -> dict | None:
    try:
        return read_json(path)
    except RaitError as exc:
        notes.append(f"skipped: {exc}")
        return None


def safe_rows(path: Path, notes: list) -> list[dict] | None:
    try:
        return [row for _, row in read_jsonl(path)]
    except RaitError as exc:
        notes.append(f"skipped: {exc}")
        return None


def add_eval(path: Path, found: dict, data: dict | None = None) -> None:
    data = data if data is not None else safe_json(path, found["notes"])
    if data is None:
        return
    if not all(k in data for k in ("Pc", "Pw", "Pr", "n")):
        found["notes"].append(f"{path}: not a complete eval result (needs n, Pc, Pw, Pr); skipped")
        return
    found["evals"].append({**data, "_path": str(path)})


def add_knowledge(path: Path, found: dict, rows: list[dict] | None = None) -> None:
    rows = rows if rows is not None else safe_rows(path, found["notes"])
    if not rows:
        return
    usable = [r for r in rows if isinstance(r.get("correctness"), (int, float))
              and isinstance(r.get("certainty"), (int, float))]
    if len(usable) < len(rows):
        found["notes"].append(f"{path}: {len(rows) - len(usable)} rows without correctness/certainty ignored")
    found["knowledge"], found["knowledge_path"] = usable, str(path)


def add_rait_set(path: Path, found: dict, rows: list[dict] | None = None) -> None:
    rows = rows if rows is not None else safe_rows(path, found["notes"])
    if rows is None:
        return
    labels = [r.get("label") for r in rows]
    entry = {"vanilla": labels.count("vanilla"), "idk": labels.count("idk"), "n": len(rows)}
    meta = path.with_name(path.name[: -len(".jsonl")] + ".meta.json")
    if meta.exists():
        summary = (safe_json(meta, found["notes"]) or {}).get("summary")
        if summary is not None:
            entry["summary"] = summary
    found["rait_sets"][path.stem] = entry


def add_conflict(path: Path, found: dict, data: dict | None = None) -> None:
    data = data if data is not None else safe_json(path, found["notes"])
    if data is None:
        return
    if not isinstance(data.get("crss"), dict):
        found["notes"].append(f"{path}: not a conflict result (no crss table); skipped")
        return
    plot = data.get("plot")
    if plot and not Path(plot).is_absolute():  # relative to where conflict ran, or beside the file
        beside = path.parent / Path(plot).name
        plot = str(beside) if beside.exists() else plot
    found["conflicts"][data.get("name") or path.stem] = {**data, "plot": plot}


# --------------------------------------------------------------------------- sections

def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def ths_cell(result: dict) -> str:
    ci = result.get("THS_ci")
    return pct(result.get("THS")) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def model_label(result: dict) -> str:
    return f"{result.get('model', '?')} ({result.get('prompt', '?')})"


def make_sections(found: dict, figures: Path) -> list[dict]:
    """Sections in reading order: {"title", "text", "tables": [(header, rows)], "figures": [Path]}."""
    sections = []
    for maker in (results_section, differences_section, groups_section, knowledge_section, flow_section,
                  composition_section, conflict_section):
        try:
            section = maker(found, figures)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed input never sinks the report
            found["notes"].append(f"{maker.__name__.replace('_section', '')}: skipped ({type(exc).__name__}: {exc})")
            continue
        if section:
            sections.append(section)
    return sections


def test_sets(evals: list[dict]) -> dict[str, list[dict]]:
    by_set: dict[str, list[dict]] = {}
    for result in evals:
        by_set.setdefault(str(result.get("dataset", "?")), []).append(result)
    return by_set


def results_section(found: dict, figures: Path) -> dict | None:
    from rait.report.figures import pc_pw_plane

    if not found["evals"]:
        found["notes"].append("no eval results: results table and Pc-Pw plane skipped")
        return None
    by_set = test_sets(found["evals"])
    header = ["model (prompt)", "n", "Pc %", "Pw %", "Pr %", "unparsed", "THS % [95% CI]",
              "refused but baseline correct"]
    tables = []
    for name, results in by_set.items():
        rows = [[model_label(r), str(r["n"]), pct(r["Pc"]), pct(r["Pw"]), pct(r["Pr"]),
                 str(r.get("unparsed", 0)), ths_cell(r), over_cell(r)] for r in results]
        tables.append((f"Test set: {name}", header, rows))
    models = list(dict.fromkeys(model_label(r) for r in found["evals"]))
    wide = [[m] + [next((ths_cell(r) for r in by_set[s] if model_label(r) == m), "") for s in by_set]
            for m in models]
    tables.append(("THS % by model and test set", ["model (prompt)", *by_set], wide))
    panels = [{"title": name, "baseline": baseline_point(results),
               "points": [(model_label(r), r["Pc"], r["Pw"], r.get("THS")) for r in results]}
              for name, results in by_set.items()]
    figure = pc_pw_plane(panels, figures / "pc_pw_plane.png")
    text = ("Pc, Pw, Pr: shares of correct, wrong and refused answers. THS (truthful helpfulness "
            "score) is measured against the baseline E1; 0 = the baseline, 1 = a perfect model. In "
            "the plane, the grey line through the origin and E1 is THS 0 and parallel lines are "
            "iso-THS lines, labelled where they cross the Pc axis.")
    return {"title": "Results", "text": text, "tables": tables, "figures": [figure]}


def differences_section(found: dict, figures: Path) -> dict | None:
    """The best model (highest THS) of each test set against every other, paired on the items:
    whether an ordering holds needs the interval of the difference, not two overlapping ones."""
    from rait.metrics import bootstrap_ths_diff_ci

    tables = []
    for name, results in test_sets(found["evals"]).items():
        scored = [r for r in results if r.get("THS") is not None and (r.get("baseline") or {}).get("paired")]
        if len(scored) < 2:
            continue
        outcomes = {id(r): item_outcomes(r["_path"], r) for r in scored}
        scored = [r for r in scored if outcomes[id(r)] is not None]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda r: r["THS"])
        # a THS difference only means something against one shared baseline
        scored = [r for r in scored if Path(baseline_file(r)).name == Path(baseline_file(best)).name]
        base = item_outcomes(baseline_file(best))
        if len(scored) < 2 or base is None:
            continue
        unparsed_as = (best.get("scoring") or {}).get("unparsed_as", "wrong")
        rows = []
        for other in scored:
            if other is best:
                continue
            ids = [i for i in base if i in outcomes[id(best)] and i in outcomes[id(other)]]
            low, high = bootstrap_ths_diff_ci([outcomes[id(best)][i] for i in ids],
                                              [outcomes[id(other)][i] for i in ids],
                                              [base[i] for i in ids], unparsed_as=unparsed_as)
            verdict = "ahead" if low > 0 else ("behind" if high < 0 else "not separated")
            rows.append([model_label(other), str(len(ids)), pct(best["THS"] - other["THS"]),
                         f"[{pct(low)}, {pct(high)}]", verdict])
        tables.append((f"Test set: {name}, {model_label(best)} minus each other model",
                       ["other model (prompt)", "items", "THS difference %", "95% CI", model_label(best)], rows))
    if not tables:
        return None
    text = ("Paired bootstrap (1000 resamples of the items, the same for both models and the baseline) of "
            "the THS difference between the model with the highest THS and each other one. "
            "'ahead' when the whole interval is above 0.")
    return {"title": "Is the best model ahead? (paired THS differences)", "text": text,
            "tables": tables, "figures": []}


def baseline_file(result: dict) -> str:
    """The baseline's result file: as recorded, else by name beside this result (the recorded
    path is relative to where the evaluation ran)."""
    recorded = Path(result["baseline"]["path"])
    beside = Path(result["_path"]).parent / recorded.name
    return str(recorded if recorded.exists() or not beside.exists() else beside)


def item_outcomes(path: str | Path, result: dict | None = None) -> dict | None:
    """id -> outcome from an eval result's items file, or None when it is missing or unreadable."""
    from rait.evaluation import baseline_outcomes

    path = Path(path)
    try:
        return baseline_outcomes(path, result if result is not None else read_json(path))
    except (RaitError, KeyError):
        return None


def over_cell(result: dict) -> str:
    part = result.get("over_conservative")
    if not part:
        return "-"
    return f"{part['count']} ({pct(part.get('share'))}%)"


def baseline_point(results: list[dict]):
    for result in results:
        base = result.get("baseline")
        if base and base.get("Pc") is not None and base.get("Pw") is not None:
            return (base["Pc"], base["Pw"])
    return None


def groups_section(found: dict, figures: Path) -> dict | None:
    tables = []
    for name, results in test_sets(found["evals"]).items():
        groups = list(dict.fromkeys(g for r in results for g in (r.get("by_group") or {})))
        if not groups:
            continue
        rows = []
        for r in results:
            cells = []
            for g in groups:
                row = (r.get("by_group") or {}).get(g)
                cells.append("" if not row else f"{pct(row['Pc'])} / {pct(row['Pw'])}"
                             + (f" ({pct(row['THS'])})" if row.get("THS") is not None else ""))
            macro = r.get("macro")
            cells.append("" if not macro else f"{pct(macro['Pc'])} / {pct(macro['Pw'])}"
                         + (f" ({pct(macro['THS'])})" if macro.get("THS") is not None else ""))
            rows.append([model_label(r), *cells])
        tables.append((f"Test set: {name}", ["model (prompt)", *groups, "macro over subjects"], rows))
    if not tables:
        return None
    return {"title": "By subject group", "text": "Pc % / Pw % (THS %) per MMLU group.",
            "tables": tables, "figures": []}


def knowledge_section(found: dict, figures: Path) -> dict | None:
    from rait.report.figures import knowledge_heatmap

    rows = found["knowledge"]
    if not rows:
        found["notes"].append("no knowledge table: knowledge-state heatmap skipped")
        return None
    correctness = [r["correctness"] for r in rows]
    certainty = [r["certainty"] for r in rows]
    known = sum(c >= 0.5 for c in correctness)
    figure = knowledge_heatmap(correctness, certainty, figures / "knowledge_state.png")
    table = ("Pool", ["questions", "mean correctness", "mean certainty", "correctness >= 0.5"],
             [[str(len(rows)), f"{sum(correctness) / len(rows):.3f}", f"{sum(certainty) / len(rows):.3f}",
               f"{known} ({pct(known / len(rows))}%)"]])
    return {"title": "Knowledge state of the pool", "text": f"From {found['knowledge_path']}.",
            "tables": [table], "figures": [figure]}


def flow_section(found: dict, figures: Path) -> dict | None:
    from rait.report.figures import flow_histogram

    rows = [r for r in (found["knowledge"] or []) if isinstance(r.get("flow"), (int, float))]
    if not rows:
        found["notes"].append("no knowledge flow (rehearsal not run): flow histogram skipped")
        return None
    flow = [r["flow"] for r in rows]
    figure = flow_histogram(flow, [r["correctness"] for r in rows], figures / "knowledge_flow.png")
    rose = sum(f > 0 for f in flow)
    fell = sum(f < 0 for f in flow)
    table = ("Flow", ["questions", "rose", "fell", "unchanged"],
             [[str(len(flow)), str(rose), str(fell), str(len(flow) - rose - fell)]])
    return {"title": "Knowledge flow", "text": "Correctness after rehearsal minus before, per question.",
            "tables": [table], "figures": [figure]}


def composition_section(found: dict, figures: Path) -> dict | None:
    from rait.report.figures import composition_bars

    sets = found["rait_sets"]
    if not sets:
        found["notes"].append("no RAIT sets: composition chart skipped")
        return None
    figure = composition_bars({k: v for k, v in sets.items()}, figures / "rait_composition.png")
    rows = [[name, str(v["n"]), str(v["vanilla"]), str(v["idk"]),
             pct(v["idk"] / v["n"]) if v["n"] else "-"] for name, v in sets.items()]
    return {"title": "RAIT sets", "text": "", "figures": [figure],
            "tables": [("Composition", ["method", "samples", "vanilla", "IdK", "IdK %"], rows)]}


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
            cells.append("" if not row else f"{pct(row.get('crss'))} ({row.get('conflicting')}/{row.get('pairs')})")
        rows.append([name, *cells])
    plots = [Path(c["plot"]) for c in conflicts.values() if c.get("plot") and Path(c["plot"]).exists()]
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
