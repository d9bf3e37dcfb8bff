"""The price of the end-to-end path: one fine-tuning run against one extraction plus every cached head.

On the same generated images and the same random-initialised base it measures, wall clock, in-process:

  (e2e)    `featpipe.finetune.run_finetune`: augmentation + frozen base + head for --epochs, then the top of
           the base fine-tuned for --fine-tune-epochs, plus the validation/test evaluation (base loading,
           tracing and saving included), with the mean epoch time of each phase;
  (cached) `featpipe.extraction.extract` over train/validation/test, then each head in featpipe.heads.HEADS
           with its default parameter grid: fit + validation/test probabilities on the cached features.

The headline is ratio = e2e seconds / (extraction + all heads) seconds. The base is random-initialised
(no downloads), so the accuracies printed only show that both paths learn the colour cue in the images.
The default base is ResNet50: a random-initialised MobileNetV2's activations vanish (~1e-11), which leaves
the dense head and the end-to-end path nothing to learn from, while ResNet50's stay usable.

    python bench/bench_finetune.py            # keras:ResNet50 at 64x64, 100/40/40 images per class, 3 + 2 epochs
    python bench/bench_finetune.py --quick    # smoke run, well under a minute
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
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASS_TINTS = {"cat": (40, 0, -40), "dog": (-40, 0, 40)}  # a colour cue even a random base can pick up


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="keras:ResNet50", help="spec (weights are random: --weights none)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=100, help="train images per class")
    parser.add_argument("--validation", type=int, default=40, help="validation images per class")
    parser.add_argument("--test", type=int, default=40, help="test images per class")
    parser.add_argument("--epochs", type=int, default=3, help="phase 1 (frozen base) epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=2, help="phase 2 (top of the base unfrozen) epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.train, args.validation, args.test = 64, 24, 12, 12
        args.epochs, args.fine_tune_epochs = 1, 1
    return args


def make_split_images(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """ROOT/<split>/<class>/*.jpg, 320x240 photo-like noise with a per-class tint."""
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for name, tint in CLASS_TINTS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((320, 240), Image.BICUBIC)
                pixels = np.asarray(coarse, np.float32) + np.array(tint) + rng.normal(0, 10, (240, 320, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def load_base(args):
    from featpipe.backbones import load_backbone

    return load_backbone(args.backbone, weights="none", image_size=args.image_size)


def end_to_end(data, args, runs_dir: Path) -> dict:
    from featpipe.finetune import FineTuner, run_finetune

    clock = time.perf_counter()
    tuner = FineTuner(load_base(args), epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
                      batch_size=args.batch_size)
    run = run_finetune(data, tuner, runs_dir, force=True)
    seconds = time.perf_counter() - clock
    phase_seconds = run.metrics["timing"]["phase_seconds"]
    epochs = {"frozen": args.epochs, "fine-tune": args.fine_tune_epochs}
    return {
        "seconds": seconds, "fit_seconds": run.metrics["timing"]["fit_seconds"],
        "epoch_seconds": {phase: s / epochs[phase] for phase, s in phase_seconds.items()},
        "val_accuracy": run.metrics["validation"]["accuracy"], "test_accuracy": run.metrics["test"]["accuracy"],
        "trainable_params": run.run["trainable_params"],
    }


def cached(data, args, cache_dir: Path) -> dict:
    from featpipe.extraction import extract

    clock = time.perf_counter()
    result = extract(data, load_base(args), cache_dir, batch_size=args.batch_size, progress=False)
    extract_seconds = time.perf_counter() - clock
    return {"extract_seconds": extract_seconds, "heads": time_heads(result.path)}


def time_heads(cache_path: Path) -> dict:
    """Each registered head: load the features, fit its default grid, predict validation and test."""
    from featpipe.heads import HEADS, make_head
    from featpipe.store import FeatureCache

    results = {}
    for name in HEADS:
        clock = time.perf_counter()
        with FeatureCache(cache_path) as cache:
            X, y, X_val, y_val, X_test, y_test = (
                array for split in ("train", "validation", "test") for array in (cache.features(split), cache.labels(split))
            )
        try:
            head = make_head(name)
        except ImportError:  # a head registered but not written yet: a stand-in keeps the total honest
            results[name] = stand_in_dense(X, y, X_val, y_val, X_test, y_test, clock) if name == "dense" else None
            continue
        head.fit(X, y, X_val=X_val, y_val=y_val)
        val_proba, test_proba = head.predict_proba(X_val), head.predict_proba(X_test)
        results[name] = {"seconds": time.perf_counter() - clock, "stand_in": False,
                         "val_accuracy": float((val_proba.argmax(1) == y_val).mean()),
                         "test_accuracy": float((test_proba.argmax(1) == y_test).mean())}
    return results


def stand_in_dense(X, y, X_val, y_val, X_test, y_test, clock: float) -> dict:
    """Dense(256, relu) -> Dropout(0.5) -> softmax on the features, 30 epochs, best validation loss kept."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(X.shape[1:]), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(int(y.max()) + 1, activation="softmax")])
    model.compile("rmsprop", "sparse_categorical_crossentropy")
    best = keras.callbacks.EarlyStopping(patience=30, restore_best_weights=True)
    model.fit(X, y, validation_data=(X_val, y_val), epochs=30, batch_size=32, verbose=0, callbacks=[best])
    val_proba, test_proba = model(X_val).numpy(), model(X_test).numpy()
    return {"seconds": time.perf_counter() - clock, "stand_in": True,
            "val_accuracy": float((val_proba.argmax(1) == y_val).mean()),
            "test_accuracy": float((test_proba.argmax(1) == y_test).mean())}


def report(args, e2e: dict, cache: dict) -> dict:
    heads = {name: r for name, r in cache["heads"].items() if r is not None}
    cached_seconds = cache["extract_seconds"] + sum(r["seconds"] for r in heads.values())
    ratio = e2e["seconds"] / cached_seconds
    n = {split: 2 * getattr(args, split) for split in ("train", "validation", "test")}
    print(f"{args.backbone} (random init) at {args.image_size}x{args.image_size}, images: "
          + ", ".join(f"{split} {count}" for split, count in n.items()) + f", batch {args.batch_size}")
    print(f"end-to-end ({args.epochs} frozen + {args.fine_tune_epochs} fine-tune epochs): {e2e['seconds']:.1f}s "
          f"(fit {e2e['fit_seconds']:.1f}s; per epoch: "
          + ", ".join(f"{phase} {s:.1f}s" for phase, s in e2e["epoch_seconds"].items())
          + f"); trainable params {e2e['trainable_params']}; val acc {e2e['val_accuracy']:.3f}, test acc {e2e['test_accuracy']:.3f}")
    print(f"extraction (train + validation + test, once): {cache['extract_seconds']:.1f}s")
    for name, r in cache["heads"].items():
        if r is None:
            print(f"  head {name:11} not available (registered, not importable yet)")
            continue
        note = "  [stand-in: featpipe.heads.dense not written yet]" if r["stand_in"] else ""
        print(f"  head {name:11} {r['seconds']:6.2f}s  val acc {r['val_accuracy']:.3f}, test acc {r['test_accuracy']:.3f}{note}")
    print(f"extraction + {len(heads)} heads: {cached_seconds:.1f}s")
    print(f"ratio end-to-end / (extraction + heads) = {ratio:.1f}x")
    return {"backbone": args.backbone, "image_size": args.image_size, "images": n, "end_to_end": e2e,
            "cached": cache, "cached_seconds": cached_seconds, "ratio": ratio}


def main(argv=None) -> int:
    args = parse_args(argv)
    from featpipe import runtime
    from featpipe.data import load_image_folder

    with runtime.precision_scope("auto"), tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        splits = {"train": args.train, "validation": args.validation, "test": args.test}
        data = load_image_folder(make_split_images(work / "data", splits))
        cache = cached(data, args, work / "cache")
        e2e = end_to_end(data, args, work / "runs")
        summary = report(args, e2e, cache)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
