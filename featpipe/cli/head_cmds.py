"""`featpipe train`, `featpipe predict` and `featpipe export` (the heads on cached features)."""

from __future__ import annotations

import click

from featpipe.cli.options import echo_json, json_option
from featpipe.heads import HEADS

# Options train and curve share.
head_option = click.option("--head", "heads", multiple=True, required=True, metavar="NAME",
                           help=f"Head to train (repeatable): {', '.join(HEADS)}.")
param_option = click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Head parameter; comma-separated values are a grid searched on validation (C=0.1,1,10). "
         "KEY=VALUE applies to every chosen head that has KEY, HEAD.KEY=VALUE to one head.")
no_data_check_option = click.option(
    "--no-data-check", is_flag=True,
    help="Skip checking that the dataset still matches the cache (e.g. the dataset folder is gone).")


@click.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@head_option
@param_option
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where run directories go: <runs-dir>/<cache file stem>-<head>.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same predictions.")
@click.option("--force", is_flag=True, help="Retrain heads whose finished run exists (default: reuse it).")
@no_data_check_option
@click.option("--max-memory", metavar="SIZE",
              help="Memory budget (e.g. 8G; default: half the RAM). Features are loaded up to SIZE, beyond it "
                   "dense, logreg and linear-svm stream from the cache; svm switches to a Nystroem kernel "
                   "approximation past it (or past 20,000 rows), or refuses at once with its estimate.")
@json_option
def train(cache, heads, params, runs_dir, seed, force, no_data_check, max_memory, as_json):
    """Train heads on a feature CACHE file: fit on train, select on validation, evaluate once on test.

    \b
    Examples:
      featpipe train cache/xception-299-avg-0123abcd.h5 --head logreg --head dense
      featpipe train CACHE.h5 --head svm --param C=1,10 --param gamma=scale,0.001
    """
    from featpipe.heads import make_head, parse_param_options
    from featpipe.train import open_for_training, parse_size, train_head

    per_head = parse_param_options(list(params), list(heads))
    models = [make_head(name, per_head[name], seed) for name in dict.fromkeys(heads)]
    limit = parse_size(max_memory) if max_memory else None
    with open_for_training(cache, check_data=not no_data_check) as features:
        for head in models:
            result = train_head(features, head, runs_dir, force=force, max_memory=limit)
            row = result.summary()
            click.echo(f"{'reused' if row['reused'] else 'trained'} {row['head']}: {row['run_dir']}  "
                       f"val acc {row['val_accuracy']:.4f}  test acc {row['test_accuracy']:.4f}  "
                       f"({row['seconds']:.1f}s)", err=as_json)
            if as_json:
                echo_json(row)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", default="predictions.csv", show_default=True, type=click.Path(dir_okay=False),
              help="CSV file to write; - for standard output.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@json_option
def predict(run_dir, inputs, output, batch_size, as_json):
    """Classify images (files, or folders walked for image files) with a finished RUN_DIR.

    Writes one CSV row per image: path, predicted class, a probability per class; unreadable images get
    a row with the reason in the error column.
    """
    from featpipe.prediction import predict as run_predict

    to_stdout = output == "-"
    if to_stdout and as_json:
        raise click.UsageError("-o - and --json both write to standard output: choose one")
    result = run_predict(run_dir, list(inputs), output, batch_size=batch_size)
    where = "standard output" if to_stdout else result.output
    click.echo(f"wrote {result.rows} rows to {where} ({result.errors} unreadable)", err=as_json or to_stdout)
    if as_json:
        echo_json(result.summary())


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("output", type=click.Path(dir_okay=False))
def export(run_dir, output):
    """Write a RUN_DIR (any head: dense, logreg, linear-svm, svm, knn; or a fine-tuned model) as ONE Keras
    model OUTPUT (.keras) of built-in layers: 0-255 RGB image in, class probabilities out, preprocessing and
    frozen base included. It loads with plain keras.models.load_model (no featpipe, no scikit-learn) and is
    written only after it gives predict's probabilities to 1e-5."""
    from featpipe.prediction import export as run_export

    click.echo(f"exported {run_export(run_dir, output)}")


@click.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@head_option
@click.option("--shots", default="1,2,4,8,16,all", show_default=True, metavar="K,K,...",
              help="Labelled training images per class at each level; 'all' is the whole training split.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seeded draws per level (the same draws for every head).")
@param_option
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Curves go to <runs-dir>/curves/<cache file stem>/ (curve.json, curve.csv, curve.png).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the draws (and heads: seed + repeat).")
@click.option("--force", is_flag=True, help="Recompute every trial (default: keep those in curve.json).")
@no_data_check_option
@json_option
def curve(cache, heads, shots, repeats, params, runs_dir, seed, force, no_data_check, as_json):
    """Label-efficiency curve on a feature CACHE: each head trained on K labelled images per class (stratified,
    seeded draws shared by the heads), selected on validation, scored on the full test split; mean, sd and
    95% t-interval over the repeats per (head, K). Resumable: rerun to finish an interrupted curve.

    \b
    Example:
      featpipe curve CACHE.h5 --head logreg --head knn --shots 1,2,4,8,16,all --repeats 5
    """
    from featpipe.curve import learning_curve, parse_shots
    from featpipe.heads import make_head, parse_param_options
    from featpipe.train import open_for_training

    levels = parse_shots(shots)
    per_head = parse_param_options(list(params), list(heads))
    models = [make_head(name, per_head[name], seed) for name in dict.fromkeys(heads)]
    with open_for_training(cache, check_data=not no_data_check) as features:
        result = learning_curve(features, models, levels, repeats, seed, runs_dir, force,
                                progress=lambda line: click.echo(line, err=True))
    out = {"err": as_json}
    click.echo(f"{'head':<12} {'shots':>5} {'repeats':>7} {'mean':>7} {'sd':>7}  95% interval", **out)
    for p in result.points:
        ci = f"[{p['ci'][0]:.4f}, {p['ci'][1]:.4f}]" if p["ci"] else "-"
        click.echo(f"{p['head']:<12} {p['shots']:>5} {p['repeats']:>7} {p['mean']:>7.4f} {p['sd']:>7.4f}  {ci}", **out)
    for sentence in result.sentences:
        click.echo(sentence, **out)
    click.echo(f"wrote {result.directory}/curve.json, curve.csv, curve.png ({result.trained} trials run, "
               f"{result.reused} reused)", **out)
    if as_json:
        echo_json({"points": [{key: p[key] for key in ("head", "shots", "repeats", "mean", "sd", "ci")}
                              for p in result.points],
                   "summary": result.sentences, "directory": str(result.directory)})


COMMANDS = [train, predict, export, curve]
