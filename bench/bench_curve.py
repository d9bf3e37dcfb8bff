"""Time of a label-efficiency curve: `featpipe curve` with 6 shot levels x 5 repeats x 2 heads (logreg, knn)
on a generated cache of 2,000 training rows x 256 features (10 classes; validation and test 500 rows each).

The features are synthetic: 10 classes that differ in a few latent directions, mixed into non-negative,
correlated dimensions (ReLU of a random projection plus noise, like pooled CNN features). The curve runs the
library function `featpipe.curve.learning_curve` as the CLI does (every trial written to curve.json, the CSV
and the plot included), in this process; TensorFlow is not imported (neither head needs it). The 1-minute
load average is printed: the machine may be shared, and figures vary with the load.

Target on a 2-core CPU: well under 2 minutes.

Usage: python bench/bench_curve.py [--shots 1,2,4,8,16,all] [--repeats 5] [--heads logreg,knn] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 120.0  # seconds
LATENT, CLASSES, DIM = 32, 10, 256
ROWS = {"train": 2000, "validation": 500, "test": 500}


def make_problem(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(LATENT, DIM)) / np.sqrt(LATENT)
    centres = rng.normal(0, 0.9, (CLASSES, LATENT))
    data = {}
    for split, n in ROWS.items():
        labels = np.sort(np.arange(n) % CLASSES)  # sorted by class, as an extraction writes them
        latent = centres[labels] + rng.normal(size=(n, LATENT))
        data[split] = (np.maximum(latent @ mixing + rng.normal(size=(n, DIM)), 0).astype(np.float32), labels)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="1,2,4,8,16,all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heads", default="logreg,knn")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 levels x 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.shots, args.repeats = "1,all", 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from heads_fixtures import write_cache

    from featpipe.curve import learning_curve, parse_shots
    from featpipe.heads import make_head
    from featpipe.store import FeatureCache

    with tempfile.TemporaryDirectory() as tmp:
        path = write_cache(Path(tmp) / "bench-0123456789abcdef.h5", make_problem(), [f"c{i}" for i in range(CLASSES)])
        heads = [make_head(name) for name in args.heads.split(",")]
        levels = parse_shots(args.shots)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        with FeatureCache(path) as cache:
            result = learning_curve(cache, heads, levels, args.repeats, runs_dir=Path(tmp) / "runs")
        seconds = time.perf_counter() - start
        trials_run = json.loads((result.directory / "curve.json").read_text())["trials"]
    fit_seconds: dict[tuple, float] = {}
    for t in trials_run:
        key = (t["head"], "all" if t["shots"] is None else str(t["shots"]))
        fit_seconds[key] = fit_seconds.get(key, 0.0) + t["seconds"]
    trials = len(heads) * len(levels) * args.repeats
    print(f"{len(levels)} levels x {args.repeats} repeats x {len(heads)} heads ({trials} fits) on "
          f"{ROWS['train']:,} x {DIM}, {CLASSES} classes; load average before: {load:.2f}")
    for p in result.points:
        ci = f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p["ci"] else "-"
        print(f"  {p['head']:<8} {p['shots']:>4} shots mean {p['mean']:.3f}  sd {p['sd']:.3f}  95% {ci}  "
              f"fits {fit_seconds[p['head'], p['shots']]:.1f} s")
    for sentence in result.sentences:
        print(f"  {sentence}")
    print(f"total {seconds:.1f} s ({seconds / trials:.2f} s per fit); target < {TARGET:.0f} s: "
          f"{'met' if seconds < TARGET else 'MISSED'} ({seconds / TARGET:.2f} of the target)")


if __name__ == "__main__":
    main()
