"""Fit time and peak memory of every head: 2,000 x 2,048 and 100,000 x 256 in memory, and 100,000 x 256
streamed from a cache file under a small --max-memory.

The features are synthetic: binary classes that differ in a few latent directions, mixed into non-negative,
correlated dimensions (ReLU of a random projection plus noise, like pooled CNN features), tuned so that a
linear probe lands near 90% accuracy; validation and test have half the training rows each. The data is
generated once and saved (.npy files, and an HDF5 cache for the streamed case); each head then runs in its own
process, so its peak memory is its own: "peak" is that process's resident high-water mark (VmHWM, reset just
before the fit) during fit + predict, "head" is the peak minus the process's resident memory just before the fit (imports, the loaded arrays and a warm-up fit
on 100 rows — which also keeps one-time costs such as TensorFlow's start-up out of the fit time); "cpu s" is
the CPU time of fit + predict over all threads, less sensitive than wall time to other load on the machine.
In-memory cases call `head.fit(X, y, X_val=..., y_val=...)`; the streamed case calls `train_head` on the cache
with `--max-memory`, as `featpipe train` does. Fit time includes each head's hyperparameter search.

Targets on a 2-core CPU: the three scikit-learn heads together under 10 s at 2,000 x 2,048; every head under
2 minutes at 100,000 x 256; streaming, each head's own memory under --max-memory. The machine may be shared:
figures vary by 2x with the load, which is printed.

Usage: python bench/bench_heads.py [--cases table,large,streamed] [--heads logreg,...] [--max-memory 64M]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LATENT = 64
HEADS = ["logreg", "linear-svm", "svm", "dense"]
CASES = {"table": (2000, 2048), "large": (100_000, 256), "streamed": (100_000, 256)}
TABLE_TARGET = 10.0  # seconds, the three scikit-learn heads together at 2,000 x 2,048
LARGE_TARGET = 120.0  # seconds, every head at 100,000 x 256


def synthetic(rows: int, dim: int, rng: np.random.Generator, mixing: np.ndarray, shift: np.ndarray):
    labels = rng.integers(0, 2, rows)
    features = np.empty((rows, dim), np.float32)
    for start in range(0, rows, 10_000):  # in slices: the float64 intermediates stay small
        part = slice(start, start + 10_000)
        latent = rng.normal(size=(len(labels[part]), LATENT)) + np.outer(labels[part], shift)
        features[part] = np.maximum(latent @ mixing + rng.normal(size=(len(latent), dim)), 0)
    return features, labels


def make_problem(train: int, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)
    shift = np.zeros(LATENT)
    shift[:4] = 1.3  # class difference in 4 latent directions: ~90% for a linear probe
    sizes = {"train": train, "validation": train // 2, "test": train // 2}
    return {split: synthetic(n, dim, rng, mixing, shift) for split, n in sizes.items()}


CACHE_FILE = "bench-0123456789abcdef.h5"


def save_problem(data: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, (X, y) in data.items():
        np.save(directory / f"{split}-X.npy", X)
        np.save(directory / f"{split}-y.npy", y)


def save_cache(data: dict, directory: Path) -> None:
    """A real cache file holding the problem, rows sorted by class as an extraction of class folders writes them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from heads_fixtures import write_cache

    ordered = {s: (X[np.argsort(y, kind="stable")], np.sort(y)) for s, (X, y) in data.items()}
    write_cache(directory / CACHE_FILE, ordered, ["cat", "dog"])


def load_problem(directory: Path, mmap: bool = False) -> dict:
    """The arrays; with `mmap`, mapped rather than read (the streamed case only warms up on a few rows)."""
    mode = "r" if mmap else None
    return {s: (np.load(directory / f"{s}-X.npy", mmap_mode=mode), np.load(directory / f"{s}-y.npy"))
            for s in ("train", "validation", "test")}


