"""Extraction throughput: featpipe's pipelined extraction against its own limits and against the book's loop.

On the same generated JPEGs, for each base, it measures (images/s):

  (a) the forward pass alone: featpipe's compiled call on pre-decoded batches held in memory;
  (d) read + decode + resize alone: featpipe's tf.data pipeline iterated with no model;
  (b) the book's loop (Deep Learning with Python, listing 8.25): image_dataset_from_directory, then
      conv_base.predict(preprocess_input(images)) per batch, features and labels collected into numpy;
  (c) `featpipe.extraction.extract` end to end, in-process, into a fresh cache dir (wall clock of
      load_image_folder + extract, tracing and the final HDF5 assembly included);
  and peak RSS of (c) run in a subprocess at N/4 and N images (memory must not grow with N).

On a CPU decoding and the model share the cores, so the best a pipeline can do is L = 1/(1/a + 1/d).
Targets: c >= 0.9 L and c >= 2 b.

    python bench/bench_extract.py                       # MobileNetV2 (640 images) and VGG16 (96 images)
    python bench/bench_extract.py --quick               # smoke run, ~1-2 minutes
    python bench/bench_extract.py --backbones keras:Xception --images 120
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SOURCE_SIZE = (500, 375)  # width, height: a small camera-like JPEG, a bit larger than the book's ~400x350
CLASSES = ("cat", "dog")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="keras:MobileNetV2,keras:VGG16",
                        help="comma-separated backbone specs (weights are always random: --weights none)")
    parser.add_argument("--images", help="images per base: one count for all, or one per backbone "
                        "(default: 640,96; --quick: 64,32)")
    parser.add_argument("--batch-size", type=int, help="the same for every variant (default: 32; --quick: 16)")
    parser.add_argument("--image-size", type=int, help="model input size (default: each base's own; --quick: 96)")
    parser.add_argument("--repeat", type=int, help="interleaved rounds, the best of each is reported "
                        "(default: 2; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one (c) run in a subprocess
    args = parser.parse_args(argv)
    defaults = {"images": "64,32", "batch_size": 16, "image_size": 96, "repeat": 1} if args.quick else \
        {"images": "640,96", "batch_size": 32, "image_size": None, "repeat": 2}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    counts = [int(n) for n in args.images.split(",")]
    if len(counts) == 1:
        counts *= len(args.backbones)
    if len(counts) < len(args.backbones):
        parser.error("--images needs one count, or one per backbone")
    args.images = counts[: len(args.backbones)]
    return args


# --- data ----------------------------------------------------------------------------------------------


def make_images(root: Path, n: int, seed: int = 0) -> None:
    """n JPEGs in ROOT/train/<class>/: smooth blobs plus sensor-like noise, so they compress like photos."""
    rng = np.random.default_rng(seed)
    width, height = SOURCE_SIZE
    for i in range(n):
        folder = root / "train" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(SOURCE_SIZE, Image.BICUBIC)
        pixels = np.asarray(coarse, np.int16) + rng.normal(0, 12, (height, width, 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def subset(root: Path, n: int, dest: Path) -> Path:
    """A dataset of the first n images of `root`, hard-linked (same bytes, no copy)."""
    for path in sorted((root / "train").rglob("*.jpg"))[:n]:
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return dest


# --- the variants ----------------------------------------------------------------------------------------


def timed(fn) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (user + system, all threads of this process) and the result of fn()."""
    start, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return time.perf_counter() - start, cpu_seconds() - cpu, out


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def best_of(repeat: int, n: int, variants: dict) -> dict:
    """Run the variants interleaved `repeat` times; keep each one's best images/s (and cores it used then).

    Other processes on a shared machine only ever slow a run down, so the best run is the least disturbed.
    """
    best = {}
    for _ in range(repeat):
        for name, run in variants.items():
            seconds, cpu, _ = run()
            speed, cores = n / seconds, cpu / seconds
            if name not in best or speed > best[name][0]:
                best[name] = (speed, cores)
    return best


def decode_only(files: list[str], size, batch_size: int) -> tuple:
    """(d): featpipe's own read/decode/resize pipeline, batched and prefetched, with no model."""
    from featpipe.pipeline import batched, indexed_images

    def run():
        for images, _ in batched(indexed_images(files, size), batch_size):
            pass

    return timed(run)


