"""Gather run directories into ranked summary rows, the skipped runs, and the verdict."""

from __future__ import annotations

import os
from pathlib import Path

from featpipe import csvfile
from featpipe.errors import FeatpipeError
from featpipe.runs import METRICS_FILE, RUN_FILE, find_runs, load_run, read_run_file, verified_model_file

# The summary's columns, in the order of summary.csv.
COLUMNS = (
    "rank", "name", "backbone", "head", "path", "kind", "weights", "pretrained", "image_size",
    "val_accuracy", "test_accuracy", "test_balanced_accuracy", "test_log_loss", "test_roc_auc",
    "extract_seconds", "extract_images_per_second", "fit_seconds", "total_seconds", "run_dir",
)
CACHED, END_TO_END = "cached", "end-to-end"


def collect_runs(paths: list[str | os.PathLike]) -> tuple[list[dict], list[dict]]:
    """(runs, skipped): the loaded runs ranked best first, each with its summary "row",
    and the skipped ones as {run_dir, name, reason}."""
    runs, skipped, seen = [], [], set()
    for path in paths:
        try:
            finished, unfinished = find_runs([path])
        except FeatpipeError as e:
            skipped.append({"run_dir": str(path), "name": None, "reason": str(e)})
            continue
        for run_dir in finished + unfinished:
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            if run_dir in unfinished:
                skipped.append(_skip(run_dir, _unfinished_reason(run_dir)))
                continue
            try:
                loaded = load_run(run_dir)
                verified_model_file(run_dir, loaded["run"])  # a run whose model was swapped is not reported
                loaded["row"] = summary_row(loaded)
            except FeatpipeError as e:
                skipped.append(_skip(run_dir, str(e)))
                continue
            runs.append(loaded)
    runs.sort(key=lambda r: rank_key(r["row"]))
    for rank, run in enumerate(runs, 1):
        run["row"]["rank"] = rank
    return runs, skipped


def _skip(run_dir: Path, reason: str) -> dict:
    return {"run_dir": str(run_dir), "name": _run_name(run_dir), "reason": reason}


def _run_name(run_dir: Path) -> str | None:
    try:
        info = read_run_file(run_dir)
    except FeatpipeError:
        return None
    return info.get("name") if isinstance(info, dict) else None


def _unfinished_reason(run_dir: Path) -> str:
    path = run_dir / RUN_FILE
    if not path.is_file():
        return f"no {RUN_FILE}: the run did not finish"
    try:
        info = read_run_file(run_dir)
    except FeatpipeError as e:
        return str(e)
    status = info.get("status")
    return f"{RUN_FILE} status is {status!r}, not 'complete'"


def summary_row(loaded: dict) -> dict:
    """One summary row; numbers are taken verbatim from metrics.json so they agree exactly."""
    record, metrics = loaded["record"], loaded["metrics"]
    try:
        val, test, timing = metrics["validation"], metrics["test"], metrics["timing"]
        val_accuracy, test_accuracy, total_seconds = val["accuracy"], test["accuracy"], timing["total_seconds"]
    except (KeyError, TypeError) as e:
        raise FeatpipeError(f"{loaded['dir']}: {METRICS_FILE} lacks {e}") from None
    if not all(isinstance(v, (int, float)) for v in (val_accuracy, test_accuracy, total_seconds)):
        raise FeatpipeError(f"{loaded['dir']}: {METRICS_FILE} has no numeric accuracies or total_seconds")
    return {
        "rank": None,
        "name": record.name,
        "backbone": record.backbone,
        "head": record.head,
        "path": record.path,
        "kind": record.kind,
        "weights": record.weights,
        "pretrained": record.pretrained,
        "image_size": record.image_size,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "test_log_loss": test.get("log_loss"),
        "test_roc_auc": test.get("roc_auc"),
        "extract_seconds": timing.get("extract_seconds"),
        "extract_images_per_second": timing.get("extract_images_per_second"),
        "fit_seconds": timing.get("fit_seconds"),
        "total_seconds": total_seconds,
        "run_dir": str(loaded["dir"]),
    }


