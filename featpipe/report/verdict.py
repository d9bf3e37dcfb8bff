"""The verdict, one per dataset: the best run (selected on validation), the runs the paired test cannot tell
from it, what the end-to-end path bought over the cached one, what pretraining bought; in numbers and in words.

Runs of different datasets (dataset fingerprints) are never compared: each dataset gets its own verdict. The
statistics come from featpipe.report.statistics; every renderer shows the numbers computed here.
"""

from __future__ import annotations

from pathlib import PurePath

from featpipe.report import statistics as stats

CACHED, END_TO_END = "cached", "end-to-end"
ENTRY_KEYS = ("name", "label", "backbone", "head", "path", "pretrained", "val_accuracy", "test_accuracy",
              "test_accuracy_ci", "test_n", "total_seconds", "run_dir")
LISTED = 8  # runs named per sentence before "and N more"


def rank_key(row: dict) -> tuple:
    """Best first: validation accuracy (the honest selection), then test accuracy, then less compute."""
    return (-row["val_accuracy"], -row["test_accuracy"], row["total_seconds"])


def dataset_key(run: dict) -> str:
    """Which dataset a run was evaluated on: its fingerprint (the root when an old run lacks one)."""
    dataset = run["run"].get("dataset") or {}
    return str(dataset.get("fingerprint") or dataset.get("root") or "unknown")


def dataset_facts(run: dict) -> dict:
    dataset = run["run"].get("dataset") or {}
    root = dataset.get("root")
    return {"fingerprint": dataset.get("fingerprint"), "root": root,
            "name": PurePath(str(root)).name if root else "unknown", "classes": dataset.get("classes")}


def make_verdicts(runs: list[dict]) -> list[dict]:
    """One verdict per dataset, in the order the datasets first appear among the (ranked) runs."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(dataset_key(run), []).append(run)
    return [make_verdict(group) for group in groups.values()]


def make_verdict(runs: list[dict]) -> dict:
    """The verdict over runs of one dataset (each a loaded run with its summary "row" and "predictions")."""
    by_name = {run["row"]["name"]: run for run in runs}
    rows = [run["row"] for run in runs]
    best = min(rows, key=rank_key)
    comparisons, untested = _compare_with_best(by_name[best["name"]], [by_name[r["name"]] for r in rows
                                                                       if r is not best])
    tested = [c for c in comparisons if c["p_holm"] is not None]
    cached, e2e = _best(rows, CACHED), _best(rows, END_TO_END)
    verdict = {
        "dataset": dataset_facts(runs[0]),
        "dataset_key": dataset_key(runs[0]),
        "best": best["name"],
        "ties": [c["name"] for c in tested if c["tie"]],
        "test": stats.TEST_NAME if tested else None,
        "test_description": stats.TEST_DESCRIPTION if tested else None,
        "interval": stats.INTERVAL_DESCRIPTION,
        "confidence": stats.CONFIDENCE,
        "best_run": _entry(best),
        "comparisons": comparisons,
        "untested": untested,
        "best_cached": _entry(cached),
        "best_end_to_end": _entry(e2e),
        "end_to_end_vs_cached": _end_to_end_vs_cached(by_name, cached, e2e, best, comparisons),
        "pretrained_vs_random": _pretrained_vs_random(rows),
        "warnings": _warnings(by_name[best["name"]]),
    }
    verdict["lines"] = verdict_lines(verdict)
    return verdict


def _test_predictions(run: dict):
    found = run.get("predictions")
    return None if found is None else found.get("test")


def _compare_with_best(best: dict, others: list[dict]) -> tuple[list[dict], list[dict]]:
    """McNemar's exact test of the best against each other run on the same images, Holm-adjusted together."""
    best_rows = _test_predictions(best)
    comparisons, untested = [], []
    for run in others:
        row = run["row"]
        reason, paired = None, None
        if best_rows is None:
            reason = f"the best run ({best['row']['label']}) has no per-image predictions"
        elif _test_predictions(run) is None:
            reason = run.get("predictions_problem") or "no per-image predictions"
        else:
            outcomes = stats.paired_outcomes(best_rows, _test_predictions(run))
            if outcomes is None:
                reason = "scored on other test images than the best run"
            else:
                paired = stats.mcnemar_exact(*outcomes)
        if paired is None:
            untested.append({"name": row["name"], "label": row["label"], "reason": reason})
        else:
            comparisons.append({"name": row["name"], "label": row["label"], "test_accuracy": row["test_accuracy"],
                                "test_accuracy_ci": row["test_accuracy_ci"], **paired.to_json()})
    for comparison, adjusted in zip(comparisons, stats.holm([c["p_value"] for c in comparisons])):
        comparison["p_holm"] = adjusted
        comparison["tie"] = adjusted >= stats.ALPHA
    return comparisons, untested