def forward_only(backbone, files: list[str], batch_size: int) -> tuple:
    """(a): featpipe's compiled forward call over pre-decoded batches held in memory (traced beforehand)."""
    from featpipe.model_parts import compiled_forward
    from featpipe.pipeline import batched, indexed_images

    held = [images for images, _ in batched(indexed_images(files[: 4 * batch_size], backbone.image_size), batch_size)]
    forward = compiled_forward(backbone.feature_model("avg"))
    forward(held[0]).numpy()  # trace outside the clock
    n_batches = math.ceil(len(files) / batch_size)
    last = len(files) - (n_batches - 1) * batch_size

    def run():
        for i in range(n_batches):
            images = held[i % len(held)]
            forward(images if i < n_batches - 1 else images[:last]).numpy()

    return timed(run)


def book_loop(backbone, train_dir: Path, batch_size: int) -> tuple:
    """(b): listing 8.25 of Deep Learning with Python, as written (verbose=0 only to keep the output clean)."""
    import keras

    conv_base = backbone.model
    preprocess_input = book_preprocess(backbone)

    def get_features_and_labels(dataset):
        all_features = []
        all_labels = []
        for images, labels in dataset:
            preprocessed_images = preprocess_input(images)
            features = conv_base.predict(preprocessed_images, verbose=0)
            all_features.append(features)
            all_labels.append(labels)
        return np.concatenate(all_features), np.concatenate(all_labels)

    def run():
        dataset = keras.utils.image_dataset_from_directory(
            train_dir, image_size=backbone.image_size, batch_size=batch_size, verbose=False)
        return get_features_and_labels(dataset)

    return timed(run)


def book_preprocess(backbone):
    """The application module's preprocess_input (keras.applications.vgg16.preprocess_input, ...)."""
    import keras

    from featpipe.backbones import parse_keras_spec
    from featpipe.preprocessing import preprocessing_layer

    if backbone.kind == "keras":
        constructor = getattr(keras.applications, parse_keras_spec(backbone.spec)[0])
        return sys.modules[constructor.__module__].preprocess_input
    return preprocessing_layer(backbone.preprocessing)  # other kinds: the same maths as featpipe


def featpipe_extract(root: Path, backbone, cache_dir: Path, batch_size: int) -> tuple[float, float, object]:
    """(c): load the folder and extract into a fresh cache dir; wall clock of both."""
    from featpipe.data import load_image_folder
    from featpipe.extraction import extract

    return timed(lambda: extract(load_image_folder(root), backbone, cache_dir, batch_size=batch_size,
                                 progress=False))


