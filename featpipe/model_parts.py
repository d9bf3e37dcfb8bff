"""Keras pieces that more than one path builds with: the cached-feature dense head, the end-to-end path,
prediction and export.

- `classifier_layers`: the Deep Learning with Python head, Dense(relu) -> Dropout -> sigmoid / softmax,
  seeded explicitly (no global seed);
- `class_probabilities`: a sigmoid unit -> one column per class, inside the graph;
- `compiled_forward`: one traced inference call for every batch size;
- `make_optimizer`, `loss_name`, `apply_layers`, `all_layers`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from featpipe.choices import OPTIMIZERS


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
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    return tf.function(lambda images: model(images, training=False), input_signature=[spec])


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
