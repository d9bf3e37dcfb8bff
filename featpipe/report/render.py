"""The report as a list of blocks, and the two ways to write it: one self-contained HTML file and Markdown.

Blocks hold plain, unescaped text; each writer escapes every piece of it, so user text (run names,
class names, paths, params, notes) can never become markup. The page's one script is the fixed SORT_SCRIPT
below (click a column header to sort the summary table); it holds no user text.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from featpipe.report.gallery import Gallery
from featpipe.report.plots import DETAILED_RUNS, Plot
from featpipe.report.verdict import accuracy_text, p_text


@dataclass(frozen=True)
class Heading:
    text: str
    level: int
    anchor: str | None = None


@dataclass(frozen=True)
class Items:
    lines: list[str]
    css: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Cell:
    """A table cell with a sort key (numbers sort as numbers), an optional in-page link and a CSS class."""

    text: str
    sort: float | str | None = None
    href: str | None = None
    css: str | None = None


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list]  # str or Cell
    table_id: str | None = None
    sortable: bool = False


@dataclass(frozen=True)
class Image:
    plot: Plot


@dataclass(frozen=True)
class Side:
    """Blocks side by side where the page is wide enough, one under the other where it is not."""

    blocks: list


@dataclass(frozen=True)
class Details:
    """A collapsed section: its summary line shows, its blocks open on a click (Markdown shows them all)."""

    summary: str
    blocks: list
    anchor: str | None = None


@dataclass(frozen=True)
class Section:
    """Blocks inside one element with an id (the mistakes gallery: id "errors")."""

    blocks: list
    anchor: str


@dataclass(frozen=True)
class GalleryBlock:
    gallery: Gallery


SPLIT_COLUMNS = (
    ("n", "n", ""), ("accuracy", "accuracy", ".2%"), ("balanced accuracy", "balanced_accuracy", ".2%"),
    ("log loss", "log_loss", ".4f"), ("ROC AUC", "roc_auc", ".4f"), ("ECE", "ece", ".3f"),
)
PER_CLASS_COLUMNS = (
    ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("F1", "f1", ".3f"), ("support", "support", ""),
)
PROTOCOL = (
    "How sure: each test accuracy comes with its 95% Wilson score interval over the test images. The best run of "
    "each dataset is selected on validation accuracy, then compared with every other run of that dataset by "
    "McNemar's exact test on the test images both saw, Holm-adjusted over those comparisons: \"tie\" means the "
    "test cannot tell the run from the best at 95%, \"worse\" that it can. ECE: expected calibration error of "
    "the predicted class's probability (15 equal-width bins; 0 is perfectly calibrated). Click a column to sort."
)


def build_document(title: str, notes: list[str], runs: list[dict], verdicts: list[dict], skipped: list[dict],
                   plots: list[Plot], galleries: dict[str, Gallery], shared: list[str],
                   curves: list[dict] = ()) -> list:
    """The report's blocks: verdict, summary table, mistakes, plots, each run's details, skipped runs.

    `galleries`: {run name: Gallery} for the runs that get one (the best of each dataset among them).
    `curves`: label-efficiency curves (build.report_curves), each with its sentences and plot.
    """
    several = len(verdicts) > 1
    by_dataset = {v["dataset_key"]: v for v in verdicts}
    blocks: list = [Heading(title, 1)]
    if notes:
        blocks.append(Items(list(notes), "notes"))
    blocks.append(Heading("Verdict" + (f" ({len(verdicts)} datasets, each judged on its own)" if several else ""),
                          2, "verdict"))
    for verdict in verdicts:
        if several:
            blocks.append(Heading(f"Dataset {verdict['dataset']['name']}", 3))
        blocks.append(Items(list(verdict["lines"]), "verdict"))
    if skipped:
        blocks.append(Paragraph(f"{len(skipped)} run(s) skipped as unfinished or unreadable: see Skipped runs."))
    blocks.append(Heading("Summary", 2, "summary-section"))
    if shared:
        blocks.append(Paragraph("All runs: " + ", ".join(shared) + "."))
    blocks.append(Paragraph(PROTOCOL))
    blocks.append(summary_table(runs, by_dataset, several))
    blocks.append(Heading("What the best run gets wrong", 2, "mistakes"))
    mistakes: list = []
    for verdict in verdicts:
        best = verdict["best_run"]
        if several:
            mistakes.append(Heading(f"Dataset {verdict['dataset']['name']}", 3))
        figures = [Image(p) for p in plots if (p.run_dir == best["run_dir"] and p.kind == "confusion")
                   or (p.dataset == verdict["dataset_key"] and p.kind == "reliability")]
        gallery = galleries.get(best["name"])
        mistakes += [*([GalleryBlock(gallery)] if gallery else []), Side(figures)]
    blocks.append(Section(mistakes, "errors"))
    blocks.append(Heading("Plots", 2, "plots"))
    blocks += [Image(p) for p in plots if p.run_dir is None and p.kind != "reliability"]
    if curves:
        blocks.append(Heading("Label efficiency", 2, "curves"))
        blocks.append(Paragraph("Test accuracy of heads trained on k labelled images per class (featpipe curve): "
                                "the mean over seeded stratified draws, with a 95% t-interval over the draws."))
        for curve in curves:
            blocks += [Items([f"{curve['title']}: {line}" for line in curve["summary"]], "curve-summary"),
                       Image(curve["plot"])]
    blocks.append(Heading("Runs", 2, "runs"))
    blocks.append(Paragraph("Each run's details open on a click: where it came from, its metrics per split and "
                            "per class, and, for the best runs of each dataset, its figures and mistakes."))
    best = {v["best"] for v in verdicts}
    for run in runs:
        if run["row"]["name"] in best:  # its figures and mistakes are shown above, once
            own, gallery = [p for p in plots if p.run_dir == run["row"]["run_dir"] and p.kind != "confusion"], None
        else:
            own, gallery = [p for p in plots if p.run_dir == run["row"]["run_dir"]], galleries.get(run["row"]["name"])
        blocks.append(Details(_run_summary(run), _run_blocks(run, own, gallery), f"run-{run['number']}"))
    blocks.append(Heading("Skipped runs", 2, "skipped"))
    if skipped:
        blocks.append(Table(["run directory", "name", "reason"],
                            [[s["run_dir"], _fmt(s["name"]), s["reason"]] for s in skipped], "skipped-runs"))
    else:
        blocks.append(Paragraph("No runs were skipped."))
    return blocks


def summary_table(runs: list[dict], by_dataset: dict, several: bool) -> Table:
    """Label, path, head, test accuracy with its interval, validation accuracy, calibration, compute, and where
    the run stands against its dataset's best; full names and paths are in the details."""
    headers = [*(["dataset"] if several else []), "#", "run", "path", "head", "test accuracy [95% CI]",
               "val acc", "ECE", "compute s", "vs best"]
    rows = []
    for run in runs:
        row = run["row"]
        ci = row["test_accuracy_ci"]
        cells = [
            Cell(str(run["number"]), run["number"]),
            Cell(row["label"], row["label"], href=f"#run-{run['number']}", css="label"),
            Cell(_fmt(row["path"]), _fmt(row["path"])),
            Cell(_fmt(row["head"]), _fmt(row["head"])),
            Cell(accuracy_text(row["test_accuracy"], ci), row["test_accuracy"], css="num"),
            Cell(_fmt(row["val_accuracy"], ".1%"), row["val_accuracy"], css="num"),
            Cell(_fmt(row["test_ece"], ".3f"), "" if row["test_ece"] is None else row["test_ece"], css="num"),
            Cell(_fmt(row["total_seconds"], ".1f"), row["total_seconds"], css="num"),
            standing(row["name"], by_dataset[run["dataset_key"]]),
        ]
        if several:
            cells.insert(0, Cell(row["dataset"], row["dataset"]))
        rows.append(cells)
    return Table(headers, rows, "summary", sortable=True)


