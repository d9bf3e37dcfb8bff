"""Backbone specs -> a frozen pretrained base plus the preprocessing it was trained with.

A spec is one of:
- a keras-hub preset name (``xception_41_imagenet``), a hub handle (``kaggle://...``, ``hf://...``)
  or a local keras-hub preset directory;
- ``keras:<Application>`` with optional constructor keywords: ``keras:MobileNet(alpha=0.25)``;
- a saved Keras model file (``.keras`` / ``.h5``), optionally ``PATH:layer_name`` to cut it at a layer.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras

from featpipe.choices import WEIGHTS_CHOICES
from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.preprocessing import preprocessing_config, preprocessing_layer
from featpipe.provenance import dir_digest, file_digest

# keras.applications module -> the preprocess_input mode it implements (checked against Keras in the tests).
KERAS_APP_PREPROCESSING = {
    "vgg16": "caffe", "vgg19": "caffe", "resnet": "caffe",
    "resnet_v2": "tf", "xception": "tf", "inception_v3": "tf", "inception_resnet_v2": "tf",
    "mobilenet": "tf", "mobilenet_v2": "tf", "nasnet": "tf",
    "densenet": "torch",
    # These models rescale inside the network; their preprocess_input is the identity.
    "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none", "mobilenet_v3": "none",
}

# Known bases for `featpipe backbones`: spec -> (default input size, feature map at that size).
KNOWN_BACKBONES = {
    "keras:VGG16": (224, (7, 7, 512)),
    "keras:VGG19": (224, (7, 7, 512)),
    "keras:ResNet50": (224, (7, 7, 2048)),
    "keras:ResNet50V2": (224, (7, 7, 2048)),
    "keras:ResNet101": (224, (7, 7, 2048)),
    "keras:Xception": (299, (10, 10, 2048)),
    "keras:InceptionV3": (299, (8, 8, 2048)),
    "keras:InceptionResNetV2": (299, (8, 8, 1536)),
    "keras:MobileNet": (224, (7, 7, 1024)),
    "keras:MobileNetV2": (224, (7, 7, 1280)),
    "keras:MobileNetV3Small": (224, (7, 7, 576)),
    "keras:MobileNetV3Large": (224, (7, 7, 960)),
    "keras:DenseNet121": (224, (7, 7, 1024)),
    "keras:EfficientNetB0": (224, (7, 7, 1280)),
    "keras:EfficientNetV2B0": (224, (7, 7, 1280)),
    "keras:ConvNeXtTiny": (224, (7, 7, 768)),
    "keras:NASNetMobile": (224, (7, 7, 1056)),
    "xception_41_imagenet": (299, (10, 10, 2048)),
    "resnet_50_imagenet": (224, (7, 7, 2048)),
    "resnet_v2_50_imagenet": (224, (7, 7, 2048)),
    "vgg_16_imagenet": (224, (7, 7, 512)),
    "densenet_121_imagenet": (224, (7, 7, 1024)),
    "efficientnet_b0_ra_imagenet": (224, (7, 7, 1280)),
    "mobilenet_v3_large_100_imagenet": (224, (7, 7, 960)),
}

_KERAS_APP_SIZES = {
    "Xception": 299, "InceptionV3": 299, "InceptionResNetV2": 299, "NASNetLarge": 331,
    "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300, "EfficientNetB4": 380,
    "EfficientNetB5": 456, "EfficientNetB6": 528, "EfficientNetB7": 600,
    "EfficientNetV2B1": 240, "EfficientNetV2B2": 260, "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384, "EfficientNetV2M": 480, "EfficientNetV2L": 480,
}


@dataclass
class Backbone:
    """A frozen base: ``model`` maps preprocessed images to features; ``preprocessing`` describes the pixels."""

    spec: str
    kind: str  # "keras-hub" | "keras" | "file"
    model: keras.Model
    preprocessing: dict
    image_size: tuple[int, int]
    weights: str  # "imagenet", "none", "file" or a path
    weights_id: str
    extra: dict = field(default_factory=dict)
    # load_backbone's arguments, so that worker processes can load the same base (empty when made by hand).
    recipe: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for file names: the application, preset or model file name."""
        name = self.spec.split("(")[0].removeprefix("keras:")
        return Path(name.rstrip("/")).name if self.kind != "keras" else name

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"

    def identity(self) -> dict:
        """What makes two bases compute the same features (part of the cache key)."""
        return {"spec": self.spec, "kind": self.kind, "weights": self.weights, "weights_id": self.weights_id,
                "preprocessing": self.preprocessing}

    def feature_model(self, pooling: str = "avg", name: str = "features") -> keras.Model:
        """0-255 RGB images -> preprocessing -> frozen base (inference mode) -> pooled features."""
        inputs = keras.Input((*self.image_size, 3), name="image")
        x = preprocessing_layer(self.preprocessing)(inputs)
        x = self.model(x, training=False)
        x = pooling_layer(pooling, len(x.shape))(x)
        return keras.Model(inputs, keras.ops.cast(x, "float32"), name=name)


