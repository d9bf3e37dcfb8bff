"""`featpipe extract`, `featpipe split` and `featpipe backbones`."""

from __future__ import annotations

import click

from featpipe.choices import COMPRESSIONS, DTYPES, POOLINGS
from featpipe.cli.options import (backbone_options, echo_json, json_option, load_dataset_and_backbone,
                                  parse_image_size)


@click.command()
@click.argument("data", type=click.Path(file_okay=False))
@backbone_options
@click.option("--cache-dir", default="cache", show_default=True, envvar="FEATPIPE_CACHE_DIR",
              help="Where cache files go (env FEATPIPE_CACHE_DIR).")
@click.option("--splits", help="Comma-separated splits to extract (default: all present).")
@click.option("--val-fraction", type=float, help="Carve a stratified validation split from train when there is none.")
@click.option("--pooling", type=click.Choice(POOLINGS), default="avg", show_default=True,
              help="Global pooling of the feature maps; none keeps them (e.g. 10x10x2048).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Storage dtype of the features.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: 128 on GPU, 32 on CPU.")
@click.option("--crop-to-aspect-ratio", is_flag=True, help="Centre-crop to the target aspect ratio before resizing.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default="none", show_default=True)
@click.option("--hash-content", is_flag=True, help="Fingerprint file contents too, not just sizes and times.")
@click.option("--devices", default="all", show_default=True, metavar="all|cpu|0,1,...",
              help="GPUs to use, one worker process each (all = every visible GPU; the CPU when there is none).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes when running on the CPU (they divide its cores; capped at one per core and "
                   "per 0.7 GB of available memory, with a warning).")
@click.option("--shard", metavar="K/N",
              help="Extract only slice K of N (0 <= K < N, by sorted file order) into part files, for job arrays; "
                   "`featpipe cache merge` (or a plain extract) assembles the cache once every slice is done.")
@click.option("--part-rows", type=click.IntRange(min=1),
              help="Rows per part file of a new extraction (the unit of work and resume; default: up to 4096 "
                   "rows and 64 MiB).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes of this node (--devices, --workers); ray: a Ray cluster, one actor per GPU "
                   "(needs featpipe[ray]; data and cache dir on a filesystem every node sees).")
@click.option("--ray-address", metavar="ADDRESS",
              help="Ray cluster for --engine ray (default: RAY_ADDRESS, else the cluster `ray start` began on "
                   "this node, else a new local one).")
@click.option("--reuse", "reuse_from", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also copy rows of images this cache holds (repeatable); the caches of --cache-dir are "
                   "searched anyway. Only a cache of the same base, options and library versions is used.")
@click.option("--no-reuse", is_flag=True,
              help="Compute every image (default: copy the rows of images an earlier cache already holds).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@json_option
def extract(data, backbone, weights, image_size, preprocess, precision, seed, cache_dir, splits, val_fraction,
            pooling, dtype, batch_size, crop_to_aspect_ratio, compression, hash_content, devices, workers, shard,
            part_rows, engine, ray_address, reuse_from, no_reuse, quiet, as_json):
    """Run a frozen base once over each split of DATA (DATA/<split>/<class>/<image>) into the HDF5 cache.

    \b
    Examples:
      featpipe extract data/cats_vs_dogs --backbone keras:VGG16
      featpipe extract data/flowers --backbone xception_41_imagenet --val-fraction 0.2 --pooling none
      featpipe extract data/imagenet -b keras:ResNet50 --devices all        # one worker per GPU
      featpipe extract data/imagenet -b keras:ResNet50 --shard 3/16         # one task of a job array
      featpipe extract data/imagenet -b keras:ResNet50 --engine ray         # on the Ray cluster

    Images already in a cache of --cache-dir (or of --reuse FILE) made by the same base and options are found
    by their content and copied, not computed: after a dataset grows, only the new images go through the base.
    """
    # Usage first: a mistyped option is reported at once, not after TensorFlow has loaded.
    shard_kn = _parse_shard(shard)
    parse_image_size(image_size)
    if engine == "ray" and (shard_kn or devices != "all" or workers != 1):
        raise click.UsageError("--engine ray places its own actors (one per GPU of the cluster); "
                               "--shard, --devices and --workers are for the local engine")
    if engine != "ray" and ray_address:
        raise click.UsageError("--ray-address needs --engine ray")
    if no_reuse and reuse_from:
        raise click.UsageError("--reuse and --no-reuse exclude each other")
    from featpipe.worker import limit_malloc_arenas

    limit_malloc_arenas()  # before TensorFlow starts its threads
    from featpipe import runtime
    from featpipe.engines import make_engine
    from featpipe.extraction import InProcessEngine, extract_shard
    from featpipe.extraction import extract as run_extract
    from featpipe.ray_engine import RayEngine

    # Built once: this process (a shard, or one worker), worker processes, or the Ray cluster.
    runner = None if shard_kn else make_engine(engine, devices=devices, workers=workers, address=ray_address)
    if isinstance(runner, RayEngine):  # connected (or started) here: let go of the cluster when the command ends
        click.get_current_context().with_resource(runner)
    on_gpu = runner.gpus if runner else None  # where the parts run decides precision "auto"
    dataset, base, _ = load_dataset_and_backbone(
        data, val_fraction, seed, runtime.resolve_precision(precision, on_gpu), backbone, weights, image_size,
        preprocess, gpus_elsewhere=bool(on_gpu) and not isinstance(runner, InProcessEngine))
    options = dict(splits=splits.split(",") if splits else None, pooling=pooling, dtype=dtype,
                   batch_size=batch_size or runtime.default_batch_size(), compression=compression,
                   crop_to_aspect_ratio=crop_to_aspect_ratio, content_hash=hash_content, precision=precision,
                   progress=not quiet, part_rows=part_rows, reuse=not no_reuse, reuse_from=list(reuse_from))
    if shard_kn:
        result = extract_shard(dataset, base, cache_dir, shard=shard_kn, **options)
        _print_shard(result)
    else:
        result = run_extract(dataset, base, cache_dir, engine=runner, **options)
        _print_result(result)
    if as_json:
        echo_json(result.summary())


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, _, n = value.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(k) < int(n):
        raise click.BadParameter(f"expected K/N with 0 <= K < N, got {value!r}", param_hint="--shard")
    return int(k), int(n)


def _print_shard(result) -> None:
    k, n = result.shard
    if result.cached:
        click.echo(f"cached: {result.path} is already complete")
        return
    click.echo(f"shard {k}/{n}: wrote {result.parts} parts ({result.rows} rows) to {result.path}.partial")
    if result.missing:
        click.echo(f"{len(result.missing)} parts of other shards still missing; "
                   f"when every shard is done: featpipe cache merge {result.path}")
    else:
        click.echo(f"every part is done: featpipe cache merge {result.path}")


def _print_result(result) -> None:
    state = "cached" if result.cached else "extracted"
    rows = ", ".join(f"{split} {n}" for split, n in result.rows.items())
    click.echo(f"{state}: {result.path} ({rows} rows)")
    for split, items in result.skipped.items():
        for path, reason in items:
            click.echo(f"skipped {path}: {reason}", err=True)
    if result.images_per_second:
        click.echo(f"extraction: {result.seconds:.1f}s of compute, {result.images_per_second:.1f} images/s")
    if not result.cached:
        summary = result.summary()
        if summary["reused"]:
            click.echo("rows: " + ", ".join(f"{split} {summary['computed'][split]} computed, {n} reused"
                                            for split, n in summary["reused"].items()))


@click.command()
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--train", "n_train", type=click.IntRange(min=0), default=1000, show_default=True, help="Images per class.")
@click.option("--validation", "n_validation", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--test", "n_test", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--shuffle", is_flag=True, help="Pick images at random (seeded) instead of in file-number order.")
@click.option("--seed", type=int, default=0, show_default=True)
def split(src, dest, n_train, n_validation, n_test, shuffle, seed):
    """Lay out DEST/<split>/<class>/ from a flat SRC folder named like cat.12.jpg (Kaggle Dogs vs Cats).

    Files are hard-linked where possible (copied otherwise); DEST must be new or empty.

    \b
    Example:
      featpipe split kaggle/train data/cats_vs_dogs --train 1000 --validation 500 --test 1000
    """
    from featpipe.splitting import make_splits

    placed = make_splits(src, dest, {"train": n_train, "validation": n_validation, "test": n_test},
                         shuffle=shuffle, seed=seed)
    for name, per_class in placed.items():
        click.echo(f"{name}: " + ", ".join(f"{label} {n}" for label, n in per_class.items()))


@click.command()
@json_option
def backbones(as_json):
    """List well-known backbone specs with their default input size and feature-map shape.

    Any keras.applications name (keras:<Name>) and any keras-hub image preset works too.
    """
    from featpipe.backbones import KNOWN_BACKBONES

    rows = [{"spec": spec, "image_size": size, "feature_shape": list(shape)}
            for spec, (size, shape) in KNOWN_BACKBONES.items()]
    if as_json:
        echo_json({"backbones": rows})
        return
    click.echo(f"{'spec':34} {'input':>9}  features (pooling none; avg/max -> last dim)")
    for row in rows:
        size, shape = row["image_size"], "x".join(map(str, row["feature_shape"]))
        click.echo(f"{row['spec']:34} {f'{size}x{size}':>9}  {shape}")


COMMANDS = [extract, split, backbones]