def child(config: str) -> None:
    """One (c) run in a fresh process: prints images/s and peak RSS as JSON."""
    cfg = json.loads(config)
    from featpipe import runtime
    from featpipe.backbones import load_backbone

    with runtime.precision_scope("float32"):
        backbone = load_backbone(cfg["spec"], weights="none", image_size=cfg["image_size"])
        seconds, _, result = featpipe_extract(Path(cfg["root"]), backbone, Path(cfg["cache_dir"]), cfg["batch_size"])
    rows = sum(result.rows.values())
    print(json.dumps({"images": rows, "seconds": seconds, "per_second": rows / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_run(spec: str, root: Path, image_size, batch_size: int, cache_dir: Path) -> dict:
    config = json.dumps({"spec": spec, "root": str(root), "image_size": image_size, "batch_size": batch_size,
                         "cache_dir": str(cache_dir)})
    out = subprocess.run([sys.executable, __file__, "--child", config], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- one base ----------------------------------------------------------------------------------------------


def bench_backbone(spec: str, n: int, args, source: Path, work: Path) -> dict:
    from featpipe.backbones import load_backbone

    root = subset(source, n, Path(tempfile.mkdtemp(dir=work)))
    quarter = subset(source, max(n // 4, 1), Path(tempfile.mkdtemp(dir=work)))
    files = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
    backbone = load_backbone(spec, weights="none", image_size=args.image_size)
    bs = args.batch_size
    own = []  # featpipe's own images/s of each (c) run

    def extract_once() -> tuple:
        run = featpipe_extract(root, backbone, Path(tempfile.mkdtemp(dir=work)), bs)
        own.append(run[2].images_per_second)
        return run

    r = best_of(args.repeat, n, {
        "d": lambda: decode_only(files, backbone.image_size, bs),
        "a": lambda: forward_only(backbone, files, bs),
        "b": lambda: book_loop(backbone, root / "train", bs),
        "c": extract_once,
    })
    r.update(spec=spec, size=backbone.image_size, n=n, c_own=max(own))
    r["L"] = (1 / (1 / r["a"][0] + 1 / r["d"][0]), None)
    for key, data in (("quarter", quarter), ("full", root)):
        r[key] = child_run(spec, data, args.image_size, bs, Path(tempfile.mkdtemp(dir=work)))
    # Two runs that differ only in the number of images separate the per-image rate from the fixed cost
    # (tracing, first-call graph optimisation, cache assembly).
    q, f = r["quarter"], r["full"]
    r["marginal"] = (f["images"] - q["images"]) / (f["seconds"] - q["seconds"]) if f["seconds"] > q["seconds"] \
        else float("nan")  # too few images to tell the two runs apart
    r["fixed"] = f["seconds"] - f["images"] / r["marginal"]
    return r


def report(r: dict, batch_size: int) -> None:
    h, w = r["size"]
    print(f"\n== {r['spec']} at {h}x{w}, {r['n']} JPEGs of {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}, batch {batch_size}, "
          "random weights ==")
    rows = [
        ("(a) forward pass only (compiled call, in-memory batches)", r["a"]),
        ("(d) read + decode + resize only (featpipe tf.data)", r["d"]),
        ("L   limit when both share the CPU: 1/(1/a + 1/d)", r["L"]),
        ("(b) book loop: image_dataset_from_directory + predict/batch", r["b"]),
        ("(c) featpipe extract, in-process, wall clock", r["c"]),
        ("    featpipe's own timing (shard seconds: no setup, no assembly)", (r["c_own"], None)),
        (f"    featpipe extract in a subprocess, {r['full']['images']} images", (r["full"]["per_second"], None)),
        (f"    per-image rate of those subprocess runs (N vs N/4; fixed cost {r['fixed']:.1f} s)",
         (r["marginal"], None)),
    ]
    for label, (speed, cores) in rows:
        print(f"  {label:<66} {speed:7.1f} img/s" + ("" if cores is None else f"   {cores:.2f} cores busy"))
    cpu_ms = {k: 1000 * r[k][1] / r[k][0] for k in "adc"}  # CPU per image: what other load cannot inflate much
    print(f"  {'CPU ms per image: a + d vs c (c/(a+d): pipelining overhead)':<66} "
          f"{cpu_ms['a'] + cpu_ms['d']:.1f} vs {cpu_ms['c']:.1f} ms ({cpu_ms['c'] / (cpu_ms['a'] + cpu_ms['d']):.2f})")
    c_l, c_b = ratios(r)
    print(f"  {'c / L':<66} {c_l:7.2f}   (target >= 0.90: {verdict(c_l >= 0.9)})")
    print(f"  {'c / b':<66} {c_b:7.2f}x  (target >= 2.00: {verdict(c_b >= 2)})")
    q, f = r["quarter"], r["full"]
    print(f"  {'peak RSS of extract in a subprocess':<64} {q['peak_rss_mb']:.0f} MB at {q['images']} images, "
          f"{f['peak_rss_mb']:.0f} MB at {f['images']} images")


def ratios(r: dict) -> tuple[float, float]:
    return r["c"][0] / r["L"][0], r["c"][0] / r["b"][0]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def summary(results: list[dict]) -> None:
    print("\nsummary (images/s)")
    header = f"  {'backbone':<22}{'size':>8}{'N':>6}{'a':>8}{'d':>8}{'L':>8}{'b':>8}{'c':>8}{'c/L':>7}{'c/b':>7}{'RSS MB':>14}"
    print(header)
    for r in results:
        rss = f"{r['quarter']['peak_rss_mb']:.0f}/{r['full']['peak_rss_mb']:.0f}"
        speeds = "".join(f"{r[k][0]:8.1f}" for k in "adLbc")
        print(f"  {r['spec']:<22}{r['size'][0]:>8}{r['n']:>6}{speeds}{ratios(r)[0]:7.2f}{ratios(r)[1]:7.2f}{rss:>14}")
    print("  best of the interleaved repeats; RSS MB: peak RSS of extract in a subprocess at N/4 / N images")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    # Keras' default policy in this fresh process is float32, the precision every figure here is taken at.
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()}); timings on a shared "
          "machine are noisy")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        work = Path(tmp)
        make_images(work / "source", max(args.images))
        for spec, n in zip(args.backbones, args.images):
            results.append(bench_backbone(spec, n, args, work / "source", work))
            report(results[-1], args.batch_size)
    summary(results)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