def pooling_layer(pooling: str, rank: int) -> keras.layers.Layer:
    """Global pooling over every axis between batch and channels (spatial maps or token sequences)."""
    if pooling == "none" or rank == 2:
        return keras.layers.Identity(name="no_pooling")
    layers = {
        ("avg", 4): keras.layers.GlobalAveragePooling2D, ("max", 4): keras.layers.GlobalMaxPooling2D,
        ("avg", 3): keras.layers.GlobalAveragePooling1D, ("max", 3): keras.layers.GlobalMaxPooling1D,
    }
    if (pooling, rank) not in layers:
        raise FeatpipeError(f"cannot apply pooling {pooling!r} to features of rank {rank}")
    return layers[pooling, rank](name=f"{pooling}_pool")


def load_backbone(
    spec: str,
    weights: str = "default",
    image_size: int | tuple[int, int] | None = None,
    preprocess: str | None = None,
    seed: int = 0,
) -> Backbone:
    """Resolve a spec into a frozen Backbone. `weights`: default | imagenet | none | PATH."""
    if weights == "none":
        keras.utils.set_random_seed(seed)  # random init must be reproducible to be cacheable
    if weights not in WEIGHTS_CHOICES and not os.path.exists(weights):
        raise ArgumentError(f"{{weights}} must be imagenet, none or an existing file, got {weights!r}", "weights")
    size = _size_pair(image_size)
    spec = _absolute(spec)
    backbone = _resolve(spec)(spec, weights, size)
    _check_input_size(backbone)
    if preprocess is not None:
        backbone.preprocessing = preprocessing_config(preprocess)
    if weights == "none":
        backbone.weights_id = f"random(seed={seed})"
    backbone.model.trainable = False
    backbone.recipe = {"spec": spec, "weights": weights, "image_size": list(size) if size else None,
                       "preprocess": preprocess, "seed": seed}
    return backbone


def _check_input_size(backbone: Backbone) -> None:
    fixed = tuple(backbone.model.input_shape[1:3])
    if any(want not in (None, got) for want, got in zip(fixed, backbone.image_size)):
        raise FeatpipeError(f"{backbone.spec} takes {fixed[0]}x{fixed[1]} images only, "
                            f"not {backbone.image_size[0]}x{backbone.image_size[1]}; drop --image-size")