def standing(name: str, verdict: dict) -> Cell:
    """best / tie (p) / worse (p) / not tested: the run against its dataset's best, from the verdict."""
    if name == verdict["best"]:
        return Cell("best", 0, css="best")
    for comparison in verdict["comparisons"]:
        if comparison["name"] == name:
            p = p_text(comparison["p_holm"])
            return (Cell(f"tie ({p})", 2 - comparison["p_holm"], css="tie") if comparison["tie"]
                    else Cell(f"worse ({p})", 3 - comparison["p_holm"], css="worse"))
    return Cell("not tested", 4, css="untested")


def _run_summary(run: dict) -> str:
    row = run["row"]
    return (f"#{run['number']} {row['label']}: test {accuracy_text(row['test_accuracy'], row['test_accuracy_ci'])}, "
            f"validation {_fmt(row['val_accuracy'], '.1%')}")


def _run_blocks(run: dict, plots: list[Plot], gallery: Gallery | None) -> list:
    info, metrics, row = run["run"], run["metrics"], run["row"]
    cache, dataset = info.get("cache") or {}, info.get("dataset") or {}
    selection = metrics.get("selection") or {}
    details = [
        ("name", row["name"]), ("run directory", row["run_dir"]), ("kind", info.get("kind")),
        ("path", info.get("path")),
        ("head", info.get("head")), ("backbone", info.get("backbone")), ("weights", info.get("weights")),
        ("pretrained", "no (random-initialised)" if info.get("pretrained") is False else info.get("pretrained")),
        ("image size", _fmt(info.get("image_size"), "size")), ("pooling", info.get("pooling")),
        ("cache", cache.get("path")), ("cache key", cache.get("key")),
        ("dataset root", dataset.get("root")), ("dataset fingerprint", dataset.get("fingerprint")),
        ("classes", ", ".join(map(str, dataset.get("classes") or []))),
        ("params", info.get("params")), ("selected params", selection.get("best_params")),
        ("fitted with", info.get("fit")),  # a head's solver / kernel approximation / validation source
        ("seed", info.get("seed")), ("created", info.get("created")),
        ("per-image predictions", "recorded" if run.get("predictions") else run.get("predictions_problem")),
        *((f"timing: {k}", v) for k, v in (metrics.get("timing") or {}).items()),
        ("versions", info.get("versions")),
    ]
    blocks = [
        Table(["field", "value"], [[k, _fmt(v, ".2f" if k.startswith("timing") else "")] for k, v in details]),
        Table(["split", *(h for h, _, _ in SPLIT_COLUMNS)],
              [[split, *(_fmt(metrics[split].get(key), spec) for _, key, spec in SPLIT_COLUMNS)]
               for split in ("validation", "test")]),
    ]
    per_class = metrics["test"].get("per_class") or {}
    # run.json keeps the class order; metrics.json's dicts are key-sorted.
    classes = [c for c in dataset.get("classes") or [] if c in per_class] or list(per_class)
    if classes:
        blocks.append(Table(["class (test)", *(h for h, _, _ in PER_CLASS_COLUMNS)],
                            [[c, *(_fmt(per_class[c].get(key), spec) for _, key, spec in PER_CLASS_COLUMNS)]
                             for c in classes]))
    if selection.get("grid"):
        metric = selection.get("metric", "score")
        blocks.append(Table(["params", f"validation {metric}"],
                            [[_fmt(p.get("params")), _fmt(p.get("score"), ".4f")] for p in selection["grid"]]))
    blocks += [Image(p) for p in plots if p.kind == "learning"]
    if gallery is not None:
        blocks.append(GalleryBlock(gallery))
    elif row["rank"] > DETAILED_RUNS:
        blocks.append(Paragraph(f"Figures and mistakes are drawn for the best {DETAILED_RUNS} runs of each dataset; "
                                f"featpipe compare {row['run_dir']} -o DIR draws them for this run."))
    figures = [Image(p) for p in plots if p.kind in ("confusion", "reliability-run")]
    return blocks + ([Side(figures)] if figures else [])


