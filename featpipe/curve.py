"""Label-efficiency curves: test accuracy of each head trained on k labelled images per class.

Protocol (as few-shot linear probes are reported, e.g. CLIP_benchmark and DINOv2's low-shot tables): for each
shot level k and repeat r, k training rows per class are drawn without replacement, stratified and seeded by
(seed, k, r) only, so every head trains on the same draws (a class with fewer than k rows contributes all of
them; "all" is the whole training split). Each head selects its hyperparameters on the full validation
split, as `featpipe train` does, and is scored once on the full test split. A point (head, k) reports the
mean test accuracy over the repeats, their standard deviation and a 95% t-interval over the repeats
(mean +- t(0.975, r-1) * sd / sqrt(r), clipped to [0, 1]); head seeds are seed + r, so "all" repeats differ
only by the head's own randomness. A head that reports none (`Head.seed_independent`: knn, logreg's lbfgs, svm's exact kernel)
is fitted once at "all" and that result is recorded for every repeat ("same_as_repeat": 0): a fit would
give the same numbers.

Files go to ``<runs_dir>/curves/<cache file stem>/``: curve.json (protocol, every trial, the points and the
summary sentences), curve.csv (the points) and curve.png. Each finished trial is written to curve.json at
once; a rerun with the same cache, heads, parameters and seed skips the trials it finds there.
`curves_for_report` is what a report reads.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featpipe import atomic
from featpipe.csvfile import write_csv
from featpipe.errors import FeatpipeError
from featpipe.runs import CURVES_DIR, read_json_object, write_json

CURVE_FILE = "curve.json"
CONFIDENCE = 0.95
# "within 1 point": the gap to the all-data accuracy the summary sentence looks for.
WITHIN = 0.01
INTERVAL = "95% t-interval over repeats: mean +- t(0.975, repeats - 1) * sd / sqrt(repeats), clipped to [0, 1]"


def parse_shots(text: str) -> list[int | None]:
    """``1,2,4,8,16,all`` -> [1, 2, 4, 8, 16, None] (None: every training row), sorted, duplicates dropped."""
    levels: set[int | None] = set()
    for item in text.split(","):
        item = item.strip().lower()
        if item == "all":
            levels.add(None)
        elif item.isdigit() and int(item) > 0:
            levels.add(int(item))
        else:
            raise FeatpipeError(f"bad --shots value {item!r}: expected positive integers and 'all', e.g. 1,2,4,8,all")
    return sorted(levels, key=lambda k: math.inf if k is None else k)


def shot_label(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


def draw(labels: np.ndarray, shots: int | None, repeat: int, seed: int) -> np.ndarray:
    """Sorted training row indices: `shots` rows per class (all of a smaller class), seeded by (seed, shots,
    repeat) alone, so every head of a curve gets the same draw."""
    if shots is None:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, shots, repeat])
    rows = [rng.choice(np.flatnonzero(labels == c), min(shots, int((labels == c).sum())), replace=False)
            for c in np.unique(labels)]
    return np.sort(np.concatenate(rows))


def interval(values: list[float]) -> tuple[float, float, list[float] | None]:
    """(mean, sample standard deviation, 95% t-interval clipped to [0, 1]) of per-repeat accuracies; no interval
    from one value."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, None
    if np.ptp(values) == 0:  # identical repeats (a deterministic head on all rows): no rounding noise
        return float(values[0]), 0.0, [float(values[0])] * 2
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean, sd, [max(mean - half, 0.0), min(mean + half, 1.0)]  # accuracies: clipped to [0, 1]


@dataclass
class CurveResult:
    directory: Path
    points: list[dict]
    sentences: list[str]
    trained: int  # trials run now
    reused: int  # trials found in curve.json

    def summary(self) -> dict:
        return {"directory": str(self.directory), "points": self.points, "summary": self.sentences,
                "trained": self.trained, "reused": self.reused}


