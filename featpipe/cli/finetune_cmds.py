"""`featpipe finetune` (the end-to-end path)."""

from __future__ import annotations

import click

from featpipe.choices import DEFAULT_AUGMENT, OPTIMIZERS, POOLINGS
from featpipe.cli.options import (backbone_options, echo_json, json_option, load_dataset_and_backbone,
                                  parse_image_size)


@click.command()
@click.argument("data", type=click.Path(file_okay=False))
@backbone_options
@click.option("--augment", default=DEFAULT_AUGMENT, show_default=True, metavar="SPEC",
              help="Training-only augmentation: comma-separated flip[=horizontal|vertical|horizontal_and_vertical], "
                   "rotation=F, zoom=F, translation=F, contrast=F, brightness=F; or none.")
@click.option("--pooling", type=click.Choice(POOLINGS), default="avg", show_default=True,
              help="Pooling of the base's feature maps; none flattens them (the book's Flatten).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Phase 1 epochs (frozen base); 0 skips it.")
@click.option("--fine-tune-epochs", type=int, default=10, show_default=True,
              help="Phase 2 epochs (top of the base unfrozen); 0 skips it.")
@click.option("--batch-size", type=int,
              help="Images per device per step (default: 128 on GPU, 32 on CPU); with several GPUs each step takes "
                   "batch size x GPUs.")
@click.option("--learning-rate", type=float, default=1e-3, show_default=True, help="Phase 1 learning rate.")
@click.option("--fine-tune-learning-rate", type=float, default=1e-5, show_default=True,
              help="Phase 2 learning rate (low, so the pretrained features are adjusted, not destroyed).")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="rmsprop", show_default=True)
@click.option("--unfreeze-top", type=int, metavar="N", help="Phase 2 trains the base's top N layers [default: 4].")
@click.option("--unfreeze-from", metavar="LAYER", help="Phase 2 trains the base from LAYER up.")
@click.option("--unfreeze-all", is_flag=True, help="Phase 2 trains the whole base (BatchNormalization stays frozen).")
@click.option("--val-fraction", type=float, help="Carve a stratified validation split from train when there is none.")
@click.option("--crop-to-aspect-ratio", is_flag=True, help="Centre-crop to the target aspect ratio before resizing.")
@click.option("--calibration", type=click.Choice(["none", "temperature"]), default="none", show_default=True,
              help="temperature: fit one temperature on validation after training (Guo et al. 2017), folded into "
                   "the saved model; metrics record the validation ECE and log loss before and after.")
@click.option("--runs-dir", default="runs", show_default=True, envvar="FEATPIPE_RUNS_DIR",
              help="Where run directories go (env FEATPIPE_RUNS_DIR).")
@click.option("--force", is_flag=True, help="Start over even if this run finished (or was interrupted) before.")
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch output.")
@json_option
def finetune(data, backbone, weights, image_size, preprocess, precision, seed, augment, pooling, epochs,
             fine_tune_epochs, batch_size, learning_rate, fine_tune_learning_rate, optimizer, unfreeze_top,
             unfreeze_from, unfreeze_all, val_fraction, crop_to_aspect_ratio, calibration, runs_dir, force, quiet,
             as_json):
    """Train end to end for comparison: augmentation + frozen base + new head, then fine-tune the base's top.

    An interrupted run resumes from its last finished epoch when the same command runs again; a finished
    run is reused (--force starts over). On a node with several visible GPUs (choose them with
    CUDA_VISIBLE_DEVICES) training is data-parallel (tf.distribute.MirroredStrategy), one replica per GPU.

    \b
    Examples:
      featpipe finetune data/cats_vs_dogs --backbone keras:VGG16 --epochs 30 --fine-tune-epochs 30
      featpipe finetune data/flowers --backbone keras:MobileNetV2 --image-size 160 --unfreeze-from block_13_expand
    """
    unfreeze = _unfreeze_spec(unfreeze_top, unfreeze_from, unfreeze_all)  # before TensorFlow loads
    parse_image_size(image_size)
    dataset, base, device = load_dataset_and_backbone(data, val_fraction, seed, precision, backbone, weights,
                                                      image_size, preprocess)
    from featpipe import runtime
    from featpipe.finetune import FineTuner, run_finetune

    tuner = FineTuner(
        base, augment=augment, pooling=pooling, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        batch_size=runtime.default_batch_size() if batch_size is None else batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, optimizer=optimizer, unfreeze=unfreeze,
        crop_to_aspect_ratio=crop_to_aspect_ratio, precision=precision, calibration=calibration, seed=seed,
    )
    result = run_finetune(dataset, tuner, runs_dir, force=force, device=device,
                          verbose=0 if quiet else "auto")
    summary = result.summary()
    click.echo(f"{'reused' if result.reused else 'finished'}: {result.run_dir}")
    click.echo(f"validation accuracy {summary['val_accuracy']:.4f}, test accuracy {summary['test_accuracy']:.4f}, "
               f"{summary['seconds']:.1f}s")
    if as_json:
        echo_json(summary)


def _unfreeze_spec(top: int | None, from_layer: str | None, unfreeze_all: bool) -> str:
    from featpipe.errors import FeatpipeError

    given = [spec for spec, used in ((f"top:{top}", top is not None), (f"from:{from_layer}", from_layer is not None),
                                     ("all", unfreeze_all)) if used]
    if len(given) > 1:
        raise FeatpipeError("use only one of --unfreeze-top, --unfreeze-from and --unfreeze-all")
    return given[0] if given else "top:4"


COMMANDS = [finetune]