def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec == "size":
        return "x".join(map(str, value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if spec and isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; padding: 0 1em; color: #222;
       line-height: 1.4; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td { overflow-wrap: anywhere; max-width: 40em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[data-dir="asc"]::after { content: " ▲"; }
table.sortable th[data-dir="desc"]::after { content: " ▼"; }
#summary { width: 100%; }
#summary td.num { text-align: right; white-space: nowrap; }
#summary td.label { max-width: 24em; }
#summary td.best { background: #d9f2d9; font-weight: 600; }
#summary td.tie { background: #eef7e8; }
#summary td.worse { color: #666; }
#summary td.untested { color: #999; }
ul.notes { background: #fff4d6; border: 1px solid #e0c060; padding: 0.6em 2em; }
ul.verdict { background: #eef5ff; border: 1px solid #9bbce0; padding: 0.6em 2em; }
ul.verdict li { margin: 0.2em 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; max-width: 60em; }
.side { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.side > * { min-width: 0; }
.side > div { flex: 0 1 480px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.thumb { width: 128px; margin: 0; font-size: 0.75em; overflow-wrap: anywhere; }
.thumb img, .thumb .gone { width: 112px; height: 112px; object-fit: contain; background: #eee; border: 1px solid #ccc;
       display: block; }
.thumb .gone { display: flex; align-items: center; justify-content: center; color: #777; text-align: center; }
.thumb .wrong { color: #b00; }
details { border-top: 1px solid #ddd; padding: 0.4em 0; }
details > summary { cursor: pointer; font-weight: 600; }
h3 { margin-top: 1.5em; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir);
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute("data-sort"), y = b.cells[column].getAttribute("data-sort");
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return dir === "asc" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def to_html(blocks: list, title: str) -> str:
    """One self-contained page: inline CSS, images as data URIs, no external resources; one fixed script."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _html_cell(cell) -> str:
    if not isinstance(cell, Cell):
        return f"<td>{_esc(cell)}</td>"
    attrs = "" if cell.sort is None else f' data-sort="{_esc(cell.sort)}"'
    attrs += f' class="{_esc(cell.css)}"' if cell.css else ""
    text = f'<a href="{_esc(cell.href)}">{_esc(cell.text)}</a>' if cell.href else _esc(cell.text)
    return f"<td{attrs}>{text}</td>"


def _html_block(block) -> str:
    match block:
        case Heading(text, level, anchor):
            id_attr = f' id="{_esc(anchor)}"' if anchor else ""
            return f"<h{level}{id_attr}>{_esc(text)}</h{level}>"
        case Items(lines, css):
            items = "".join(f"<li>{_esc(line)}</li>" for line in lines)
            return f'<ul class="{css}">{items}</ul>'
        case Paragraph(text):
            return f"<p>{_esc(text)}</p>"
        case Table(headers, rows, table_id, sortable):
            id_attr = f' id="{_esc(table_id)}"' if table_id else ""
            css = ' class="sortable"' if sortable else ""
            head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>\n" for row in rows)
            # Wide tables scroll on their own instead of stretching the page.
            return (f'<div class="table-wrap"><table{id_attr}{css}>\n<thead><tr>{head}</tr></thead>\n'
                    f"<tbody>\n{body}</tbody>\n</table></div>")
        case Image(plot):
            data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
            return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(plot.title)}">'
                    f"<figcaption>{_esc(plot.title)}</figcaption></figure>")
        case Side(blocks):
            return '<div class="side">' + "".join(f"<div>{_html_block(b)}</div>" for b in blocks) + "</div>"
        case Details(summary, blocks, anchor):
            id_attr = f' id="{_esc(anchor)}"' if anchor else ""
            inner = "\n".join(_html_block(b) for b in blocks)
            return f"<details{id_attr}><summary>{_esc(summary)}</summary>\n{inner}\n</details>"
        case Section(blocks, anchor):
            inner = "\n".join(_html_block(b) for b in blocks)
            return f'<section id="{_esc(anchor)}">\n{inner}\n</section>'
        case GalleryBlock(gallery):
            return _html_gallery(gallery)
    raise TypeError(f"unknown block {block!r}")


def _html_gallery(gallery: Gallery) -> str:
    parts = [f"<p>{_esc(gallery_heading(gallery))}</p>"]
    if gallery.note:
        parts.append(f'<p class="note">{_esc(gallery.note)}</p>')
    thumbs = []
    for m in gallery.mistakes:
        picture = (f'<img src="{_esc(m.thumbnail)}" alt="{_esc(m.path)}">' if m.thumbnail
                   else f'<div class="gone">{_esc(m.missing or "no image")}</div>')
        thumbs.append(
            f'<figure class="thumb" title="{_esc(m.path)}">{picture}<figcaption>true {_esc(m.true)}<br>'
            f'<span class="wrong">predicted {_esc(m.predicted)} {m.confidence:.0%}</span></figcaption></figure>')
    if thumbs:
        parts.append('<div class="thumbs">' + "".join(thumbs) + "</div>")
    return '<div class="gallery">' + "".join(parts) + "</div>"


def gallery_heading(gallery: Gallery) -> str:
    if not gallery.n_test:
        return f"{gallery.label}: no per-image predictions."
    shown = len(gallery.mistakes)
    if not gallery.n_mistakes:
        return f"{gallery.label} gets all {gallery.n_test} test images right."
    more = f", the {shown} most confident shown" if shown < gallery.n_mistakes else ""
    return (f"{gallery.label} gets {gallery.n_mistakes} of {gallery.n_test} test images wrong{more} "
            "(most confident mistakes first; hover for the file).")


def to_markdown(blocks: list, base_dir: Path) -> str:
    """The same report in Markdown; images are referenced as PNG files relative to base_dir."""
    return "\n\n".join(_md_block(b, base_dir) for b in blocks) + "\n"


def _md_block(block, base_dir: Path) -> str:
    match block:
        case Heading(text, level, _):
            return "#" * level + " " + _md(text)
        case Items(lines, css):
            prefix = "> - " if css == "notes" else "- "
            return "\n".join(prefix + _md(line) for line in lines)
        case Paragraph(text):
            return _md(text)
        case Table(headers, rows, _, _):
            lines = [_md_row(map(_md, headers)), _md_row(["---"] * len(headers))]
            return "\n".join(lines + [_md_row(_md(c.text if isinstance(c, Cell) else c) for c in row) for row in rows])
        case Image(plot):
            return f"![{_md(plot.title)}]({Path(os.path.relpath(plot.path, base_dir)).as_posix()})"
        case Side(blocks) | Section(blocks, _):
            return "\n\n".join(_md_block(b, base_dir) for b in blocks)
        case Details(summary, blocks, _):
            return "\n\n".join(["#### " + _md(summary), *(_md_block(b, base_dir) for b in blocks)])
        case GalleryBlock(gallery):
            lines = [_md(gallery_heading(gallery))] + ([_md(gallery.note)] if gallery.note else [])
            if gallery.mistakes:
                table = [_md_row(["image", "true", "predicted", "probability"]), _md_row(["---"] * 4)]
                table += [_md_row([_md(m.path), _md(m.true), _md(m.predicted), f"{m.confidence:.0%}"])
                          for m in gallery.mistakes]
                lines.append("\n".join(table))
            return "\n\n".join(lines)
    raise TypeError(f"unknown block {block!r}")


def _md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _md(text) -> str:
    # HTML-escape (Markdown passes raw HTML through; quotes are harmless outside tags and stay readable), then
    # neutralise Markdown's own syntax.
    return re.sub(r"([\\`*_$\[\]|])", r"\\\1", html.escape(str(text), quote=False)).replace("\n", " ")
