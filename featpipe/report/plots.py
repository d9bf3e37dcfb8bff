"""The report's figures, written as PNG files.

Figures are built with matplotlib.figure.Figure and saved through the Agg canvas, never through pyplot:
nothing is registered in pyplot's global figure list, so nothing can pop up a window or leak between
plots, and each figure is freed as soon as it is saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from featpipe import atomic
from featpipe.report.collect import CACHED

DPI = 80
PATH_COLOURS = {"cached": "tab:blue", "end-to-end": "tab:orange"}


@dataclass(frozen=True)
class Plot:
    title: str
    path: Path
    run_dir: str | None = None  # set for per-run figures, shown with that run's details


def write_plots(runs: list[dict], plot_dir: Path, *, smooth: float = 0.0) -> list[Plot]:
    """Every figure the runs have data for; a figure nobody has data for is left out."""
    atomic.make_dirs(plot_dir)
    rows = [run["row"] for run in runs]
    plots = [
        accuracy_bars(rows, plot_dir / "accuracy_by_backbone_head.png"),
        cost_frontier(rows, plot_dir / "accuracy_vs_compute.png"),
        roc_curves(runs, plot_dir / "roc_test.png"),
        throughput(rows, plot_dir / "extraction_throughput.png"),
    ]
    for run in runs:
        stem = f"{run['row']['rank']:02d}_{_slug(run['row']['name'])}"
        plots.append(learning_curves(run, plot_dir / f"learning_{stem}.png", smooth))
        plots.append(confusion_matrix(run, plot_dir / f"confusion_{stem}.png"))
    return [p for p in plots if p is not None]


def ema(values, factor: float) -> list[float]:
    """Exponential moving average: smoothed = previous * factor + point * (1 - factor); factor in [0, 1)."""
    smoothed = []
    for point in map(float, values):
        smoothed.append(smoothed[-1] * factor + point * (1 - factor) if smoothed else point)
    return smoothed


def accuracy_bars(rows: list[dict], path: Path) -> Plot:
    """Test accuracy per backbone (groups) and head (bars); rows are ranked, so a cell shows its best run."""
    backbones = sorted({_base(r) for r in rows}, key=str)
    heads = sorted({r["head"] for r in rows}, key=str)
    cells = {}
    for row in rows:
        cells.setdefault((_base(row), row["head"]), row["test_accuracy"])
    width = 0.8 / len(heads)
    fig = Figure(figsize=(max(4.0, 1.2 * len(backbones) * max(1, len(heads) / 2)), 3.2))
    ax = fig.subplots()
    x = np.arange(len(backbones))
    for i, head in enumerate(heads):
        values = [cells.get((b, head), np.nan) for b in backbones]
        bars = ax.bar(x + (i - (len(heads) - 1) / 2) * width, values, width, label=_text(head))
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(x, [_text(b) for b in backbones], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.legend(title="head", fontsize=7, title_fontsize=8, loc="lower right")
    title = "Test accuracy per backbone and head (best run by validation per cell)"
    return _save(fig, path, title)


def _base(row: dict) -> str:
    # A random-initialised copy of a base (the pretrained-vs-random control) is a group of its own.
    return row["backbone"] if row.get("pretrained", True) else f"{row['backbone']} (random init)"


def cost_frontier(rows: list[dict], path: Path) -> Plot | None:
    """Test accuracy against total compute on a log axis, with the Pareto frontier (nothing cheaper is better)."""
    points = [r for r in rows if r["total_seconds"] > 0]  # a log axis has no place for 0 s
    if not points:
        return None
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for run_path in sorted({r["path"] for r in points}, key=str):
        group = [r for r in points if r["path"] == run_path]
        ax.scatter([r["total_seconds"] for r in group], [r["test_accuracy"] for r in group],
                   color=PATH_COLOURS.get(run_path, "tab:gray"), label=_text(run_path), zorder=3)
    for r in points:
        ax.annotate(_text(r["name"]), (r["total_seconds"], r["test_accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
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
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("total compute (s, log scale)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    return _save(fig, path, "Test accuracy against total compute (cost/benefit frontier)")


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
    name = run["row"]["name"]
    fig.suptitle(_text(name), fontsize=9)
    return _save(fig, path, f"Learning curves: {name}", run["row"]["run_dir"])


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
    name = run["row"]["name"]
    ax.set_title(_text(name), fontsize=9)
    return _save(fig, path, f"Test confusion matrix: {name}", run["row"]["run_dir"])


def roc_curves(runs: list[dict], path: Path) -> Plot | None:
    """Test ROC curves of every binary-task run on one set of axes."""
    binary = [r for r in runs if r["metrics"]["test"].get("roc_curve")]
    if not binary:
        return None
    fig = Figure(figsize=(4.5, 4.0))
    ax = fig.subplots()
    for run in binary:
        curve, auc = run["metrics"]["test"]["roc_curve"], run["row"]["test_roc_auc"]
        label = run["row"]["name"] + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(curve["fpr"], curve["tpr"], label=_text(label))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, "ROC curves (test)")


def throughput(rows: list[dict], path: Path) -> Plot | None:
    """Feature extraction speed per backbone and image size, from the cached runs (mean over runs)."""
    speeds: dict[str, list[float]] = {}
    for row in rows:
        if row["path"] == CACHED and row["extract_images_per_second"]:
            size = "x".join(map(str, row["image_size"] or []))
            speeds.setdefault(f"{row['backbone']} @ {size}", []).append(row["extract_images_per_second"])
    if not speeds:
        return None
    labels = sorted(speeds)
    fig = Figure(figsize=(5.5, 1.2 + 0.35 * len(labels)))
    ax = fig.subplots()
    bars = ax.barh(range(len(labels)), [np.mean(speeds[k]) for k in labels], color="tab:green")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_yticks(range(len(labels)), [_text(k) for k in labels], fontsize=7)
    ax.invert_yaxis()
    ax.margins(x=0.12)  # room for the value labels
    ax.set_xlabel("images per second (extraction)")
    return _save(fig, path, "Feature extraction throughput per backbone (cached runs)")


def _save(fig: Figure, path: Path, title: str, run_dir: str | None = None) -> Plot:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip("."))
    return Plot(title=title, path=path, run_dir=run_dir)


def _text(value) -> str:
    # A "$" pair would switch matplotlib to mathtext, which mangles or rejects user text.
    return str(value).replace("$", r"\$")


def _slug(name) -> str:
    # Run names are user text: keep file names portable and inside plot_dir.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")[:40] or "run"
