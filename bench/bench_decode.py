"""Decode + resize of big JPEGs to a 224 x 224 input: full-size decode against the DCT-reduced decode featpipe
uses (the largest of 1/2, 1/4, 1/8 keeping both sides >= the target; `featpipe.pipeline.jpeg_reduction`).
Generated photo-like JPEGs (quality 90); best of --repeat timings per variant, milliseconds per image."""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from featpipe.pipeline import check_header, decode_and_resize, jpeg_reduction

TARGET = (224, 224)


def photo(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def best_ms(data: bytes, branch: int, repeat: int) -> float:
    contents = tf.constant(data)
    decode = tf.function(lambda c: decode_and_resize(c, TARGET, branch=branch))
    decode(contents)  # trace
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        decode(contents).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="12 MP only, 2 rounds")
    args = parser.parse_args()
    sizes = [(4000, 3000)] if args.quick else [(4000, 3000), (12000, 9000)]
    for width, height in sizes:
        data = photo(width, height)
        reduction = jpeg_reduction(check_header(data, 2**40, TARGET), TARGET)
        full = best_ms(data, 0, 2 if args.quick else args.repeat)
        reduced = best_ms(data, reduction.bit_length() - 1, 2 if args.quick else args.repeat)
        print(f"{width}x{height} JPEG ({len(data) / 2**20:.1f} MiB) -> 224x224: full decode {full:.0f} ms, "
              f"1/{reduction} decode {reduced:.0f} ms ({full / reduced:.1f}x faster; decoded pixels "
              f"{width * height / 1e6:.0f} MP vs {-(-width // reduction) * -(-height // reduction) / 1e6:.2f} MP)")


if __name__ == "__main__":
    main()