def _end_to_end_vs_cached(by_name: dict, cached: dict | None, e2e: dict | None, best: dict,
                          comparisons: list[dict]) -> dict | None:
    """What end-to-end bought over the best cached run. One planned comparison, so its own p-value; but where the
    pair is one the verdict already tested (one of the two is the best), the Holm-adjusted p-value decides, so
    the page never calls one pair both a tie and beyond noise."""
    if not (cached and e2e):
        return None
    paired, p_decides = None, None
    a, b = _test_predictions(by_name[e2e["name"]]), _test_predictions(by_name[cached["name"]])
    if a is not None and b is not None and (outcomes := stats.paired_outcomes(a, b)) is not None:
        paired = stats.mcnemar_exact(*outcomes)
        p_decides = paired.p_value
        other = {cached["name"], e2e["name"]} - {best["name"]}
        if len(other) == 1:
            (name,) = other
            p_decides = next((c["p_holm"] for c in comparisons if c["name"] == name), p_decides)
    return {
        "test_accuracy_delta": e2e["test_accuracy"] - cached["test_accuracy"],
        "compute_ratio": e2e["total_seconds"] / cached["total_seconds"] if cached["total_seconds"] > 0 else None,
        "test": stats.TEST_NAME if paired else None,
        "p_value": paired.p_value if paired else None,
        "p_decides": p_decides,  # Holm-adjusted when the pair includes the best run, else p_value
        "beyond_noise": p_decides < stats.ALPHA if paired else None,
    }


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


def _warnings(best: dict) -> list[str]:
    """What makes the selection itself shaky."""
    warnings = []
    validation = best["metrics"].get("validation") or {}
    per_class = validation.get("per_class") or {}
    present = [c for c, v in per_class.items() if isinstance(v, dict) and v.get("support")]
    if per_class and len(present) < 2:
        warnings.append(f"The best run's validation split holds one class only ({', '.join(present) or 'none'}): "
                        "selection on validation accuracy says little here.")
    n = validation.get("n")
    if isinstance(n, int) and n < 30:
        warnings.append(f"The validation split has {n} images: the selection of the best run is itself noisy.")
    return warnings


def _best(rows: list[dict], path: str) -> dict | None:
    candidates = [r for r in rows if r["path"] == path]
    return min(candidates, key=rank_key) if candidates else None


def _entry(row: dict | None) -> dict | None:
    return {k: row.get(k) for k in ENTRY_KEYS} if row else None


# --- in words ---------------------------------------------------------------------------------------------------

def accuracy_text(accuracy: float | None, ci) -> str:
    """95.5% [94.5, 96.3]: the interval in percentage points of accuracy."""
    if accuracy is None:
        return "—"
    text = f"{accuracy:.1%}"
    return f"{text} [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else text


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _names(items: list[str]) -> str:
    shown = items[:LISTED]
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    if len(shown) == 1:
        return shown[0] + more
    return ", ".join(shown[:-1]) + (f", {shown[-1]}" + more if more else f" and {shown[-1]}")


