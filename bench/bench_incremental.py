"""Incremental extraction: a dataset of N images grows by 1%; what does the second extraction cost?

Generates N distinct tiny JPEGs (each its own noise, so each its own content digest) and a random-initialised
base, runs `featpipe.extraction.extract` in a subprocess under `ulimit -n 1024` (the full extraction), adds
N/100 new images, and runs it again into the same cache directory (the incremental one: the new images
computed, the rest copied from the first cache by content). Then a from-scratch extraction of the grown
set (`reuse=False`) as the reference. Prints each run's wall time (the extract() call), the rows computed and
reused, peak RSS and open files, and the ratio incremental / full (target < 10% at 100,000 images).

    python bench/bench_incremental.py                      # 100,000 images (+1,000)
    python bench/bench_incremental.py --images 20000       # on a busy 2-core machine
    python bench/bench_incremental.py --quick              # 2,000 images, a smoke run
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_scale import run_sampled  # same directory: a measured extraction subprocess

DRIVER = r"""
import json, sys, time
from featpipe.worker import limit_malloc_arenas
limit_malloc_arenas()  # as `featpipe extract` does
from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe.extraction import extract

data_dir, model, cache_dir, batch, reuse = sys.argv[1:6]
data = load_image_folder(data_dir)
base = load_backbone(model)
start = time.perf_counter()
result = extract(data, base, cache_dir, batch_size=int(batch), progress=False, reuse=reuse == "1")
wall = time.perf_counter() - start
summary = result.summary()
print(json.dumps({"wall": wall, "recorded": result.seconds, "computed": sum(summary["computed"].values()),
                  "reused": sum(summary["reused"].values())}))
"""


def make_images(root: Path, start: int, stop: int, size: int) -> None:
    """Images start..stop-1 of two classes, each with its own noise (distinct bytes)."""
    for label in ("a", "b"):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        tint = np.array([200, 60, 40] if i % 2 else [40, 80, 200], np.float64)
        pixels = np.clip(tint + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        (root / "train" / "ab"[i % 2] / f"{i:07d}.jpg").write_bytes(buffer.getvalue())


def make_base(path: Path, size: int, width: int) -> None:
    """A random-initialised CNN (about a small MobileNet's cost per image at `size`), 256-d features."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
    x = keras.layers.Conv2D(256, 1, activation="relu")(x)
    keras.Model(inputs, x).save(path)


def run(data: Path, model: Path, cache: Path, batch: int, reuse: bool, nofile: int) -> dict:
    result, sampler = run_sampled([DRIVER, str(data), str(model), str(cache), str(batch), "1" if reuse else "0"],
                                  cache, nofile)
    return {**result, "rss_mb": sampler.rss / 2**20, "files": sampler.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--added", type=float, default=0.01, help="fraction of new images (default 1%%)")
    parser.add_argument("--image-size", type=int, default=96, help="the base's input side")
    parser.add_argument("--width", type=int, default=16, help="the base's first convolution's filters")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--nofile", type=int, default=1024, help="open-file limit of the extraction")
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch reference run")
    parser.add_argument("--quick", action="store_true", help="2,000 images")
    args = parser.parse_args()
    n = 2000 if args.quick else args.images
    added = max(1, round(n * args.added))
    print(f"{n} images + {added}; base {args.image_size}px width {args.width}; batch {args.batch_size}; "
          f"ulimit -n {args.nofile}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="featpipe-incremental-") as tmp:
        work = Path(tmp)
        model, data = work / "base.keras", work / "data"
        make_base(model, args.image_size, args.width)
        start = time.perf_counter()
        make_images(data, 0, n, 32)
        print(f"generated {n} images in {time.perf_counter() - start:.1f}s", flush=True)
        rows = [("full", run(data, model, work / "cache", args.batch_size, True, args.nofile))]
        make_images(data, n, n + added, 32)
        rows.append(("incremental", run(data, model, work / "cache", args.batch_size, True, args.nofile)))
        if not args.no_scratch:
            rows.append(("from scratch", run(data, model, work / "scratch", args.batch_size, False, args.nofile)))
    print(f"{'run':>13} {'wall s':>8} {'recorded s':>10} {'computed':>9} {'reused':>8} {'RSS MB':>7} {'files':>6}")
    for name, r in rows:
        print(f"{name:>13} {r['wall']:>8.1f} {r['recorded']:>10.1f} {r['computed']:>9} {r['reused']:>8} "
              f"{r['rss_mb']:>7.0f} {r['files']:>6}")
    full, incremental = rows[0][1]["wall"], rows[1][1]["wall"]
    scratch = "" if args.no_scratch else (
        f"; incremental / from scratch of the grown set: {100 * incremental / rows[2][1]['wall']:.1f}%")
    print(f"incremental / full: {100 * incremental / full:.1f}% (target < 10%){scratch}; "
          f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
