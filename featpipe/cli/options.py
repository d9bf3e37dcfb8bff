"""Options shared by several commands, declared once, and the set-up extract and finetune share."""

from __future__ import annotations

import json
import re

import click

from featpipe.choices import PRECISIONS, PREPROCESS_MODES, WEIGHTS_CHOICES


def parse_image_size(value: str | None) -> tuple[int, int] | None:
    """``224`` or ``240x320`` (height x width)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)(?:[xX](\d+))?", value.strip())
    if not match:
        raise click.BadParameter(f"expected N or HxW, got {value!r}", param_hint="--image-size")
    height, width = int(match.group(1)), int(match.group(2) or match.group(1))
    return height, width


def backbone_options(command):
    """--backbone, --weights, --image-size, --preprocess, --precision, --seed."""
    for option in reversed([
        click.option("--backbone", "-b", required=True, metavar="SPEC",
                     help="keras-hub preset (xception_41_imagenet) or preset dir, keras:<Application>[(k=v)], "
                          "or a .keras/.h5 model file[:layer]. See `featpipe backbones`."),
        click.option("--weights", default="default", show_default=True, metavar="imagenet|none|PATH",
                     help=f"Pretrained weights; 'none' gives random init (tests, demos). Choices: "
                          f"{', '.join(WEIGHTS_CHOICES)} or a weights file."),
        click.option("--image-size", metavar="N|HxW", help="Input size; default: the backbone's own."),
        click.option("--preprocess", type=click.Choice(sorted(PREPROCESS_MODES)),
                     help="Override the pixel preprocessing (model files default to none)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                     show_default=True, help="auto = mixed_float16 on GPU, float32 on CPU."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for random init and splits."),
    ]):
        command = option(command)
    return command


def load_dataset_and_backbone(data, val_fraction, seed, precision, backbone, weights, image_size, preprocess,
                              gpus_elsewhere=False):
    """featpipe.experiment.loaded_inputs for a command: its dtype policy holds until the command ends."""
    from featpipe.experiment import loaded_inputs

    dataset, base, device = click.get_current_context().with_resource(loaded_inputs(
        data, backbone, val_fraction=val_fraction, seed=seed, weights=weights,
        image_size=parse_image_size(image_size), preprocess=preprocess, precision=precision,
        gpus_elsewhere=gpus_elsewhere))
    if not base.pretrained:
        click.echo("note: random-initialised weights (--weights none): nothing pretrained to transfer", err=True)
    return dataset, base, device


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print a machine-readable summary as the last line of stdout.")


def echo_json(data: dict) -> None:
    click.echo(json.dumps(data, sort_keys=True, default=str))
