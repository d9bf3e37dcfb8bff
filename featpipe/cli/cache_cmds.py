"""`featpipe cache ls`, `featpipe cache info` and `featpipe cache merge`."""

from __future__ import annotations

import click

from featpipe.cli.options import echo_json, json_option
from featpipe.errors import FeatpipeError


@click.group()
def cache():
    """Inspect the feature cache."""


@cache.command("ls")
@click.option("--cache-dir", default="cache", show_default=True, envvar="FEATPIPE_CACHE_DIR")
@json_option
def ls(cache_dir, as_json):
    """List finished cache files (and interrupted extractions)."""
    from featpipe.extraction import missing_parts
    from featpipe.store import FeatureCache, list_caches

    finished, partial = list_caches(cache_dir)
    rows = []
    for path in finished:
        with FeatureCache(path) as c:
            rows.append(c.describe())
    if as_json:
        echo_json({"caches": rows, "incomplete": [str(p) for p in partial]})
        return
    for row in rows:
        split_rows = " ".join(f"{s}={n}" for s, n in row["rows"].items())
        size = f"{row['image_size'][0]}x{row['image_size'][1]}"
        click.echo(f"{row['path']}  {row['backbone']} {size} {row['pooling']} {row['weights']}  "
                   f"{split_rows}  {_mb(row['bytes'])}")
    for path in partial:
        try:
            state = missing_parts(path)
        except FeatpipeError as e:
            state = str(e)
        click.echo(f"{path}  (incomplete: {state})")
    if not rows and not partial:
        click.echo(f"no caches in {cache_dir}")


@cache.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def info(file, as_json):
    """Show what a cache FILE holds: key facts, rows, skipped files, size on disk."""
    from featpipe.store import FeatureCache

    with FeatureCache(file) as c:
        row = c.describe()
        skipped = {s: c.skipped(s) for s in c.splits}
    if as_json:
        echo_json({**row, "skipped_files": skipped})
        return
    for name in ("path", "key", "backbone", "weights", "image_size", "pooling", "feature_shape", "dtype",
                 "classes", "device", "created"):
        click.echo(f"{name:14} {row[name]}")
    click.echo(f"{'dataset':14} {row['dataset']['root']} (fingerprint {row['dataset']['fingerprint'][:16]})")
    for split, n in row["rows"].items():
        t = row["timing"][split]
        rate = f", {t['images_per_second']:.1f} img/s" if t["images_per_second"] else ""
        click.echo(f"{split:14} {n} rows, {row['skipped'][split]} skipped, {t['seconds']:.1f}s{rate}")
        origin = row["origin"][split]
        if origin is not None:
            sources = "".join(f", {k} from {name}" for name, k in origin["reused"].items())
            click.echo(f"{'':14} rows from: {origin['computed']} computed{sources}")
    click.echo(f"{'size':14} {_mb(row['bytes'])}")
    for split, items in skipped.items():
        for path, reason in items:
            click.echo(f"skipped {path}: {reason}")


@cache.command("merge")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--cache-dir", default="cache", show_default=True, envvar="FEATPIPE_CACHE_DIR",
              help="Without PATHS: merge every extraction in progress here.")
@json_option
def merge(paths, cache_dir, as_json):
    """Assemble the part files of sharded extractions (--shard K/N) into their cache files.

    PATHS are cache files (cache/X.h5) or their work directories (cache/X.h5.partial). A cache whose parts
    are not all done is an error that names the missing parts and the shards they belong to.

    \b
    Example (after a job array of `featpipe extract ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`):
      featpipe cache merge --cache-dir cache
    """
    from featpipe.extraction import merge as merge_parts
    from featpipe.store import list_caches

    targets = list(paths) or [str(p) for p in list_caches(cache_dir)[1]]
    if not targets:
        raise FeatpipeError(f"no extraction in progress in {cache_dir}")
    results = [merge_parts(target) for target in targets]
    for result in results:
        rows = ", ".join(f"{split} {n}" for split, n in result.rows.items())
        click.echo(f"{'cached' if result.cached else 'merged'}: {result.path} ({rows} rows)")
    if as_json:
        echo_json({"caches": [r.summary() for r in results]})


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


COMMANDS = [cache]
