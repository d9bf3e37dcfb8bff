"""The Ray engine against the single-process extractor, on the same generated JPEGs and the same machine.

Each engine runs `featpipe.extraction.extract` into a fresh cache directory (N images in 8 parts, assembly
included), interleaved, best of --repeat, while a thread notes when each part file appears. That gives, the same
way for both: the steady rate (rows of the parts after the first / time from the first part file to the last:
per-part costs and Ray's scheduling included, start costs not), the time to the first part (for Ray: its actor's
start — a process, TensorFlow, the base, its tracing — and the first part), and the whole run's rate. Ray's own
start (`ray.init` of a local cluster, or connecting to --address) is measured once.

Target on 2 cores, where Ray has nothing to gain: Ray's steady rate >= 0.8 of the single process's.

    python bench/bench_ray.py --quick                    # smoke run, ~2 minutes
    python bench/bench_ray.py                            # MobileNetV2 at 128 px, 1600 images
    python bench/bench_ray.py --address auto --work /shared/scratch/bench --images 20000   # on a cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import make_images  # noqa: E402  (the same generated photos-like JPEGs)

TARGET = 0.8


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="keras:MobileNetV2", help="backbone spec (random weights)")
    parser.add_argument("--images", type=int, help="N (default 1600; --quick: 320)")
    parser.add_argument("--image-size", type=int, help="model input size (default 128; --quick: 96)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, help="runs per engine and size; the best counts (default 2; --quick: 1)")
    parser.add_argument("--address", help="a running Ray cluster (auto, host:6379); default: start a local one")
    parser.add_argument("--work", help="where data and caches go (on a cluster: a shared filesystem); "
                                       "default: a temporary directory")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    args.images = args.images or (320 if args.quick else 1600)
    args.image_size = args.image_size or (96 if args.quick else 128)
    args.repeat = args.repeat or (1 if args.quick else 2)
    return args


class PartClock:
    """Notes when each part file of an extraction under `cache_dir` appears (polled every 10 ms)."""

    def __init__(self, cache_dir: Path):
        self.cache_dir, self.seen = cache_dir, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for path in self.cache_dir.glob("*.partial/*.h5"):
                self.seen.setdefault(path.name, time.perf_counter())
            time.sleep(0.01)

    def __enter__(self) -> "PartClock":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed_extract(data, base, cache_dir: Path, engine, batch_size: int, part_rows: int) -> dict:
    from featpipe.extraction import extract
    from featpipe.parts import Part

    start = time.perf_counter()
    with PartClock(cache_dir) as clock:
        extract(data, base, cache_dir, batch_size=batch_size, part_rows=part_rows, progress=False, engine=engine)
    total = time.perf_counter() - start
    (first_name, first), *rest = sorted(clock.seen.items(), key=lambda item: item[1])
    rows = sum(Part.from_file_name(name).rows for name, _ in rest)
    return {"total": total, "first_part": first - start, "steady": rows / (rest[-1][1] - first)}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("featpipe").setLevel(logging.WARNING)
    from featpipe.backbones import load_backbone
    from featpipe.data import load_image_folder
    from featpipe.ray_engine import RayEngine

    print(f"load average before: {os.getloadavg()[0]:.2f}; cores: {len(os.sched_getaffinity(0))}")
    n = args.images
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        make_images(work / "data", n)
        data = load_image_folder(work / "data")
        base = load_backbone(args.backbone, weights="none", image_size=(args.image_size, args.image_size))
        engine = RayEngine(args.address)
        start = time.perf_counter()
        shape = engine.connect()
        ray_start = time.perf_counter() - start
        best: dict = {}
        try:
            for i in range(args.repeat):
                for name in ("single", "ray"):
                    r = timed_extract(data, base, work / f"cache-{name}-{i}", engine if name == "ray" else None,
                                      args.batch_size, part_rows=-(-n // 8))
                    if name not in best or r["total"] < best[name]["total"]:
                        best[name] = r
        finally:
            engine.close()

    print(f"{args.backbone} at {args.image_size} px, random weights, batch {args.batch_size}; N = {n} images "
          f"in 8 parts; best of {args.repeat}")
    print(f"Ray: {shape.describe()}; ray.init ({args.address or 'a local cluster'}): {ray_start:.1f} s")
    print(f"{'engine':8} {'total s':>8} {'first part s':>13} {'steady img/s':>13} {'img/s overall':>14}")
    for name, r in best.items():
        print(f"{name:8} {r['total']:8.1f} {r['first_part']:13.1f} {r['steady']:13.1f} {n / r['total']:14.1f}")
    ratio = best["ray"]["steady"] / best["single"]["steady"]
    start_cost = ray_start + best["ray"]["first_part"] - best["single"]["first_part"]
    print(f"steady rate ray/single: {ratio:.2f} (target >= {TARGET}: {'OK' if ratio >= TARGET else 'MISSED'}); "
          f"overall ray/single: {best['single']['total'] / best['ray']['total']:.2f}; Ray's start cost "
          f"(ray.init + actor start): {start_cost:.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