def verdict_lines(verdict: dict) -> list[str]:
    """The verdict as plain sentences (renderers escape them)."""
    best = verdict["best_run"]
    lines = [f"Best run, selected on validation accuracy: {best['label']}, test accuracy "
             f"{accuracy_text(best['test_accuracy'], best['test_accuracy_ci'])}"
             f"{_n(best)}, validation {best['val_accuracy']:.1%}."]
    ties = [c for c in verdict["comparisons"] if c["tie"]]
    worse = [c for c in verdict["comparisons"] if not c["tie"]]
    if ties:
        test = "McNemar's exact test, Holm-adjusted, 95%"
        numbers = "; ".join(f"{c['label']} {accuracy_text(c['test_accuracy'], c['test_accuracy_ci'])}, "
                            f"{p_text(c['p_holm'])}" for c in ties[:LISTED])
        if len(ties) < LISTED:
            lines.append(f"{_names([best['label'], *(c['label'] for c in ties)])} are within noise of each other "
                         f"({test}): {numbers}.")
        else:
            lines.append(f"{len(ties)} runs are within noise of the best ({test}), among them {numbers}; "
                         "the summary table's \"vs best\" column marks them all.")
    elif verdict["comparisons"]:
        lines.append("Every other run scored on the same test images is worse than the best beyond noise "
                     "(McNemar's exact test, Holm-adjusted, 95%).")
    if ties and worse:
        lines.append(f"Worse beyond noise: {_names([c['label'] for c in worse])}." if len(worse) <= LISTED else
                     f"{len(worse)} runs are worse than the best beyond noise.")
    if verdict["untested"]:
        reasons: dict[str, list[str]] = {}
        for item in verdict["untested"]:
            reasons.setdefault(item["reason"], []).append(item["label"])
        for reason, labels in reasons.items():
            retrain = " (retrain with this featpipe to record them)" if "per-image predictions" in reason else ""
            lines.append(f"Not in the paired comparison, {reason}{retrain}: {_names(labels)}; "
                         "compare their intervals only.")
    for key, label in (("best_cached", "cached"), ("best_end_to_end", "end-to-end")):
        if verdict[key] is None:
            lines.append(f"No {label} run, so no end-to-end vs cached comparison.")
    comparison = verdict["end_to_end_vs_cached"]
    if comparison is not None:
        e2e, cached = verdict["best_end_to_end"], verdict["best_cached"]
        delta = comparison["test_accuracy_delta"] * 100
        change = f"gained {delta:.1f}" if delta > 0 else f"lost {-delta:.1f}" if delta < 0 else "changed by 0.0"
        if comparison["beyond_noise"] is None:
            noise = "not tested paired (no per-image predictions for both)"
        else:
            adjusted = ", Holm-adjusted" if comparison["p_decides"] != comparison["p_value"] else ""
            noise = ("beyond noise" if comparison["beyond_noise"] else "within noise") + \
                f" (McNemar's exact test{adjusted}, {p_text(comparison['p_decides'])})"
        ratio = comparison["compute_ratio"]
        cost = (f"{ratio:.1f}× the compute" if ratio is not None
                else "an undefined compute ratio (the cached run reports 0 s)")
        lines.append(
            f"End-to-end ({e2e['label']}) {change} points of test accuracy against the best cached run "
            f"({cached['label']}), {noise}, at {cost} ({e2e['total_seconds']:.1f} s vs {cached['total_seconds']:.1f} s)."
        )
    versus = verdict.get("pretrained_vs_random")
    if versus is not None:
        delta = versus["test_accuracy_delta"] * 100
        pre, rnd = versus["pretrained"], versus["random"]
        lines.append(
            f"Pretrained vs random: the {pre['head']} head scores "
            f"{accuracy_text(pre['test_accuracy'], pre['test_accuracy_ci'])} on the pretrained base and "
            f"{accuracy_text(rnd['test_accuracy'], rnd['test_accuracy_ci'])} on a random-initialised copy of it "
            f"({'+' if delta >= 0 else '−'}{abs(delta):.1f} points for pretraining)."
        )
    return lines + list(verdict["warnings"])


def _n(entry: dict) -> str:
    return f" on {entry['test_n']} test images" if entry.get("test_n") else ""
