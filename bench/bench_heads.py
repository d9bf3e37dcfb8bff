"""Time every head on a synthetic cache-sized problem: 2,000 x 2,048 train, 1,000 validation, 1,000 test.

The features are arrays fed to the heads directly (no cache file, so the figures are the heads' own):
binary classes that differ in a few latent directions, mixed into 2,048 non-negative, correlated
dimensions (ReLU of a random projection plus noise, like pooled CNN features), tuned so that a linear
probe lands near 90% accuracy. Fit time includes each head's hyperparameter search on validation; each
head is first fitted once, untimed, on 100 rows, so one-time costs (lazy imports, BLAS and TensorFlow
start-up) are not counted. The machine may be shared: figures vary by 2x with the load.

Targets on a 2-core CPU: the three scikit-learn heads together under 10 s (fit + predict), dense under 30 s.
Usage: python bench/bench_heads.py [--train 2000] [--dim 2048] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from featpipe.heads import HEADS, make_head

LATENT = 64
TARGETS = {"scikit-learn heads": 10.0, "dense": 30.0}


def synthetic(rows: int, dim: int, rng: np.random.Generator, mixing: np.ndarray, shift: np.ndarray):
    labels = rng.integers(0, 2, rows)
    latent = rng.normal(size=(rows, LATENT)) + np.outer(labels, shift)
    features = np.maximum(latent @ mixing + rng.normal(size=(rows, dim)), 0)
    return features.astype(np.float32), labels


def make_problem(train: int, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)
    shift = np.zeros(LATENT)
    shift[:4] = 1.3  # class difference in 4 latent directions: ~90% for a linear probe
    sizes = {"train": train, "validation": train // 2, "test": train // 2}
    return {split: synthetic(n, dim, rng, mixing, shift) for split, n in sizes.items()}


def warm_up(name: str, data: dict) -> None:
    tiny = {split: (X[:100], y[:100]) for split, (X, y) in data.items()}
    make_head(name, {"epochs": 1} if name == "dense" else {}).fit(*tiny["train"], *tiny["validation"])


def bench(name: str, data: dict, seed: int) -> dict:
    warm_up(name, data)
    head = make_head(name, seed=seed)
    start = time.perf_counter()
    head.fit(*data["train"], *data["validation"])
    fitted = time.perf_counter()
    proba = head.predict_proba(data["test"][0])
    done = time.perf_counter()
    best = head.selection_["grid"][[g["params"] for g in head.selection_["grid"]].index(head.best_params_)]
    return {"head": name, "fit": fitted - start, "predict": done - fitted, "points": len(head.selection_["grid"]),
            "val": best["score"], "test": float((proba.argmax(1) == data["test"][1]).mean()),
            "best": head.best_params_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = make_problem(args.train, args.dim, args.seed)
    print(f"train {args.train} / validation {args.train // 2} / test {args.train // 2} rows x {args.dim} features, binary")
    print(f"{'head':11} {'fit s':>7} {'predict s':>9} {'grid':>4} {'val acc':>8} {'test acc':>8}  best params")
    rows = []
    for name in ["logreg", "linear-svm", "svm", "dense"]:
        assert name in HEADS
        row = bench(name, data, args.seed)
        rows.append(row)
        print(f"{row['head']:11} {row['fit']:7.2f} {row['predict']:9.2f} {row['points']:4d} {row['val']:8.3f} "
              f"{row['test']:8.3f}  {row['best']}", flush=True)
    totals = {"scikit-learn heads": sum(r["fit"] + r["predict"] for r in rows if r["head"] != "dense"),
              "dense": sum(r["fit"] + r["predict"] for r in rows if r["head"] == "dense")}
    for group, seconds in totals.items():
        verdict = "met" if seconds < TARGETS[group] else "MISSED"
        print(f"{group}: {seconds:.2f} s (target < {TARGETS[group]:.0f} s: {verdict})")


if __name__ == "__main__":
    main()
