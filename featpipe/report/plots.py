"""The report's figures, written as PNG files.

Figures are built with matplotlib.figure.Figure and saved through the Agg canvas, never through pyplot:
nothing is registered in pyplot's global figure list, so nothing can pop up a window or leak between
plots, and each figure is freed as soon as it is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from featpipe import atomic
from featpipe.report.labels import short_backbone
from featpipe.report.verdict import CACHED, dataset_facts, dataset_key

DPI = 100
PATH_COLOURS = {"cached": "tab:blue", "end-to-end": "tab:orange"}


@dataclass(frozen=True)
class Plot:
    title: str
    path: Path
    run_dir: str | None = None  # set for per-run figures, shown with that run's details
    dataset: str | None = None  # set for a dataset's figures (its fingerprint key), shown with its verdict
    kind: str = ""  # "reliability", "confusion", "learning", ... : where the page puts it


# Figures per run (learning curves, confusion matrix) for this many runs of each dataset, best first: a page of
# 200 runs stays light; any run gets them in a report of its own (featpipe compare RUN_DIR -o ...).
DETAILED_RUNS = 25
# Runs drawn in the accuracy-interval plot per dataset, and curves in the ROC plot.
FOREST_RUNS = 40
ROC_RUNS = 8


def write_plots(runs: list[dict], plot_dir: Path, *, smooth: float = 0.0) -> list[Plot]:
    """Every figure the runs have data for; a figure nobody has data for is left out.

    `runs` are ranked and grouped by dataset (collect_runs); each carries its "number", the key of its marker.
    """
    atomic.make_dirs(plot_dir)
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(dataset_key(run), []).append(run)
    several = len(groups) > 1
    plots = []
    for index, (key, group) in enumerate(groups.items(), 1):
        suffix = f"_{index}" if several else ""
        found = [
            accuracy_intervals(group, plot_dir / f"accuracy_intervals{suffix}.png"),
            cost_frontier(group, plot_dir / f"accuracy_vs_compute{suffix}.png"),
            roc_curves(group, plot_dir / f"roc_test{suffix}.png"),
            reliability(group[0], plot_dir / f"reliability_best{suffix}.png"),
        ]
        name = dataset_facts(group[0])["name"]
        plots += [replace(p, dataset=key, title=f"Dataset {name}: {p.title}" if several else p.title)
                  for p in found if p is not None]
        for rank, run in enumerate(group[:DETAILED_RUNS]):
            stem = f"{run['number']:03d}_{_slug(run['row']['label'])}"
            plots.append(learning_curves(run, plot_dir / f"learning_{stem}.png", smooth))
            plots.append(confusion_matrix(run, plot_dir / f"confusion_{stem}.png"))
            if rank:  # the best run's diagram is its dataset's, shown with its mistakes
                plots.append(reliability(run, plot_dir / f"reliability_{stem}.png", per_run=True))
    plots.append(throughput([run["row"] for run in runs], plot_dir / "extraction_throughput.png"))
    return [p for p in plots if p is not None]


def ema(values, factor: float) -> list[float]:
    """Exponential moving average: smoothed = previous * factor + point * (1 - factor); factor in [0, 1)."""
    smoothed = []
    for point in map(float, values):
        smoothed.append(smoothed[-1] * factor + point * (1 - factor) if smoothed else point)
    return smoothed


def accuracy_intervals(group: list[dict], path: Path) -> Plot | None:
    """Each run's test accuracy with its 95% interval, one row per run (best by validation on top)."""
    shown = group[:FOREST_RUNS]
    rows = [run["row"] for run in shown]
    if not rows:
        return None
    fig = Figure(figsize=(7.0, 0.9 + 0.24 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))
    for i, row in enumerate(rows):
        ci = row["test_accuracy_ci"]
        colour = PATH_COLOURS.get(row["path"], "tab:gray")
        if ci:
            ax.plot(ci, [i, i], color=colour, linewidth=2, solid_capstyle="butt")
        ax.plot([row["test_accuracy"]], [i], "o", color=colour, markersize=5,
                markeredgecolor="black" if i == 0 else colour)
    ax.set_yticks(y, [_text(f"{run['number']}  {run['row']['label']}") for run in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("test accuracy (dot) and 95% Wilson interval (line)")
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", label=p) for p, c in PATH_COLOURS.items()
               if any(r["path"] == p for r in rows)]
    ax.legend(handles=handles, fontsize=7, loc="best")
    more = f" (best {FOREST_RUNS} of {len(group)} by validation)" if len(group) > FOREST_RUNS else ""
    return _save(fig, path, f"Test accuracy with 95% intervals, ranked by validation accuracy{more}",
                 kind="intervals")


def reliability(run: dict, path: Path, per_run: bool = False) -> Plot | None:
    """The reliability diagram of a run on its test split, from the bins classification_metrics recorded, with
    each bin's image count over its bar. `per_run`: a figure for the run's details, not its dataset's best."""
    test = run["metrics"].get("test") or {}
    bins = test.get("reliability")
    if not bins:
        return None
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    lows = [b["low"] for b in bins]
    widths = [b["high"] - b["low"] for b in bins]
    bars = ax.bar(lows, [b["accuracy"] for b in bins], width=widths, align="edge", color="tab:blue", alpha=0.75,
                  edgecolor="white", label="accuracy in bin")
    ax.bar_label(bars, labels=[str(b["count"]) for b in bins], fontsize=6, color="dimgray", padding=1)
    ax.plot([b["confidence"] for b in bins], [b["confidence"] for b in bins], "_", color="black", markersize=9,
            label="mean confidence")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ece = test.get("ece")
    ax.set_title(_text(f"{run['row']['label']}: ECE {ece:.3f}" if ece is not None else run["row"]["label"]),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    which = "" if per_run else "the best run, "
    return _save(fig, path, f"Reliability diagram (test) of {which}{run['row']['label']}: "
                 f"{test.get('ece_bins', len(bins))} equal-width confidence bins, images per bin over each bar "
                 "(empty bins not drawn)", run["row"]["run_dir"] if per_run else None,
                 kind="reliability-run" if per_run else "reliability")


def cost_frontier(group: list[dict], path: Path) -> Plot | None:
    """Test accuracy against total compute on a log axis, with the Pareto frontier (nothing cheaper is better).

    Points carry their run's number from the summary table, placed where they overlap no other number;
    where there is no room a point keeps no number (the table still lists it).
    """
    runs = [r for r in group if r["row"]["total_seconds"] > 0]  # a log axis has no place for 0 s
    if not runs:
        return None
    points = [r["row"] for r in runs]
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.subplots()
    for run_path in sorted({r["path"] for r in points}, key=str):
        members = [r for r in points if r["path"] == run_path]
        ax.scatter([r["total_seconds"] for r in members], [r["test_accuracy"] for r in members],
                   color=PATH_COLOURS.get(run_path, "tab:gray"), label=_text(run_path), zorder=3, s=22)
    frontier, best = [], -np.inf
    for r in sorted(points, key=lambda r: (r["total_seconds"], -r["test_accuracy"])):
        if r["test_accuracy"] > best:
            frontier.append(r)
            best = r["test_accuracy"]
    ax.step([r["total_seconds"] for r in frontier], [r["test_accuracy"] for r in frontier],
            where="post", color="gray", linestyle="--", linewidth=1, label="frontier")
    ax.set_xscale("log")
    # Plain numbers ("20", "300") read better than 2×10¹ on a time axis.
    ax.xaxis.set_major_formatter(ticker.LogFormatter())
    ax.xaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("total compute (s, log scale)")
    ax.set_ylabel("test accuracy")
    legend = ax.legend(fontsize=7, loc="best")
    place_numbers(ax, legend, [((r["row"]["total_seconds"], r["row"]["test_accuracy"]), r["number"]) for r in runs])
    return _save(fig, path, "Test accuracy against total compute (numbers: the runs' # in the summary table; "
                 "dashed: the cost/benefit frontier)")


# Offsets (points) tried around a marker, nearest first.
_OFFSETS = [(dx * r, dy * r) for r in (5, 10, 16, 24)
            for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]


def place_numbers(ax, legend, points: list[tuple[tuple[float, float], int]]) -> list:
    """Annotate points with numbers whose boxes overlap no other number, no marker and not the legend; points at
    one spot share one label ("3,5"). Returns the annotations made (a point with no free spot near it gets none)."""
    fig = ax.figure
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    at: dict[tuple[float, float], list[int]] = {}
    for xy, number in points:
        at.setdefault(xy, []).append(number)
    fig.canvas.draw()  # fix the axes limits before measuring
    markers = [_marker_box(ax, xy) for xy in at] + [legend.get_window_extent(renderer)]
    placed, boxes = [], []
    for xy, numbers in sorted(at.items(), key=lambda item: min(item[1])):
        text = ",".join(map(str, sorted(numbers)))
        for offset in _OFFSETS:
            note = ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=7,
                               ha="left" if offset[0] >= 0 else "right", va="bottom" if offset[1] >= 0 else "top")
            box = note.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = ax.get_window_extent(renderer).contains(box.x0, box.y0) and \
                ax.get_window_extent(renderer).contains(box.x1, box.y1)
            if inside and not any(box.overlaps(b) for b in boxes + markers):
                boxes.append(box)
                placed.append(note)
                break
            note.remove()
    return placed


def _marker_box(ax, xy):
    x, y = ax.transData.transform(xy)
    return Bbox.from_extents(x - 3, y - 3, x + 3, y + 3)


def learning_curves(run: dict, path: Path, smooth: float) -> Plot | None:
    """Training vs validation accuracy and loss per epoch, with a line where each later phase starts."""
    history = run["history"] or {}
    panels = [(m, [k for k in (m, f"val_{m}") if history.get(k)]) for m in ("accuracy", "loss")]
    panels = [(m, keys) for m, keys in panels if keys]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (metric, keys) in zip(axes, panels):
        for key, colour in zip(keys, ("tab:blue", "tab:orange")):
            values = np.asarray(history[key], dtype=float)
            epochs = np.arange(1, len(values) + 1)
            label = "validation" if key.startswith("val_") else "training"
            if smooth > 0:
                ax.plot(epochs, values, color=colour, alpha=0.3, linewidth=1)
                ax.plot(epochs, ema(values, smooth), color=colour, label=f"{label} (EMA {smooth:g})")
            else:
                ax.plot(epochs, values, color=colour, label=label)
        # Phase i starts at 0-based epoch index s, i.e. after epoch s on the 1-based axis.
        for phase in history.get("phases", [])[1:]:
            ax.axvline(phase["start_epoch"] + 0.5, color="gray", linestyle=":", label=_text(f"{phase['name']} starts"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    label = run["row"]["label"]
    fig.suptitle(_text(label), fontsize=9)
    return _save(fig, path, f"Learning curves: {label}", run["row"]["run_dir"], kind="learning")


def confusion_matrix(run: dict, path: Path) -> Plot | None:
    """The test confusion matrix, rows = true class, columns = predicted, labelled with class names."""
    matrix = run["metrics"]["test"].get("confusion_matrix")
    if not matrix:
        return None
    matrix = np.asarray(matrix)
    classes = (run["run"].get("dataset") or {}).get("classes") or []
    if len(classes) != len(matrix):  # never mislabel: fall back to class indices
        classes = [str(i) for i in range(len(matrix))]
    labels = [_text(c) for c in classes]
    n = len(matrix)
    side = min(12.0, max(3.0, 1.5 + 0.45 * n))
    fig = Figure(figsize=(side + 0.8, side))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:  # beyond that the counts are unreadable; the colours still tell the story
        threshold = matrix.max() / 2
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > threshold else "black")
    label = run["row"]["label"]
    ax.set_title(_text(label), fontsize=9)
    return _save(fig, path, f"Test confusion matrix: {label}", run["row"]["run_dir"], kind="confusion")


def roc_curves(runs: list[dict], path: Path) -> Plot | None:
    """Test ROC curves of every binary-task run on one set of axes."""
    binary = [r for r in runs if r["metrics"]["test"].get("roc_curve")]
    if not binary:
        return None
    fig = Figure(figsize=(4.5, 4.0))
    ax = fig.subplots()
    for run in binary[:ROC_RUNS]:
        curve, auc = run["metrics"]["test"]["roc_curve"], run["row"]["test_roc_auc"]
        label = f"{run['number']} {run['row']['label']}" + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(curve["fpr"], curve["tpr"], label=_text(label))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    more = f", the best {ROC_RUNS} of {len(binary)} by validation" if len(binary) > ROC_RUNS else ""
    return _save(fig, path, f"ROC curves (test{more})")


def throughput(rows: list[dict], path: Path) -> Plot | None:
    """Feature extraction speed per backbone and image size, from the cached runs (mean over runs)."""
    speeds: dict[str, list[float]] = {}
    for row in rows:
        if row["path"] == CACHED and row["extract_images_per_second"]:
            size = "x".join(map(str, row["image_size"] or []))
            speeds.setdefault(f"{short_backbone(row['backbone'])} @ {size}", []).append(row["extract_images_per_second"])
    if not speeds:
        return None
    labels = sorted(speeds)
    fig = Figure(figsize=(6.0, 1.0 + 0.3 * len(labels)))
    ax = fig.subplots()
    bars = ax.barh(range(len(labels)), [np.mean(speeds[k]) for k in labels], height=0.5, color="tab:green")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_yticks(range(len(labels)), [_text(k) for k in labels], fontsize=7)
    ax.invert_yaxis()
    ax.margins(x=0.12)  # room for the value labels
    ax.set_xlabel("images per second (extraction)")
    return _save(fig, path, "Feature extraction throughput per backbone (cached runs)")


def _save(fig: Figure, path: Path, title: str, run_dir: str | None = None, kind: str = "") -> Plot:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip("."))
    return Plot(title=title, path=path, run_dir=run_dir, kind=kind)


def _text(value) -> str:
    # A "$" pair would switch matplotlib to mathtext, which mangles or rejects user text.
    return str(value).replace("$", r"\$")


def _slug(name) -> str:
    # Run names are user text: keep file names portable and inside plot_dir.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")[:40] or "run"
