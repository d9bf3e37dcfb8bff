"""write_report: finished run directories in, a comparison report (HTML, Markdown, JSON, CSV, PNGs) out."""

from __future__ import annotations

import os
from pathlib import Path

from featpipe import atomic
from featpipe.curve import curves_for_report, plot_curve
from featpipe.errors import FeatpipeError
from featpipe.report.collect import collect_runs, write_csv
from featpipe.report.gallery import BEST_RUN_MISTAKES, RUN_MISTAKES, mistakes_gallery
from featpipe.report.labels import shared_facts, short_backbone
from featpipe.report.plots import DETAILED_RUNS, Plot, write_plots
from featpipe.report.render import build_document, to_html, to_markdown
from featpipe.report.verdict import make_verdicts
from featpipe.runs import write_json

DEFAULT_TITLE = "featpipe comparison report"


def write_report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, *, smooth: float = 0.0,
                 title: str | None = None, notes: list[str] | None = None) -> dict:
    """Write report.html, report.md, summary.json, summary.csv and plots/*.png into out_dir.

    Unfinished or unreadable runs are listed as skipped; FeatpipeError only when no run finished.
    Runs of different datasets (fingerprints) get a verdict each: summary.json's "verdicts" holds them all and
    "verdict" the one verdict when there is one dataset (null with several).
    Returns {"html", "markdown", "summary_json", "summary_csv": Path, "plots": [Path, ...]}.
    """
    if not 0.0 <= smooth < 1.0:
        raise FeatpipeError(f"smoothing factor must be in [0, 1), got {smooth}")
    runs, skipped = collect_runs(run_dirs)
    if not runs:
        why = "; ".join(f"{s['run_dir']}: {s['reason']}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise FeatpipeError(f"no finished run to report on{': ' + why if why else ''}{more}")
    title = title or DEFAULT_TITLE
    notes = list(notes or [])
    out_dir = Path(out_dir)
    atomic.make_dirs(out_dir)
    rows = [run["row"] for run in runs]
    verdicts = make_verdicts(runs)
    plots = write_plots(runs, out_dir / "plots", smooth=smooth)
    curves = report_curves(runs, out_dir / "plots")
    paths = {
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "summary_json": out_dir / "summary.json",
        "summary_csv": out_dir / "summary.csv",
    }
    write_json(paths["summary_json"], {
        "title": title, "notes": notes, "verdict": verdicts[0] if len(verdicts) == 1 else None,
        "verdicts": verdicts, "runs": rows, "skipped": skipped,
        "curves": [{key: curve[key] for key in ("cache", "cache_key", "title", "points", "summary", "protocol")}
                   for curve in curves],
    })
    write_csv(rows, paths["summary_csv"])
    galleries = _galleries(runs, verdicts)
    blocks = build_document(title, notes, runs, verdicts, skipped, plots, galleries,
                            shared_facts([run["run"] for run in runs]), curves)
    atomic.write_text(paths["html"], to_html(blocks, title))
    atomic.write_text(paths["markdown"], to_markdown(blocks, out_dir))
    return {**paths, "plots": [p.path for p in plots] + [curve["plot"].path for curve in curves]}


def report_curves(runs: list[dict], plot_dir: Path) -> list[dict]:
    """The label-efficiency curves (`featpipe curve`) of the caches the reported runs were trained on: those
    saved beside the runs (``<runs dir>/curves/<cache file stem>/``), each redrawn into the report's plots under
    a title a person reads (the base's short name, as in the run labels), as curves_for_report's dicts plus
    "title" and "plot"."""
    stems: dict[Path, dict[str, str]] = {}  # runs dir -> {cache stem: backbone}
    for run in runs:
        cache = run["run"].get("cache") or {}
        if cache.get("path"):
            where = stems.setdefault(Path(run["row"]["run_dir"]).parent, {})
            where[Path(cache["path"]).stem] = short_backbone(run["run"].get("backbone"))
    curves = []
    for runs_dir, backbones in stems.items():
        for curve in curves_for_report(runs_dir, sorted(backbones)):
            title = f"{backbones[curve['cache']]} ({curve['cache'][-8:]})"
            path = plot_dir / f"curve_{len(curves) + 1}.png"
            plot_curve(curve["points"], path, title)
            curves.append({**curve, "title": title, "plot": Plot(f"Label efficiency: {title}", path, kind="curve")})
    return curves


def _galleries(runs: list[dict], verdicts: list[dict]) -> dict:
    """The best run of each dataset gets the big gallery; the other detailed runs a smaller one."""
    best = {v["best"] for v in verdicts}
    detailed = {}
    for run in runs:
        name = run["row"]["name"]
        if name in best:
            detailed[name] = mistakes_gallery(run, BEST_RUN_MISTAKES)
        elif run["row"]["rank"] <= DETAILED_RUNS:
            detailed[name] = mistakes_gallery(run, RUN_MISTAKES)
    return detailed
