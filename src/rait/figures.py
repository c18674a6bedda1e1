"""Figures of the report and of the conflict diagnostic, drawn headless (matplotlib's Agg canvas,
no pyplot state).

Each function takes plain numbers, writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from rait.io import atomic_path

LABEL_COLOURS = {"vanilla": "#4C72B0", "idk": "#DD8452"}
DPI = 110


def new_figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save(figure, path) -> Path:
    path = Path(path)
    with warnings.catch_warnings():  # a model name in a script the font lacks is drawn as boxes, not warned about
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
    return path


def pc_pw_plane(panels: Sequence[dict], path) -> Path:
    """One panel per test set: every model as a point (Pc, Pw), the baseline E1, the THS-0 line
    through the origin and E1, and iso-THS lines.

    THS = (E2 x E1) / (A x E1) with A = (1, 0) (Zhu et al. 2025, eq. 6): the signed area of the
    triangle O-E2-E1 over that of O-A-E1. Points of equal THS c lie on the line parallel to O-E1
    that crosses the Pc axis at Pc = c, so THS can be read off where that line meets the axis.
    panels: [{"title", "baseline": (pc, pw) | None, "points": [(name, pc, pw, ths | None), ...]}].
    """
    import numpy as np

    names = list(dict.fromkeys(point[0] for panel in panels for point in panel["points"]))
    colours = {name: f"C{k % 10}" for k, name in enumerate(names)}  # one colour per model everywhere
    markers = {name: "osD^vPXh<>"[k % 10] for k, name in enumerate(names)}
    cols = min(len(panels), 3)
    rows = (len(panels) + cols - 1) // cols
    figure = new_figure(5.0 * cols, 4.6 * rows)
    for index, panel in enumerate(panels):
        ax = figure.add_subplot(rows, cols, index + 1)
        ax.plot([0, 1], [1, 0], color="0.75", linestyle=":", linewidth=1)  # Pc + Pw <= 1
        base = panel.get("baseline")
        if base and base[0] > 0 and base[1] > 0:
            pc1, pw1 = base
            slope = pw1 / pc1
            ax.fill([0, 1, pc1], [0, 0, pw1], color="0.92", zorder=0, label="O-A-E1 (THS unit area)")
            for c in np.round(np.arange(-1.0, 1.01, 0.2), 1):
                xs = np.array([c, c + 1.0 / slope if slope else 1.0])
                ax.plot(xs, slope * (xs - c), color="0.55" if abs(c) < 1e-9 else "0.85",
                        linewidth=1.4 if abs(c) < 1e-9 else 0.8, zorder=1)
                if 0 < c < 1:
                    ax.annotate(f"THS {c:.1f}", (c, 0), textcoords="offset points", xytext=(2, 3),
                                fontsize=7, color="0.45")
            ax.scatter([pc1], [pw1], marker="*", s=180, color="black", zorder=4, label="E1 (baseline)")
        for name, pc, pw, ths in panel["points"]:
            # named in the legend, not beside the point: models often land on top of each other,
            # and distinct markers keep coinciding points apart
            text = name if ths is None else f"{name}: THS {100 * ths:.1f}"
            ax.scatter([pc], [pw], s=55, color=colours[name], marker=markers[name], zorder=5,
                       edgecolor="white", linewidth=0.6, label=text)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("Pc (correct)")
        ax.set_ylabel("Pw (wrong)")
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper right", fontsize=7)  # Pc + Pw <= 1 keeps that corner empty
    return save(figure, path)


def knowledge_heatmap(correctness: Sequence[float], certainty: Sequence[float], path, *, bins: int = 10,
                      title: str = "Knowledge state of the pool") -> Path:
    """2-D histogram of the pool: correctness (x) by certainty (y), item counts per cell."""
    import numpy as np

    counts, xedges, yedges = np.histogram2d(np.asarray(correctness, float), np.asarray(certainty, float),
                                            bins=bins, range=[[0, 1], [0, 1]])
    figure = new_figure(5.6, 4.6)
    ax = figure.add_subplot(1, 1, 1)
    image = ax.imshow(counts.T, origin="lower", extent=[xedges[0], xedges[-1], yedges[0], yedges[-1]],
                      aspect="auto", cmap="viridis")
    figure.colorbar(image, ax=ax, label="questions")
    ax.set_xlabel("correctness")
    ax.set_ylabel("certainty")
    ax.set_title(f"{title} (n={len(correctness)})", fontsize=10)
    return save(figure, path)


def flow_histogram(flow: Sequence[float], correctness: Sequence[float], path, *, bins: int = 20) -> Path:
    """Knowledge flow (correctness after rehearsal - before), split by the initial verdict:
    known (correctness >= 0.5, vanilla candidates) vs unknown (IdK candidates)."""
    import numpy as np

    flow = np.asarray(flow, float)
    known = np.asarray(correctness, float) >= 0.5
    figure = new_figure(6.0, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    ax.hist([flow[~known], flow[known]], bins=bins, range=(-1, 1), stacked=True,
            color=[LABEL_COLOURS["idk"], LABEL_COLOURS["vanilla"]],
            label=["initially unknown (correctness < 0.5)", "initially known"])
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel("knowledge flow (correctness after rehearsal - before)")
    ax.set_ylabel("questions")
    ax.set_title(f"Knowledge flow (n={len(flow)}, mean {flow.mean():+.3f})", fontsize=10)
    ax.legend(fontsize=8)
    return save(figure, path)


def composition_bars(compositions: dict[str, dict[str, int]], path) -> Path:
    """Stacked bars: vanilla and IdK samples of each RAIT set."""
    names = list(compositions)
    vanilla = [compositions[n].get("vanilla", 0) for n in names]
    idk = [compositions[n].get("idk", 0) for n in names]
    figure = new_figure(max(4.0, 1.1 * len(names) + 2), 4.2)
    ax = figure.add_subplot(1, 1, 1)
    ax.bar(names, vanilla, color=LABEL_COLOURS["vanilla"], label="vanilla")
    ax.bar(names, idk, bottom=vanilla, color=LABEL_COLOURS["idk"], label="IdK")
    for x, (v, i) in enumerate(zip(vanilla, idk)):
        ax.annotate(f"{v}/{i}", (x, v + i), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("samples")
    ax.set_title("RAIT set composition (vanilla / IdK)", fontsize=10)
    ax.legend(fontsize=8)
    return save(figure, path)


def projection_figure(points, labels: Sequence[str], path, *, title: str = "") -> Path:
    """2-D projection of sample representations coloured by label (vanilla / IdK)."""
    import numpy as np

    points = np.asarray(points, float)
    labels = np.asarray(labels)
    figure = new_figure(5.6, 4.8)
    ax = figure.add_subplot(1, 1, 1)
    for label, colour in LABEL_COLOURS.items():
        mask = labels == label
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=10, alpha=0.6, color=colour,
                       label=f"{label} ({int(mask.sum())})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save(figure, path)
