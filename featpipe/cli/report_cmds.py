"""`featpipe compare` and `featpipe demo`."""

from __future__ import annotations

from pathlib import Path

import click

from featpipe.cli.options import echo_json, json_option


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Report directory (report.html, report.md, summary.json, summary.csv, plots/).")
@click.option("--config", type=click.Path(dir_okay=False), help="Experiment TOML file holding the grid.")
@click.option("--backbone", "-b", "backbones", multiple=True, metavar="SPEC", help="Run the grid with this base (repeatable).")
@click.option("--head", "heads", multiple=True, help="Head to train on every cache (repeatable; default: all).")
@click.option("--finetune", is_flag=True, default=None, help="Also run the end-to-end path for every backbone.")
@click.option("--weights", help="imagenet | none | PATH for every backbone.")
@click.option("--image-size", type=int, help="Input size for every backbone (default: each one's own).")
@click.option("--val-fraction", type=float, help="Carve a validation split from train when there is none.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Head hyperparameters, as for train.")
@click.option("--epochs", type=click.IntRange(min=0), help="End-to-end frozen-phase epochs.")
@click.option("--fine-tune-epochs", type=click.IntRange(min=0), help="End-to-end fine-tuning epochs.")
@click.option("--cache-dir", envvar="FEATPIPE_CACHE_DIR", help="Default: cache/.")
@click.option("--runs-dir", envvar="FEATPIPE_RUNS_DIR", help="Default: runs/.")
@click.option("--smooth", type=float, default=0.0, show_default=True, help="EMA factor for learning curves, in [0, 1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@json_option
def compare(inputs, out_dir, config, backbones, heads, finetune, weights, image_size, val_fraction, params,
            epochs, fine_tune_epochs, cache_dir, runs_dir, smooth, quiet, as_json):
    """Compare runs side by side: accuracy and the compute each cost.

    \b
    With run directories (or roots holding them), report on those:
      featpipe compare runs/ -o report/
    With a dataset and --backbone (or --config), run the grid first -- every backbone extracted once,
    every head on every cache, optionally --finetune -- then report. A rerun resumes where it stopped:
      featpipe compare data/cats_vs_dogs -b keras:VGG16 -b keras:Xception --head dense --head logreg \\
          --finetune -o report/
      featpipe compare --config experiment.toml -o report/
    """
    from featpipe.errors import FeatpipeError
    from featpipe.experiment import Experiment, load_experiment, run_experiment
    from featpipe.report import write_report

    notes = []
    if config or backbones:
        overrides = dict(backbones=list(backbones) or None, heads=list(heads) or None, finetune=finetune,
                         weights=weights, image_size=image_size, val_fraction=val_fraction,
                         params=list(params) or None, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
                         cache_dir=cache_dir, runs_dir=runs_dir)
        if len(inputs) > 1:
            raise FeatpipeError("a grid runs on one dataset: give one DATA folder")
        if inputs:
            overrides["data"] = inputs[0]
        if config:
            exp = load_experiment(config, **overrides)
        elif not inputs:
            raise FeatpipeError("give the DATA folder to run the grid on (or --config FILE)")
        else:
            exp = Experiment(**{k: v for k, v in overrides.items() if v is not None})
        run_dirs, notes = run_experiment(exp, progress=not quiet)
    elif inputs:
        run_dirs = [Path(p) for p in inputs]
    else:
        raise FeatpipeError("give run directories to compare, or a dataset with --backbone / --config")
    paths = write_report(run_dirs, out_dir, smooth=smooth, notes=notes)
    _print_report(paths, as_json)


def _print_report(paths: dict, as_json: bool) -> None:
    from featpipe.runs import read_json

    summary = read_json(paths["summary_json"])
    verdicts = summary["verdicts"]
    for verdict in verdicts:
        if len(verdicts) > 1:
            click.echo(f"dataset {verdict['dataset']['name']} ({verdict['dataset']['root']}):")
        for line in verdict["lines"]:
            click.echo(("  " if len(verdicts) > 1 else "") + line)
    click.echo(f"report: {paths['html']}")
    if as_json:
        echo_json({k: str(v) for k, v in paths.items() if k != "plots"})


@click.command()
@click.option("-o", "--output", "out_dir", default="featpipe-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the data, cache, runs and report go.")
@click.option("--data", type=click.Path(file_okay=False), help="Your own DATA/<split>/<class>/ folder instead of the generated target task.")
@click.option("--backbone", "-b", metavar="SPEC", help="Your own pretrained base instead of the one the demo pretrains "
              "(with --data alone: keras:ResNet50, whose ImageNet weights must be available).")
@click.option("--epochs", type=click.IntRange(min=0), default=15, show_default=True,
              help="End-to-end frozen-phase epochs (20 images per class: about 4 steps per epoch).")
@click.option("--fine-tune-epochs", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also train the heads on a random-initialised copy of the base, to show what pretraining bought.")
@click.option("--base-cache", type=click.Path(file_okay=False),
              help="Where the demo's pretrained base is kept between demos [default: ~/.cache/featpipe/bases].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of everything random: the generated images, pretraining, heads, fine-tuning, the random copy.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@json_option
def demo(out_dir, data, backbone, epochs, fine_tune_epochs, control, base_cache, seed, quiet, as_json):
    """Transfer learning offline: pretrain a small base, then heads vs end-to-end vs a random base.

    Pretrains a small convolutional base on generated shapes (cached: later demos skip it), then on a
    target task of classes it never saw, with 20 images per class: every head on the base's cached
    features, the same heads on a random-initialised copy of it, and the end-to-end path. Writes the
    report into OUTPUT/report.

    \b
    Examples:
      featpipe demo
      featpipe demo --data data/cats_vs_dogs --backbone keras:VGG16 -o cats-report
    """
    from featpipe.demo import run_demo

    click.echo(f"featpipe demo: writing to {Path(out_dir).resolve()}", err=True)
    result = run_demo(out_dir, data=data, backbone=backbone, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
                      progress=not quiet, base_cache=base_cache, control=control, seed=seed)
    for note in result["notes"]:
        click.echo(f"note: {note}")
    _print_report(result, as_json)


COMMANDS = [compare, demo]