def rss() -> int:
    """Resident memory now, bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def reset_peak() -> None:
    """Start a new high-water mark (Linux: clear_refs 5 resets VmHWM; ru_maxrss cannot be reset, and even
    carries the parent's resident memory over fork + exec)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    """Resident memory's high-water mark since `reset_peak`, bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def cpu_seconds() -> float:
    """This process's CPU time, all threads: on a shared machine, closer to the quiet machine's wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up(name: str, data: dict) -> None:
    from featpipe.heads import make_head

    X, y = np.asarray(data["train"][0][:100]), data["train"][1][:100]
    params = {"epochs": 1} if name == "dense" else {}
    make_head(name, params).fit(X, y, X_val=X[:50], y_val=y[:50])


def child(case: str, name: str, directory: Path, max_memory: int) -> dict:
    """One head on one case, in this process; a JSON-able row."""
    from featpipe.heads import make_head

    data = load_problem(directory, mmap=case == "streamed")
    warm_up(name, data)
    row = {"case": case, "head": name}
    if case == "streamed":
        from featpipe.errors import FeatpipeError
        from featpipe.train import open_for_training, train_head

        reset_peak()
        before, cpu = rss(), cpu_seconds()
        start = time.perf_counter()
        try:
            with open_for_training(directory / CACHE_FILE, check_data=False) as cache, \
                    tempfile.TemporaryDirectory() as runs:
                result = train_head(cache, make_head(name), runs, max_memory=max_memory)
        except FeatpipeError as e:
            return {**row, "refused": str(e), "seconds": time.perf_counter() - start,
                    "head_bytes": peak_rss() - before, "peak": peak_rss()}
        metrics = result.metrics
        selection = metrics["selection"]
        row.update(fit=metrics["timing"]["fit_seconds"], predict=metrics["timing"]["predict_seconds"],
                   cpu=cpu_seconds() - cpu,
                   val=metrics["validation"]["accuracy"], test=metrics["test"]["accuracy"],
                   points=len(selection["grid"]), best=selection["best_params"],
                   how=(selection.get("solver") or {}).get("solver") or "streamed")
    else:
        head = make_head(name)
        reset_peak()
        before, cpu = rss(), cpu_seconds()
        start = time.perf_counter()
        head.fit(*data["train"], X_val=data["validation"][0], y_val=data["validation"][1])
        fitted = time.perf_counter()
        X, y = data["test"]
        proba = head.predict_proba(X)
        done = time.perf_counter()
        selection = head.selection_
        best = next(g["score"] for g in selection["grid"] if g["params"] == head.best_params_)
        how = (selection.get("solver") or {}).get("solver") or (selection.get("kernel") or {}).get("method") or ""
        row.update(fit=fitted - start, predict=done - fitted, cpu=cpu_seconds() - cpu, points=len(selection["grid"]),
                   val=best,
                   test=float((proba.argmax(1) == y).mean()), best=head.best_params_, how=how)
    return {**row, "head_bytes": peak_rss() - before, "peak": peak_rss()}


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def run_case(case: str, heads: list[str], directory: Path, max_memory: int, seed: int) -> list[dict]:
    train, dim = CASES[case]
    problem = directory / f"{train}x{dim}"
    if not (problem / "test-y.npy").exists():
        save_problem(make_problem(train, dim, seed), problem)
    if case == "streamed" and not (problem / CACHE_FILE).exists():
        save_cache(load_problem(problem), problem)
    print(f"\n{case}: train {train:,} / validation {train // 2:,} / test {train // 2:,} rows x {dim:,} features, "
          f"binary" + (f", streamed from a cache, --max-memory {mib(max_memory)} MiB" if case == "streamed" else "")
          + f"  [load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores]")
    print(f"{'head':11} {'fit s':>7} {'predict s':>9} {'cpu s':>7} {'grid':>4} {'val acc':>8} {'test acc':>8} "
          f"{'how':>10} "
          f"{'head MiB':>9} {'peak MiB':>9}  best params")
    rows = []
    for name in heads:
        out = subprocess.run([sys.executable, __file__, "--child", case, name, str(problem), str(max_memory)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name:11} FAILED (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        if "refused" in row:
            print(f"{name:11} refused in {row['seconds']:.2f} s: {row['refused']}", flush=True)
            continue
        print(f"{name:11} {row['fit']:7.2f} {row['predict']:9.2f} {row['cpu']:7.1f} {row['points']:4d} "
              f"{row['val']:8.3f} "
              f"{row['test']:8.3f} {row['how']:>10} {mib(row['head_bytes']):>9} {mib(row['peak']):>9}  {row['best']}",
              flush=True)
    fitted = [r for r in rows if "refused" not in r]
    if case == "table":
        total = sum(r["fit"] + r["predict"] for r in fitted if r["head"] != "dense")
        print(f"scikit-learn heads: {total:.2f} s (target < {TABLE_TARGET:.0f} s: "
              f"{'met' if total < TABLE_TARGET else 'MISSED'})")
    elif case == "large":
        slowest = max(fitted, key=lambda r: r["fit"] + r["predict"], default=None)
        if slowest:
            seconds = slowest["fit"] + slowest["predict"]
            print(f"slowest head: {slowest['head']} {seconds:.1f} s (target < {LARGE_TARGET:.0f} s each: "
                  f"{'met' if all(r['fit'] + r['predict'] < LARGE_TARGET for r in fitted) else 'MISSED'})")
    else:
        over = [r["head"] for r in fitted if r["head_bytes"] > max_memory]
        print(f"each head's own memory under --max-memory {mib(max_memory)} MiB: "
              f"{'met' if not over else 'MISSED by ' + ', '.join(over)}")
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, name, directory, max_memory = sys.argv[2:6]
        print(json.dumps(child(case, name, Path(directory), int(max_memory))))
        return
    from featpipe.train import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--max-memory", default="64M", help="the streamed case's --max-memory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-heads-") as directory:
        for case in args.cases.split(","):
            run_case(case, args.heads.split(","), Path(directory), parse_size(args.max_memory), args.seed)


if __name__ == "__main__":
    main()
