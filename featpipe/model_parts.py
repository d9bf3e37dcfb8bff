"""Keras pieces that more than one path builds with: the cached-feature dense head, the end-to-end path,
prediction and export.

- `classifier_layers`: the Deep Learning with Python head, Dense(relu) -> Dropout -> sigmoid / softmax,
  seeded explicitly (no global seed);
- `class_probabilities`: a sigmoid unit -> one column per class, inside the graph;
- `compiled_forward`: one traced inference call for every batch size; `frozen_forward`, the same with the
  weights made constants of the graph (and depthwise convolutions' scales folded into their filters,
  featpipe.depthwise_folding), and `inference_forward`, which of the two a CPU extraction runs;
- `make_optimizer`, `loss_name`, `apply_layers`, `all_layers`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from featpipe import runtime
from featpipe.choices import OPTIMIZERS
from featpipe.depthwise_folding import fold_forward


def classifier_layers(n_classes: int, units: int, dropout: float, seed: int = 0,
                      output_name: str = "predictions") -> list[keras.layers.Layer]:
    """Dense(units, relu) -> Dropout -> one sigmoid unit (two classes) or a softmax; initialisers and
    dropout are seeded from `seed`, so the same seed gives the same head whatever ran before."""
    binary = n_classes == 2
    return [
        keras.layers.Dense(units, activation="relu", name="dense",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed)),
        keras.layers.Dropout(dropout, seed=seed, name="dropout"),
        # float32 output: softmax/sigmoid in float16 would lose precision under mixed precision.
        keras.layers.Dense(1 if binary else n_classes, activation="sigmoid" if binary else "softmax",
                           dtype="float32", name=output_name,
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)),
    ]


def loss_name(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """One of featpipe.choices.OPTIMIZERS by name."""
    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate)


def apply_layers(layers: list[keras.layers.Layer], x):
    for layer in layers:
        x = layer(x)
    return x


def class_probabilities(p):
    """A sigmoid unit p -> [1 - p, p] inside a Keras graph, so a binary model outputs one column per class.

    A frozen built-in Dense layer: a saved model that uses it loads with no custom code.
    """
    layer = keras.layers.Dense(2, dtype="float32", trainable=False, name="class_probabilities")
    outputs = layer(p)
    layer.set_weights([np.array([[-1.0, 1.0]]), np.array([1.0, 0.0])])
    return outputs


def compiled_forward(model: keras.Model):
    """One traced graph for every batch size: calling the model, not predict() in a loop."""
    return _one_graph(model, lambda images: model(images, training=False))


def _one_graph(model: keras.Model, call):
    """`call` traced once for batches of any size of the model's input."""
    return tf.function(call, input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])


def frozen_forward(model: keras.Model):
    """`compiled_forward` with the model's weights copied into the graph as constants, for inference only (later
    changes to the weights are not seen). TensorFlow's graph optimiser can then fold each batch normalisation into
    the convolution before it and fuse convolution, bias and activation into one kernel, instead of passing over
    every activation map three or four times: 30-45% more images/s from MobileNets and EfficientNets on a CPU.
    Traced at once, with what the optimiser leaves unfolded by depthwise convolutions folded into their filters
    (featpipe.depthwise_folding)."""
    # Keras' stateless call reads the weights from these arrays, which tracing makes constants of the graph.
    trainable = [v.numpy() for v in model.trainable_variables]
    fixed = [v.numpy() for v in model.non_trainable_variables]
    frozen = _one_graph(model, lambda images: model.stateless_call(trainable, fixed, images, training=False)[0])
    return fold_forward(frozen)


# The largest weights `inference_forward` freezes: beyond, constant folding makes the build seconds longer (ResNet50's
# 100 MB: 4.9 s against 2.2 s) and the gain is small where the convolutions' arithmetic dominates (ResNet50: 5%).
FREEZE_MAX_BYTES = 64 << 20


def inference_forward(model: keras.Model):
    """The forward call a run over many images should use: `frozen_forward` on a CPU for a model whose weights
    take at most FREEZE_MAX_BYTES, `compiled_forward` otherwise (on a GPU the freezing is not measured)."""
    small = runtime.variable_bytes(model.weights) <= FREEZE_MAX_BYTES
    return frozen_forward(model) if small and not runtime.gpus() else compiled_forward(model)


def all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested models' layers included, depth first (public API only)."""
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += all_layers(layer)
    return found


def standardize_layers(mean, scale, name: str = "standardize", dtype=None) -> list[keras.layers.Layer]:
    """(x - mean) / scale as built-in layers, exact at any scale (scikit-learn's StandardScaler, whose `scale_`
    is 1 where a feature is constant).

    keras' Normalization divides by max(sqrt(variance), epsilon=1e-7), so features whose deviation is below
    1e-7 (a random-initialised base gives ~1e-17) would stay tiny. The first layer divides by max(scale,
    epsilon) with that floor; an inverted Normalization (x * sqrt(variance) + mean) then multiplies by
    max(scale, epsilon) / scale, which is 1 wherever the floor did not apply. Exact in float32 for deviations
    from about 1e-26 to 1e19.
    """
    mean = np.asarray(mean, dtype=np.float64).ravel()
    scale = np.asarray(scale, dtype=np.float64).ravel()
    floored = np.maximum(scale, keras.backend.epsilon())
    return [
        keras.layers.Normalization(mean=mean, variance=floored**2, name=name, dtype=dtype),
        keras.layers.Normalization(mean=np.zeros_like(mean), variance=(floored / scale) ** 2, invert=True,
                                   name=f"{name}_small_scale", dtype=dtype),
    ]
