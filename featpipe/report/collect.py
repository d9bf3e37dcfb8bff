"""Gather run directories into summary rows (ranked within their dataset, labelled), with each run's per-image
predictions where it recorded them, and the skipped runs."""

from __future__ import annotations

import os
from pathlib import Path

from featpipe import csvfile
from featpipe.errors import FeatpipeError
from featpipe.report.labels import make_labels
from featpipe.report.statistics import accuracy_interval
from featpipe.report.verdict import dataset_facts, dataset_key, rank_key
from featpipe.run_predictions import read_predictions
from featpipe.runs import METRICS_FILE, RUN_FILE, find_runs, load_run, read_run_file, verified_model_file

# The summary's columns, in the order of summary.csv.
COLUMNS = (
    "dataset", "rank", "label", "name", "backbone", "head", "path", "kind", "weights", "pretrained", "image_size",
    "val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high", "test_n", "test_ece",
    "test_balanced_accuracy", "test_log_loss", "test_roc_auc",
    "extract_seconds", "extract_images_per_second", "fit_seconds", "total_seconds", "dataset_fingerprint", "run_dir",
)


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
            _load_predictions(loaded)
            runs.append(loaded)
    return rank_runs(runs), skipped


def rank_runs(runs: list[dict]) -> list[dict]:
    """Runs grouped by dataset (the dataset of the best run first), ranked within it; labels set over all."""
    runs = sorted(runs, key=lambda r: rank_key(r["row"]))
    order = list(dict.fromkeys(dataset_key(run) for run in runs))
    runs.sort(key=lambda r: order.index(dataset_key(r)))  # stable: the ranking holds within each dataset
    rank: dict[str, int] = {}
    for number, run in enumerate(runs, 1):
        key = dataset_key(run)
        rank[key] = rank.get(key, 0) + 1
        run["row"]["rank"] = rank[key]
        run["number"], run["dataset_key"] = number, key  # number: the run's # in the table and on plots
    for run, label in zip(runs, make_labels([run["run"] for run in runs])):
        run["row"]["label"] = label
    return runs


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


def _load_predictions(loaded: dict) -> None:
    """loaded["predictions"]: {split: SplitPredictions} or None, and why not in "predictions_problem"."""
    loaded["predictions"], loaded["predictions_problem"] = None, None
    try:
        loaded["predictions"] = read_predictions(loaded["dir"], loaded["run"])
    except FeatpipeError as e:
        loaded["predictions_problem"] = f"per-image predictions unusable ({e})"
        return
    if loaded["predictions"] is None:
        loaded["predictions_problem"] = "no per-image predictions (a run made before featpipe recorded them)"


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
    n = test.get("n")
    ci = accuracy_interval(test_accuracy, n)
    dataset = dataset_facts(loaded)
    return {
        "dataset": dataset["name"],
        "rank": None,
        "label": None,  # set over all runs of the report (labels say what distinguishes runs)
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
        "test_accuracy_ci": list(ci) if ci else None,
        "test_n": n if isinstance(n, int) else None,
        "test_ece": test.get("ece"),
        "val_ece": val.get("ece"),
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "test_log_loss": test.get("log_loss"),
        "test_roc_auc": test.get("roc_auc"),
        "extract_seconds": timing.get("extract_seconds"),
        "extract_images_per_second": timing.get("extract_images_per_second"),
        "fit_seconds": timing.get("fit_seconds"),
        "total_seconds": total_seconds,
        "dataset_fingerprint": dataset["fingerprint"],
        "run_dir": str(loaded["dir"]),
    }


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """summary.csv: one line per run in COLUMNS order, spreadsheet-safe, written atomically."""
    def cells(row: dict) -> list:
        size, ci = row["image_size"], row["test_accuracy_ci"] or [None, None]
        row = {**row, "image_size": "x".join(map(str, size)) if size else None,
               "test_accuracy_ci_low": ci[0], "test_accuracy_ci_high": ci[1]}
        return ["" if row[column] is None else row[column] for column in COLUMNS]

    csvfile.write_csv(path, list(COLUMNS), map(cells, rows))
