"""The demo as a new user runs it: wall clock of `featpipe demo` (first run: pretraining included; second
run: everything reused), and its numbers for several seeds, checked against the demo's targets.

Each seed runs `featpipe demo --seed S` in a subprocess with a fresh base cache, so every seed pretrains
its own base on its own source images and draws its own target images. From each report's summary.json:

  - the best cached head on the pretrained base (selected on validation accuracy) and its test accuracy;
  - the same head on the random-initialised copy, and the margin;
  - the end-to-end run's test accuracy and its compute over the best cached run's.

The second run of the first seed is timed twice: into the same folder (everything reused) and into a new
folder with the same base cache (pretraining skipped; the target task's extraction, heads and fine-tuning
run again). Targets: best cached head on the pretrained base >= 0.80 test accuracy and >= 15 points above
the same head on the random copy; first run <= 5 minutes, second run <= 2 minutes on 2 CPU cores.

    python bench/bench_demo.py                    # seeds 0 1 2, and a second run of seed 0 (~8-10 minutes)
    python bench/bench_demo.py --seeds 0 --quick  # one seed, no second run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIN_ACCURACY, MIN_MARGIN = 0.80, 0.15


def run(out: Path, base_cache: Path, seed: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from featpipe.cli import main; main()", "demo", "-q", "-o", str(out),
                    "--base-cache", str(base_cache), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def figures(out: Path) -> dict:
    verdict = json.loads((out / "report" / "summary.json").read_text())["verdict"]
    versus, e2e = verdict["pretrained_vs_random"], verdict["end_to_end_vs_cached"]
    return {
        "head": versus["pretrained"]["head"],
        "pretrained": versus["pretrained"]["test_accuracy"],
        "random": versus["random"]["test_accuracy"],
        "margin": versus["test_accuracy_delta"],
        "end_to_end": verdict["best_end_to_end"]["test_accuracy"],
        "compute_ratio": e2e["compute_ratio"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="no second run")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out, cache = Path(tmp) / f"demo-{seed}", Path(tmp) / f"bases-{seed}"
            first = run(out, cache, seed)
            again = not args.quick and seed == args.seeds[0]
            # A second demo: into the same folder (everything reused), and into a new one (the base reused).
            second = run(out, cache, seed) if again else None
            elsewhere = run(Path(tmp) / f"again-{seed}", cache, seed) if again else None
            rows.append({"seed": seed, "first_s": first, "second_s": second, "elsewhere_s": elsewhere,
                         **figures(out)})
            print(f"seed {seed} done: {first:.0f} s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"{'seed':>4} {'head':>10} {'pretrained':>10} {'random':>7} {'margin':>7} {'end-to-end':>10} "
          f"{'e2e compute':>11} {'1st run s':>9} {'2nd, same dir':>13} {'2nd, new dir':>12}  targets")
    for r in rows:
        ok = r["pretrained"] >= MIN_ACCURACY and r["margin"] >= MIN_MARGIN
        second = " ".join(f"{r[k]:{w}.0f}" if r[k] is not None else f"{'-':>{w}}"
                          for k, w in (("second_s", 13), ("elsewhere_s", 12)))
        print(f"{r['seed']:>4} {r['head']:>10} {r['pretrained']:>10.3f} {r['random']:>7.3f} {r['margin']:>7.3f} "
              f"{r['end_to_end']:>10.3f} {r['compute_ratio']:>10.1f}x {r['first_s']:>9.0f} {second}  "
              f"{'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