def _size_pair(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < 8:
        raise FeatpipeError(f"image size must be at least 8x8, got {size}")
    return int(pair[0]), int(pair[1])


def _absolute(spec: str) -> str:
    """Local files and preset folders are recorded by absolute path, so that runs and exported
    models made from a cache still find them from another working directory."""
    path, sep, layer = spec.rpartition(":")
    if os.path.exists(spec):
        return os.path.abspath(spec)
    if sep and os.path.isfile(path):
        return f"{os.path.abspath(path)}:{layer}"
    return spec


def _resolve(spec: str):
    """Which loader a spec names; hub handles (kaggle://, hf://) go to keras-hub."""
    if spec.startswith("keras:"):
        return _load_keras_application
    if "://" in spec or os.path.isdir(spec):
        return _load_hub_preset
    path, sep, _ = spec.rpartition(":")
    if os.path.isfile(spec) or (sep and os.path.isfile(path)):
        return _load_model_file
    if "/" in spec or os.sep in spec or spec.endswith((".keras", ".h5")):
        raise FeatpipeError(f"no such model file or preset directory: {spec}")
    return _load_hub_preset


# --- keras.applications ------------------------------------------------------------------------------

_KERAS_SPEC = re.compile(r"^keras:(\w+)(?:\((.*)\))?$")


def parse_keras_spec(spec: str) -> tuple[str, dict]:
    """``keras:MobileNet(alpha=0.25)`` -> ("MobileNet", {"alpha": 0.25}); literals only."""
    match = _KERAS_SPEC.match(spec.replace(" ", ""))
    if not match:
        raise FeatpipeError(f"bad backbone spec {spec!r}: expected keras:Name or keras:Name(key=value, ...)")
    name, args = match.groups()
    if name not in keras_application_names():
        hint = difflib.get_close_matches(name, keras_application_names(), n=3)
        raise FeatpipeError(f"unknown keras application {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint else ""))
    try:
        call = ast.parse(f"f({args or ''})", mode="eval").body
        if call.args:
            raise ValueError("use key=value arguments")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise FeatpipeError(f"bad arguments in {spec!r}: {e}") from None
    reserved = {"include_top", "weights", "input_shape", "input_tensor", "pooling", "classes"} & set(kwargs)
    if reserved:
        raise FeatpipeError(f"{spec!r}: {', '.join(sorted(reserved))} are set by featpipe (see --weights, --pooling, --image-size)")
    return name, kwargs


def keras_application_names() -> list[str]:
    return sorted(n for n in dir(keras.applications) if n[0].isupper())


def _load_keras_application(spec: str, weights: str, size) -> Backbone:
    name, kwargs = parse_keras_spec(spec)
    constructor = getattr(keras.applications, name)
    module = constructor.__module__.rsplit(".", 1)[-1]
    size = size or (_KERAS_APP_SIZES.get(name, 224),) * 2
    keras_weights = {"default": "imagenet", "imagenet": "imagenet", "none": None}.get(weights, weights)
    try:
        model = constructor(include_top=False, weights=keras_weights, input_shape=(*size, 3), **kwargs)
    except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for download failures
        raise _keras_app_error(name, e) from None
    weights_name = "imagenet" if keras_weights == "imagenet" else (weights if keras_weights else "none")
    weights_id = file_digest(weights) if os.path.isfile(weights) else weights_name
    return Backbone(spec, "keras", model, preprocessing_config(KERAS_APP_PREPROCESSING.get(module, "none")),
                    size, weights_name, weights_id)


def _keras_app_error(name: str, error: Exception) -> FeatpipeError:
    message = _first_line(error)
    url = re.search(r"https?://\S+?\.h5", message)
    if "URL fetch failure" in message and url:
        fname = url.group(0).rsplit("/", 1)[-1]
        models_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        return FeatpipeError(
            f"cannot download ImageNet weights for {name} (no network?): put {fname} in {models_dir}/ "
            f"(from {url.group(0)}), or pass --weights PATH; --weights none gives random weights"
        )
    return FeatpipeError(f"cannot build keras:{name}: {message}")


# --- keras-hub presets -------------------------------------------------------------------------------


def _load_hub_preset(spec: str, weights: str, size) -> Backbone:
    import keras_hub

    local = os.path.isdir(spec)
    try:
        model = keras_hub.models.Backbone.from_preset(spec, load_weights=weights in ("default", "imagenet"))
        converter = _hub_converter(spec)
    except (OSError, ConnectionError) as e:
        raise FeatpipeError(
            f"cannot fetch keras-hub preset {spec!r} ({type(e).__name__}; no network?). Where there is network, "
            f"save it with keras_hub.models.Backbone.from_preset({spec!r}).save_to_preset(DIR) and "
            f"keras_hub.layers.ImageConverter.from_preset({spec!r}).save_to_preset(DIR), copy DIR here "
            "and pass --backbone DIR"
        ) from None
    except ValueError as e:
        raise FeatpipeError(f"unknown backbone {spec!r}: not a keras-hub preset, keras:<Application> or model file "
                            f"({_first_line(e)[:120]})") from None
    if os.path.isfile(weights):
        _load_weights(model, weights)
    if converter is not None:
        # A converter without scale/offset passes pixels through unchanged.
        scale = 1.0 if converter.scale is None else converter.scale
        offset = 0.0 if converter.offset is None else converter.offset
        preprocessing = preprocessing_config("scale_offset", scale, offset)
        size = size or tuple(converter.image_size or (224, 224))
    else:
        preprocessing = preprocessing_config("none")
        size = size or (224, 224)
    weights_name = {"default": "imagenet"}.get(weights, weights)
    if os.path.isfile(weights):
        weights_id = file_digest(weights)
    elif local and weights_name == "imagenet":
        weights_id = dir_digest(spec)
    else:
        weights_id = weights_name
    return Backbone(spec, "keras-hub", model, preprocessing, tuple(size), weights_name, weights_id,
                    extra={"converter": converter is not None})


def _hub_converter(spec: str):
    """The preset's ImageConverter, or None when the preset has none (then --preprocess decides)."""
    import keras_hub

    try:
        return keras_hub.layers.ImageConverter.from_preset(spec)
    except (ValueError, FileNotFoundError):
        return None


# --- saved model files -------------------------------------------------------------------------------


def _load_model_file(spec: str, weights: str, size) -> Backbone:
    path, layer = (spec, "") if os.path.isfile(spec) else tuple(spec.rsplit(":", 1))
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for unreadable files
        raise FeatpipeError(f"cannot load model file {path}: {_first_line(e)}") from None
    if layer:
        model = _cut_at(model, layer)
    if weights == "none":
        model = keras.models.clone_model(model)  # same architecture, fresh random weights
    elif os.path.isfile(weights):
        _load_weights(model, weights)
    input_hw = tuple(model.input_shape[1:3])
    size = size or (input_hw if None not in input_hw else (224, 224))
    weights_name = "file" if weights in ("default", "imagenet") else weights
    weights_id = file_digest(weights if os.path.isfile(weights) else path) if weights != "none" else "none"
    return Backbone(spec, "file", model, preprocessing_config("none"), tuple(size), weights_name, weights_id)


def _cut_at(model: keras.Model, layer: str) -> keras.Model:
    try:
        output = model.get_layer(layer).output
    except ValueError:
        names = [lyr.name for lyr in model.layers]
        hint = difflib.get_close_matches(layer, names, n=3)
        raise FeatpipeError(f"model has no layer {layer!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")) from None
    return keras.Model(model.inputs, output, name=f"{model.name}_to_{layer}")


def _load_weights(model: keras.Model, path: str) -> None:
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - shape mismatches and unreadable files alike
        raise FeatpipeError(f"cannot load weights {path}: {_first_line(e)}") from None


# --- helpers -----------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
