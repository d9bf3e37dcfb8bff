"""Read + decode + resize throughput: featpipe's checked read (each file read once in Python threads after the
regular-file and header checks) against reading with tf.io.read_file inside the tf.data map, as before those
checks existed. Same generated 500x375 JPEGs, both interleaved --repeat times, best of each, images/s."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from featpipe.pipeline import AUTOTUNE, batched, decode_and_resize, indexed_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 images, one round")
    args = parser.parse_args()
    n, repeat = (64, 1) if args.quick else (args.images, args.repeat)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        files = []
        for i in range(n):
            files.append(os.path.join(folder, f"{i}.jpg"))
            Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(files[-1], quality=90)

        def unchecked():
            dataset = tf.data.Dataset.from_tensor_slices((tf.constant(files), np.arange(n)))
            return dataset.map(lambda path, row: (decode_and_resize(tf.io.read_file(path), (224, 224)), row),
                               num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()

        variants = {"tf.io.read_file (unchecked)": unchecked, "indexed_images (checked)": lambda: indexed_images(files, (224, 224))}
        best: dict[str, float] = {}
        print(f"{n} images, load average {os.getloadavg()[0]:.1f}")
        for _ in range(repeat):
            for name, make in variants.items():
                start = time.perf_counter()
                rows = sum(int(r.shape[0]) for _, r in batched(make(), 32))
                best[name] = max(best.get(name, 0.0), rows / (time.perf_counter() - start))
    for name, rate in best.items():
        print(f"{name:30s} {rate:8.1f} images/s")
    names = list(best)
    print(f"checked / unchecked: {best[names[1]] / best[names[0]]:.2f}   load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