def rank_key(row: dict) -> tuple:
    """Best first: validation accuracy (the honest selection), then test accuracy, then less compute."""
    return (-row["val_accuracy"], -row["test_accuracy"], row["total_seconds"])


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """summary.csv: one line per run in COLUMNS order, spreadsheet-safe, written atomically."""
    def cells(row: dict) -> list:
        size = row["image_size"]
        row = {**row, "image_size": "x".join(map(str, size)) if size else None}
        return ["" if row[column] is None else row[column] for column in COLUMNS]

    csvfile.write_csv(path, list(COLUMNS), map(cells, rows))


def make_verdict(rows: list[dict]) -> dict:
    """The best run overall, per path, and what end-to-end bought over the best cached run."""
    best = min(rows, key=rank_key)
    cached = _best(rows, CACHED)
    e2e = _best(rows, END_TO_END)
    comparison = None
    if cached and e2e:
        comparison = {
            "test_accuracy_delta": e2e["test_accuracy"] - cached["test_accuracy"],
            "compute_ratio": e2e["total_seconds"] / cached["total_seconds"] if cached["total_seconds"] > 0 else None,
        }
    verdict = {
        "best": _entry(best),
        "best_cached": _entry(cached),
        "best_end_to_end": _entry(e2e),
        "end_to_end_vs_cached": comparison,
        "pretrained_vs_random": _pretrained_vs_random(rows),
    }
    verdict["lines"] = verdict_lines(verdict)
    return verdict


def _pretrained_vs_random(rows: list[dict]) -> dict | None:
    """The best cached run on a pretrained base against the same head on a random-initialised copy of it."""
    pretrained = _best([r for r in rows if r["pretrained"] is True], CACHED)
    if pretrained is None:
        return None
    control = _best([r for r in rows if r["pretrained"] is False and r["head"] == pretrained["head"]
                     and r["backbone"] == pretrained["backbone"]], CACHED)
    if control is None:
        return None
    return {"pretrained": _entry(pretrained), "random": _entry(control),
            "test_accuracy_delta": pretrained["test_accuracy"] - control["test_accuracy"]}


def _best(rows: list[dict], path: str) -> dict | None:
    candidates = [r for r in rows if r["path"] == path]
    return min(candidates, key=rank_key) if candidates else None


def _entry(row: dict | None) -> dict | None:
    keys = ("name", "backbone", "head", "path", "pretrained", "val_accuracy", "test_accuracy", "total_seconds",
            "run_dir")
    return {k: row[k] for k in keys} if row else None


def verdict_lines(verdict: dict) -> list[str]:
    """The verdict as plain sentences (renderers escape them)."""
    lines = [f"Best run, selected on validation accuracy: {_describe(verdict['best'])}."]
    for key, label in (("best_cached", "cached"), ("best_end_to_end", "end-to-end")):
        entry = verdict[key]
        lines.append(f"Best {label} run: {_describe(entry)}." if entry
                     else f"No {label} run, so no end-to-end vs cached comparison.")
    comparison = verdict["end_to_end_vs_cached"]
    if comparison is not None:
        delta = comparison["test_accuracy_delta"] * 100
        change = f"gained {delta:.2f}" if delta > 0 else f"lost {-delta:.2f}" if delta < 0 else "changed by 0.00"
        ratio = comparison["compute_ratio"]
        cost = (f"{ratio:.1f}× the compute" if ratio is not None
                else "undefined compute ratio (the cached run reports 0 s)")
        lines.append(
            f"End-to-end {change} percentage points of test accuracy against the best cached run, at {cost} "
            f"({verdict['best_end_to_end']['total_seconds']:.1f} s vs {verdict['best_cached']['total_seconds']:.1f} s)."
        )
    versus = verdict.get("pretrained_vs_random")
    if versus is not None:
        delta = versus["test_accuracy_delta"] * 100
        lines.append(
            f"Pretrained vs random: the {versus['pretrained']['head']} head scores "
            f"{versus['pretrained']['test_accuracy']:.2%} test accuracy on the pretrained base and "
            f"{versus['random']['test_accuracy']:.2%} on a random-initialised copy of it "
            f"({'+' if delta >= 0 else '−'}{abs(delta):.2f} percentage points for pretraining)."
        )
    return lines


def _describe(entry: dict) -> str:
    random = ", random-initialised base" if entry.get("pretrained") is False else ""
    return (
        f"{entry['name']} ({entry['backbone']}{random}, {entry['head']}, {entry['path']}): "
        f"validation {entry['val_accuracy']:.2%}, test {entry['test_accuracy']:.2%}, "
        f"{entry['total_seconds']:.1f} s of compute"
    )