def curve_dir(cache_path: str | os.PathLike, runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / CURVES_DIR / Path(cache_path).stem


def _trial_key(trial: dict) -> tuple:
    return trial["head"], json.dumps(trial["params"], sort_keys=True), trial["seed"], trial["shots"], trial["repeat"]


def _previous_trials(path: Path, cache_key: str, force: bool) -> list[dict]:
    if force or not path.is_file():
        return []
    saved = read_json_object(path)
    if saved.get("cache", {}).get("key") != cache_key:
        raise FeatpipeError(f"{path} holds a curve of another cache (its features changed?); pass --force to "
                            "replace it, or --runs-dir to keep both")
    return list(saved.get("trials", []))


def learning_curve(cache, heads: list, shots: list[int | None], repeats: int = 5, seed: int = 0,
                   runs_dir: str | os.PathLike = "runs", force: bool = False, progress=None) -> CurveResult:
    """Train each head (unfitted Head objects) on every (shot level, repeat) draw of the open FeatureCache,
    select on validation, score on test; write curve.json / .csv / .png, resuming from a previous curve.json.

    `progress(message)` is called after each trial, if given."""
    if repeats < 1:
        raise FeatpipeError(f"--repeats must be at least 1, got {repeats}")
    directory = atomic.make_dirs(curve_dir(cache.path, runs_dir))
    path = directory / CURVE_FILE
    trials = _previous_trials(path, cache.key, force)
    done = {_trial_key(t): t for t in trials}
    X, y = cache.features("train"), cache.labels("train")
    X_val, y_val = cache.features("validation"), cache.labels("validation")
    X_test, y_test = cache.features("test"), cache.labels("test")
    header = {"cache": {"path": str(Path(cache.path).resolve()), "key": cache.key, "classes": cache.classes},
              "protocol": protocol(repeats, seed)}
    trained = 0
    wanted = []
    for head in heads:
        for level in shots:
            for repeat in range(repeats):
                key = {"head": head.name, "params": head.params, "seed": seed, "shots": level, "repeat": repeat}
                wanted.append(_trial_key(key))
                if _trial_key(key) in done:
                    continue
                first = done.get(_trial_key({**key, "repeat": 0}))
                if level is None and repeat > 0 and first is not None and first.get("seed_independent"):
                    # The same rows, and a head that ignores its seed: this repeat's fit would be repeat 0's.
                    trial = {**first, **key, "seconds": 0.0, "same_as_repeat": 0}
                else:
                    trial = {**key, **_fit_and_score(head, seed + repeat, draw(y, level, repeat, seed), X, y,
                                                     (X_val, y_val), (X_test, y_test))}
                done[_trial_key(key)] = trial
                trials.append(trial)
                trained += 1
                write_json(path, {**header, "trials": trials})  # resumable: every finished trial is kept
                if progress:
                    progress(f"{head.name} shots={shot_label(level)} repeat {repeat + 1}/{repeats}: "
                             f"test acc {trial['test_accuracy']:.4f} ({trial['seconds']:.1f}s)")
    chosen = [done[key] for key in wanted]
    points = curve_points(chosen)
    sentences = [summary_sentence(points, name) for name in dict.fromkeys(h.name for h in heads)]
    write_json(path, {**header, "trials": trials, "points": points, "summary": sentences})
    write_csv(directory / "curve.csv", ["head", "shots", "repeats", "mean", "sd", "ci_low", "ci_high"],
              ([p["head"], p["shots"], p["repeats"], p["mean"], p["sd"], *(p["ci"] or ["", ""])] for p in points))
    plot_curve(points, directory / "curve.png", Path(cache.path).name)
    return CurveResult(directory, points, sentences, trained, len(chosen) - trained)


def _fit_and_score(head, seed: int, rows: np.ndarray, X, y, validation, test) -> dict:
    from sklearn.base import clone

    start = time.perf_counter()
    fitted = clone(head).set_params(random_state=seed)
    fitted.fit(X[rows], y[rows], X_val=validation[0], y_val=validation[1])
    return {"train_rows": len(rows), "best_params": fitted.best_params_,
            "val_accuracy": float(fitted.selection_["grid"][_best_index(fitted)]["score"]),
            "test_accuracy": float((fitted.predict(test[0]) == test[1]).mean()),
            "seed_independent": fitted.seed_independent(), "seconds": round(time.perf_counter() - start, 3)}


def _best_index(head) -> int:
    return [g["params"] for g in head.selection_["grid"]].index(head.best_params_)


def protocol(repeats: int, seed: int) -> dict:
    return {"draws": "k training rows per class without replacement (all rows of a smaller class), seeded by "
                     "(seed, k, repeat), the same for every head", "repeats": repeats, "seed": seed,
            "head_seed": "seed + repeat", "selection": "each head's grid on the full validation split",
            "evaluation": "accuracy on the full test split", "interval": INTERVAL}


def curve_points(trials: list[dict]) -> list[dict]:
    """One point per (head, shots), in the trials' order: mean, sd and 95% t-interval of test accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for trial in trials:
        groups.setdefault((trial["head"], trial["shots"]), []).append(trial)
    points = []
    for (head, shots), group in groups.items():
        mean, sd, ci = interval([t["test_accuracy"] for t in group])
        points.append({"head": head, "shots": shot_label(shots), "repeats": len(group), "mean": mean, "sd": sd,
                       "ci": ci, "train_rows": [t["train_rows"] for t in group][0]})
    return points


def summary_sentence(points: list[dict], head: str, within: float = WITHIN) -> str:
    """How many labelled images per class the head needs to come within `within` of its all-data accuracy."""
    mine = [p for p in points if p["head"] == head]
    full = next((p for p in mine if p["shots"] == "all"), None)
    numeric = [p for p in mine if p["shots"] != "all"]
    if full is None or not numeric:
        return f"{head}: needs an 'all' level and at least one k-shot level to say how many labels it needs"
    gap = f"{100 * within:g} point{'s' if within != 0.01 else ''}"
    reached = next((p for p in numeric if p["mean"] >= full["mean"] - within), None)
    if reached is None:
        last = numeric[-1]
        return (f"{head} stays more than {gap} under its all-data accuracy ({full['mean']:.3f}) up to "
                f"{_images(last['shots'])} per class ({last['mean']:.3f})")
    return (f"{head} reaches within {gap} of its all-data accuracy ({full['mean']:.3f}) from "
            f"{_images(reached['shots'])} per class ({reached['mean']:.3f})")


def _images(shots: str) -> str:
    return f"{shots} image{'' if shots == '1' else 's'}"


def plot_curve(points: list[dict], path: Path, title: str) -> Path:
    """Mean test accuracy against images per class (log scale, "all" at the right end), 95% intervals as bars."""
    from matplotlib.figure import Figure

    numeric = sorted({int(p["shots"]) for p in points if p["shots"] != "all"})
    all_x = (numeric[-1] * 2 if numeric else 1)
    x_of = {str(k): k for k in numeric} | {"all": all_x}
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for head in dict.fromkeys(p["head"] for p in points):
        mine = [p for p in points if p["head"] == head]
        xs = [x_of[p["shots"]] for p in mine]
        means = np.array([p["mean"] for p in mine])
        low = np.array([p["ci"][0] if p["ci"] else p["mean"] for p in mine])
        high = np.array([p["ci"][1] if p["ci"] else p["mean"] for p in mine])
        ax.errorbar(xs, means, yerr=[means - low, high - means], marker="o", capsize=3, label=head)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(x_of.values()), list(x_of))
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Label efficiency: {title}\n(mean over repeats, bars: 95% t-interval)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def curves_for_report(runs_dir: str | os.PathLike, cache_stems: list[str] | None = None) -> list[dict]:
    """For a report: every finished curve under ``<runs_dir>/curves/`` (of the given cache file stems, if any),
    as {"cache": stem, "cache_key", "json", "png", "csv", "points", "summary", "protocol"}; unreadable or
    unfinished curve files are skipped."""
    root = Path(runs_dir) / CURVES_DIR
    found = []
    for path in sorted(root.glob(f"*/{CURVE_FILE}")):
        stem = path.parent.name
        if cache_stems is not None and stem not in cache_stems:
            continue
        try:
            saved = read_json_object(path)
        except FeatpipeError:
            continue
        if "points" not in saved:
            continue
        found.append({"cache": stem, "cache_key": saved.get("cache", {}).get("key"), "json": path,
                      "png": path.parent / "curve.png", "csv": path.parent / "curve.csv", "points": saved["points"],
                      "summary": saved.get("summary", []), "protocol": saved.get("protocol", {})})
    return found
