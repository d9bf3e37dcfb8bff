"""Extraction at scale: does the per-image cost, memory and file-handle use stay flat from 10k to 100k images?

Generates N tiny JPEGs (a few hundred distinct encodings written under N names: thousands per second) and a
tiny random-initialised base with 256-d features, then runs `featpipe.extraction.extract` in a subprocess under
`ulimit -n 1024` for each N while this process samples the subprocess: peak RSS, peak open files, peak bytes in
the cache directory. Prints, per N:

- s/image: the extract() call's wall time per image (fingerprint, extraction, writing and assembly);
- recorded/wall: the cache's recorded seconds over that wall time (target: >= 0.95);
- write wait %: time the forward loop waited for the background writer, over wall (target: < 3%);
  write busy %: time the writer thread spent writing (off the critical path); assembly %;
- peak RSS, peak open files (targets: flat in N), disk peak / feature bytes (target: <= ~2).

    python bench/bench_scale.py                      # 10k and 100k images, a few minutes on 2 cores
    python bench/bench_scale.py --sizes 1000 --quick # smoke run
    python bench/bench_scale.py --million            # adds 1M (about 1 GB of JPEGs and 1 GB of features)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

DRIVER = r"""
import json, sys, time
from featpipe.worker import limit_malloc_arenas
limit_malloc_arenas()  # as `featpipe extract` and its workers do
from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe.engines import make_engine
from featpipe.extraction import extract
from featpipe.store import FeatureCache

data_dir, model, cache_dir, batch, workers = sys.argv[1:6]
data = load_image_folder(data_dir)
base = load_backbone(model)
start = time.perf_counter()
result = extract(data, base, cache_dir, batch_size=int(batch), engine=make_engine(workers=int(workers)),
                 progress=False)
wall = time.perf_counter() - start
with FeatureCache(result.path) as cache:
    feature_bytes = sum(cache.nbytes_in_memory(s) for s in cache.splits)
print(json.dumps({"wall": wall, "recorded": result.seconds, "rows": sum(result.rows.values()),
                  "feature_bytes": feature_bytes, **result.stats}))
"""


def make_images(root: Path, n: int, distinct: int = 256, size: int = 32) -> None:
    rng = np.random.default_rng(0)
    encoded = []
    for i in range(distinct):
        tint = np.array([200, 60, 40] if i % 2 else [40, 80, 200], np.float64)
        pixels = np.clip(tint + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        encoded.append(buffer.getvalue())
    for label in ("a", "b"):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = "ab"[i % 2]
        (root / "train" / label / f"{i:07d}.jpg").write_bytes(encoded[i % distinct])


def make_base(path: Path, size: int = 32) -> None:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(256, 1, activation="relu")(x)
    keras.Model(inputs, x).save(path)


class Sampler(threading.Thread):
    """Peak RSS (of the process and its children), open files and cache-directory bytes, sampled."""

    def __init__(self, pid: int, cache_dir: Path, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.cache_dir, self.interval = pid, cache_dir, interval
        self.rss = self.files = self.disk = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            pids = [self.pid, *_children(self.pid)]
            self.rss = max(self.rss, sum(_rss(p) for p in pids))
            self.files = max(self.files, max(_open_files(p) for p in pids))
            self.disk = max(self.disk, _du(self.cache_dir))
            time.sleep(self.interval)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def run_sampled(args: list[str], cache: Path, nofile: int) -> tuple[dict, Sampler]:
    """`python -c *args` under `ulimit -n nofile`, sampled: (the JSON its last line prints, the sampler)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit)
    sampler = Sampler(proc.pid, cache)
    sampler.start()
    out, err = proc.communicate()
    sampler.running = False
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"extraction failed (exit {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), sampler


def run_one(work: Path, model: Path, n: int, batch: int, workers: int, nofile: int) -> dict:
    data, cache = work / f"data-{n}", work / f"cache-{n}"
    start = time.perf_counter()
    make_images(data, n)
    generated = time.perf_counter() - start

    result, sampler = run_sampled([DRIVER, str(data), str(model), str(cache), str(batch), str(workers)], cache,
                                  nofile)
    shutil.rmtree(data)
    shutil.rmtree(cache)
    wall = result["wall"]
    return {"n": n, "generate_s": generated, "wall": wall, "s_per_image": wall / n,
            "recorded_over_wall": result["recorded"] / wall,
            "write_wait_pct": 100 * result.get("write_wait_seconds", 0) / wall,
            "write_busy_pct": 100 * result.get("write_seconds", 0) / wall,
            "assemble_pct": 100 * result.get("assemble_seconds", 0) / wall,
            "peak_rss_mb": sampler.rss / 2**20, "peak_open_files": sampler.files,
            "disk_over_features": sampler.disk / result["feature_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated image counts")
    parser.add_argument("--million", action="store_true", help="add a 1,000,000-image run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1, help="CPU worker processes per extraction")
    parser.add_argument("--nofile", type=int, default=1024, help="open-file limit of the extraction")
    parser.add_argument("--quick", action="store_true", help="1,000 and 3,000 images")
    args = parser.parse_args()
    sizes = [1000, 3000] if args.quick else [int(s) for s in args.sizes.split(",")]
    sizes += [1_000_000] if args.million else []
    print(f"load average before: {os.getloadavg()[0]:.2f}; ulimit -n {args.nofile}; batch {args.batch_size}; "
          f"workers {args.workers}", flush=True)
    with tempfile.TemporaryDirectory(prefix="featpipe-scale-") as tmp:
        work = Path(tmp)
        make_base(work / "base.keras")
        rows = []
        header = (f"{'images':>9} {'s/image':>9} {'wall s':>8} {'rec/wall':>8} {'wait %':>7} {'busy %':>7} "
                  f"{'asm %':>6} {'RSS MB':>7} {'files':>6} {'disk/feat':>9}")
        print(header, flush=True)
        for n in sizes:
            r = run_one(work, work / "base.keras", n, args.batch_size, args.workers, args.nofile)
            rows.append(r)
            print(f"{r['n']:>9} {r['s_per_image'] * 1e3:>7.3f}ms {r['wall']:>8.1f} {r['recorded_over_wall']:>8.3f} "
                  f"{r['write_wait_pct']:>7.2f} {r['write_busy_pct']:>7.2f} {r['assemble_pct']:>6.2f} "
                  f"{r['peak_rss_mb']:>7.0f} {r['peak_open_files']:>6} {r['disk_over_features']:>9.2f}", flush=True)
    first, last = rows[0], rows[-1]
    print(f"per-image time {last['n']} vs {first['n']}: {last['s_per_image'] / first['s_per_image']:.3f}x "
          f"(target <= 1.10); RSS {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x; open files "
          f"{first['peak_open_files']} -> {last['peak_open_files']}; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
