"""The report as a list of blocks, and the two ways to write it: one self-contained HTML file and Markdown.

Blocks hold plain, unescaped text; each writer escapes every piece of it, so user text (run names,
class names, paths, params, notes) can never become markup.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from featpipe.report.plots import Plot


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
class Table:
    headers: list[str]
    rows: list[list[str]]
    table_id: str | None = None


@dataclass(frozen=True)
class Image:
    plot: Plot


# (header, row key, format) of the summary table; formats are those of _fmt.
SUMMARY_COLUMNS = (
    ("#", "rank", ""), ("run", "name", ""), ("backbone", "backbone", ""), ("head", "head", ""),
    ("path", "path", ""), ("pretrained", "pretrained", ""), ("image size", "image_size", "size"),
    ("val acc", "val_accuracy", ".2%"), ("test acc", "test_accuracy", ".2%"),
    ("test bal. acc", "test_balanced_accuracy", ".2%"), ("test log loss", "test_log_loss", ".4f"),
    ("test ROC AUC", "test_roc_auc", ".4f"), ("extract s", "extract_seconds", ".1f"),
    ("fit s", "fit_seconds", ".1f"), ("total s", "total_seconds", ".1f"),
)
SPLIT_COLUMNS = (
    ("n", "n", ""), ("accuracy", "accuracy", ".2%"), ("balanced accuracy", "balanced_accuracy", ".2%"),
    ("log loss", "log_loss", ".4f"), ("ROC AUC", "roc_auc", ".4f"),
)
PER_CLASS_COLUMNS = (
    ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("F1", "f1", ".3f"), ("support", "support", ""),
)


def build_document(title: str, notes: list[str], runs: list[dict], verdict: dict,
                   skipped: list[dict], plots: list[Plot]) -> list:
    blocks: list = [Heading(title, 1)]
    if notes:
        blocks.append(Items(list(notes), "notes"))
    lines = list(verdict["lines"])
    if skipped:
        lines.append(f"{len(skipped)} run(s) skipped as unfinished or unreadable: see Skipped runs.")
    blocks += [Heading("Verdict", 2, "verdict"), Items(lines, "verdict")]
    blocks += [
        Heading("Summary", 2),
        Table([h for h, _, _ in SUMMARY_COLUMNS],
              [[_fmt(run["row"][key], spec) for _, key, spec in SUMMARY_COLUMNS] for run in runs], "summary"),
    ]
    blocks.append(Heading("Plots", 2, "plots"))
    blocks += [Image(p) for p in plots if p.run_dir is None]
    blocks.append(Heading("Runs", 2, "runs"))
    for run in runs:
        blocks += _run_blocks(run, [p for p in plots if p.run_dir == run["row"]["run_dir"]])
    blocks.append(Heading("Skipped runs", 2, "skipped"))
    if skipped:
        blocks.append(Table(["run directory", "name", "reason"],
                            [[s["run_dir"], _fmt(s["name"]), s["reason"]] for s in skipped], "skipped-runs"))
    else:
        blocks.append(Paragraph("No runs were skipped."))
    return blocks


def _run_blocks(run: dict, plots: list[Plot]) -> list:
    info, metrics, row = run["run"], run["metrics"], run["row"]
    cache, dataset = info.get("cache") or {}, info.get("dataset") or {}
    selection = metrics.get("selection") or {}
    details = [
        ("run directory", row["run_dir"]), ("kind", info.get("kind")), ("path", info.get("path")),
        ("head", info.get("head")), ("backbone", info.get("backbone")), ("weights", info.get("weights")),
        ("pretrained", "no (random-initialised)" if info.get("pretrained") is False else info.get("pretrained")),
        ("image size", _fmt(info.get("image_size"), "size")), ("pooling", info.get("pooling")),
        ("cache", cache.get("path")), ("cache key", cache.get("key")),
        ("dataset root", dataset.get("root")), ("dataset fingerprint", dataset.get("fingerprint")),
        ("classes", ", ".join(map(str, dataset.get("classes") or []))),
        ("params", info.get("params")), ("selected params", selection.get("best_params")),
        ("fitted with", info.get("fit")),  # a head's solver / kernel approximation / validation source
        ("seed", info.get("seed")), ("created", info.get("created")),
        *((f"timing: {k}", v) for k, v in (metrics.get("timing") or {}).items()),
        ("versions", info.get("versions")),
    ]
    blocks = [
        Heading(f"#{row['rank']} {row['name']}", 3, f"run-{row['rank']}"),
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
    return blocks + [Image(p) for p in plots]


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
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td { overflow-wrap: break-word; max-width: 40em; }
#summary td { white-space: nowrap; }
.table-wrap { overflow-x: auto; }
ul.notes { background: #fff4d6; border: 1px solid #e0c060; padding: 0.6em 2em; }
ul.verdict { background: #eef5ff; border: 1px solid #9bbce0; padding: 0.6em 2em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
h3 { margin-top: 2em; border-top: 1px solid #ddd; padding-top: 0.8em; }
"""


def to_html(blocks: list, title: str) -> str:
    """One self-contained page: inline CSS, images as data URIs, no scripts, no external resources."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


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
        case Table(headers, rows, table_id):
            id_attr = f' id="{_esc(table_id)}"' if table_id else ""
            head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>\n" for row in rows)
            # Wide tables scroll on their own instead of stretching the page.
            return (f'<div class="table-wrap"><table{id_attr}>\n<thead><tr>{head}</tr></thead>\n'
                    f"<tbody>\n{body}</tbody>\n</table></div>")
        case Image(plot):
            data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
            return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(plot.title)}">'
                    f"<figcaption>{_esc(plot.title)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


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
        case Table(headers, rows, _):
            lines = [_md_row(map(_md, headers)), _md_row(["---"] * len(headers))]
            return "\n".join(lines + [_md_row(map(_md, row)) for row in rows])
        case Image(plot):
            return f"![{_md(plot.title)}]({Path(os.path.relpath(plot.path, base_dir)).as_posix()})"
    raise TypeError(f"unknown block {block!r}")


def _md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _md(text) -> str:
    # HTML-escape (Markdown passes raw HTML through), then neutralise Markdown's own syntax.
    return re.sub(r"([\\`*_$\[\]|])", r"\\\1", _esc(text)).replace("\n", " ")
