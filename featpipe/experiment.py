"""The comparison grid: every backbone extracted once, every head on every cache, optionally the
end-to-end path, then the report. Each step reuses what is finished, so an interrupted grid resumes."""

from __future__ import annotations

import logging
import math
import os
import tomllib
import types
import typing
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from featpipe.errors import FeatpipeError

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """One grid: backbones x heads (+ fine-tuning) on one dataset. Field names match the TOML file's keys."""

    data: str
    backbones: list[str]
    heads: list[str] = field(default_factory=lambda: ["dense", "logreg", "linear-svm", "svm"])
    finetune: bool = False
    weights: str = "default"
    image_size: int | None = None
    pooling: str = "avg"
    val_fraction: float | None = None
    seed: int = 0
    batch_size: int | None = None
    params: list[str] = field(default_factory=list)
    epochs: int = 10
    fine_tune_epochs: int = 10
    unfreeze: str = "top:4"
    cache_dir: str = "cache"
    runs_dir: str = "runs"
    precision: str = "auto"

    def __post_init__(self):
        if not self.backbones:
            raise FeatpipeError("the experiment names no backbone")
        if not self.heads and not self.finetune:
            raise FeatpipeError("the experiment names no head and no fine-tuning: nothing to compare")


def load_experiment(path: str | os.PathLike, **overrides) -> Experiment:
    """An Experiment from a TOML file (top-level keys = Experiment fields); relative paths are taken
    relative to the file. `overrides` that are not None win over the file. Every key is type-checked:
    a wrong type, a missing required key or an unknown key is a one-line error naming the file."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FeatpipeError(f"experiment file not found: {path}") from None
    except UnicodeDecodeError:
        raise FeatpipeError(f"{path} is not a TOML text file (not UTF-8)") from None
    except OSError as e:
        raise FeatpipeError(f"cannot read experiment file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise FeatpipeError(f"bad TOML in {path}: {e}") from None
    known = {f.name for f in fields(Experiment)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise FeatpipeError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    _check_types(config, path)
    for key in ("data", "cache_dir", "runs_dir"):
        if key in config:
            config[key] = str(path.parent / config[key])
    config.update({k: v for k, v in overrides.items() if v is not None})
    missing = [f.name for f in fields(Experiment)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in config]
    if missing:
        raise FeatpipeError(f"{path}: missing required key {', '.join(missing)}")
    return Experiment(**config)


def _check_types(config: dict, path: Path) -> None:
    hints = typing.get_type_hints(Experiment)
    for key, value in config.items():
        if not _matches(value, hints[key]):
            hint = f' (write {key} = ["{value}"])' if isinstance(value, str) and typing.get_origin(hints[key]) is list else ""
            raise FeatpipeError(f"{path}: {key} must be {_describe(hints[key])}, got {_describe_value(value)}{hint}")


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:  # an integer is a fine float; a boolean is not a number; nan and inf are no fraction
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint) if arg is not type(None))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]


def _describe_value(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


@contextmanager
def loaded_inputs(data, backbone: str, *, val_fraction: float | None = None, seed: int = 0,
                  weights: str = "default", image_size: int | tuple[int, int] | None = None,
                  preprocess: str | None = None, precision: str = "auto", gpus_elsewhere: bool = False):
    """What extract, finetune and the grid start with: yields (dataset, frozen base, device label).

    `data` is a dataset folder (listed with `val_fraction` and `seed`) or an ImageFolder already listed.
    The base is built under the dtype policy `precision` names, as Keras requires; the policy holds until the
    block ends, then the previous one comes back. With `gpus_elsewhere` the GPUs belong to worker processes
    (an engine's): this process builds the base on the CPU (to compute the key) and leaves them alone.
    """
    from featpipe.data import ImageFolder, load_image_folder

    dataset = data if isinstance(data, ImageFolder) else load_image_folder(data, val_fraction=val_fraction, seed=seed)
    from featpipe import runtime  # TensorFlow loads from here: a missing dataset was said before, and faster
    from featpipe.backbones import load_backbone

    with runtime.precision_scope(precision) as setup:
        if gpus_elsewhere:
            runtime.hide_gpus()
        base = load_backbone(backbone, weights=weights, image_size=image_size, preprocess=preprocess, seed=seed)
        yield dataset, base, setup["device"]


def run_experiment(exp: Experiment, progress: bool = True) -> tuple[list[Path], list[str]]:
    """Run (or resume) the grid; returns the run directories and notes for the report."""
    from featpipe import runtime
    from featpipe.data import load_image_folder

    data = load_image_folder(exp.data, val_fraction=exp.val_fraction, seed=exp.seed)
    data.require_classes("train")  # before any extraction: every head and fine-tuning would refuse later
    batch_size = exp.batch_size or runtime.default_batch_size()
    run_dirs, notes = [], []
    for spec in exp.backbones:
        with loaded_inputs(data, spec, seed=exp.seed, weights=exp.weights, image_size=exp.image_size,
                           precision=exp.precision) as (_, backbone, device):
            if not backbone.pretrained:
                notes.append(f"{spec}: random-initialised weights, so its accuracies show the pipeline at work, "
                             "not what pretrained features reach")
            run_dirs += _cached_heads(exp, data, backbone, batch_size, progress)
            if exp.finetune:
                run_dirs.append(_finetune(exp, data, backbone, batch_size, device))
    return run_dirs, notes


def _cached_heads(exp: Experiment, data, backbone, batch_size: int, progress: bool) -> list[Path]:
    from featpipe.extraction import extract
    from featpipe.heads import make_head, parse_param_options
    from featpipe.train import open_for_training, train_head

    result = extract(data, backbone, exp.cache_dir, pooling=exp.pooling, batch_size=batch_size,
                     precision=exp.precision, progress=progress)
    log.info("%s %s", "cached" if result.cached else "extracted", result.path)
    params = parse_param_options(exp.params, exp.heads)
    run_dirs = []
    with open_for_training(result.path) as cache:
        for name in exp.heads:
            log.info("head %s on %s", name, result.path.name)
            trained = train_head(cache, make_head(name, params[name], seed=exp.seed), exp.runs_dir)
            log.info("%s %s", "reused" if trained.reused else "trained", trained.run_dir)
            run_dirs.append(trained.run_dir)
    return run_dirs


def _finetune(exp: Experiment, data, backbone, batch_size: int, device: str) -> Path:
    from featpipe.choices import DEFAULT_AUGMENT
    from featpipe.finetune import FineTuner, run_finetune

    # The tuner trains its own copy of the base: `backbone` stays as loaded, whatever runs after this.
    tuner = FineTuner(backbone, augment=DEFAULT_AUGMENT, pooling=exp.pooling, epochs=exp.epochs,
                      fine_tune_epochs=exp.fine_tune_epochs, batch_size=batch_size, unfreeze=exp.unfreeze,
                      precision=exp.precision, seed=exp.seed)
    log.info("end-to-end: %s, %d + %d epochs", backbone.spec, exp.epochs, exp.fine_tune_epochs)
    run = run_finetune(data, tuner, exp.runs_dir, device=device)
    log.info("%s %s", "reused" if run.reused else "fine-tuned", run.run_dir)
    return run.run_dir
