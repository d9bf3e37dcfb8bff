"""featpipe.model_parts: the Keras pieces the dense head, fine-tuning, prediction and export share."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from featpipe import model_parts
from featpipe.model_parts import (
    all_layers, apply_layers, class_probabilities, classifier_layers, compiled_forward, frozen_forward,
    inference_forward, loss_name,
)


@pytest.mark.parametrize("n_classes, units", [(2, 1), (3, 3)])
def test_classifier_layers_are_seeded_and_end_in_float32_probabilities(n_classes, units):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    outputs = []
    for global_seed in (1, 2):
        keras.utils.set_random_seed(global_seed)  # the head's own seed decides, not the global one
        outputs.append(apply_layers(classifier_layers(n_classes, 8, 0.5, seed=3), x).numpy())
    np.testing.assert_array_equal(*outputs)
    assert outputs[0].shape == (5, units) and outputs[0].dtype == np.float32
    assert loss_name(n_classes) == ("binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy")
    other = apply_layers(classifier_layers(n_classes, 8, 0.5, seed=4), x).numpy()
    assert not np.array_equal(other, outputs[0])


def test_class_probabilities_turns_a_sigmoid_unit_into_two_columns():
    p = keras.Input((1,))
    model = keras.Model(p, class_probabilities(p))
    np.testing.assert_allclose(model(np.array([[0.25], [1.0]], "float32")).numpy(), [[0.75, 0.25], [0.0, 1.0]])
    assert not model.trainable_weights


def test_compiled_forward_serves_every_batch_size_with_one_graph():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    forward = compiled_forward(model)
    for n in (1, 4, 7):
        x = np.ones((n, 3), "float32")
        np.testing.assert_allclose(forward(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert forward.experimental_get_tracing_count() == 1


def conv_bn_model(filters: int = 4) -> keras.Model:
    """Convolution -> batch norm (moved statistics) -> ReLU -> pooling: what freezing lets TensorFlow fuse."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, use_bias=False)(inputs)
    norm = keras.layers.BatchNormalization()
    x = keras.layers.ReLU()(norm(x))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    rng = np.random.default_rng(0)
    norm.set_weights([rng.uniform(0.5, 2, filters), rng.normal(size=filters), rng.normal(size=filters),
                      rng.uniform(0.5, 2, filters)])
    return model


def test_frozen_forward_gives_the_models_features_with_its_weights_as_constants():
    model = conv_bn_model()
    forward = frozen_forward(model)
    x = np.random.default_rng(1).uniform(0, 1, (7, 8, 8, 3)).astype("float32")
    for n in (1, 4, 7):  # one graph for every batch size
        np.testing.assert_allclose(forward(x[:n]).numpy(), model(x[:n], training=False).numpy(), rtol=1e-5,
                                   atol=1e-6)
    before = forward(x).numpy()
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    np.testing.assert_array_equal(forward(x).numpy(), before)  # the graph holds the weights, not the variables


def test_inference_forward_freezes_small_models_on_a_cpu_only(monkeypatch):
    x = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype("float32")

    def frozen(on_gpu):  # whether the forward call kept the weights it was made with
        model = conv_bn_model()
        monkeypatch.setattr(model_parts.runtime, "gpus", lambda: ["GPU:0"] if on_gpu else [])
        forward = inference_forward(model)
        before = forward(x).numpy()
        model.set_weights([w + 1 for w in model.get_weights()])
        return np.array_equal(forward(x).numpy(), before)

    assert frozen(on_gpu=False) and not frozen(on_gpu=True)
    monkeypatch.setattr(model_parts, "FREEZE_MAX_BYTES", 4 * 3 * 3 * 3 * 4)  # the kernel's bytes, without the norm's
    assert not frozen(on_gpu=False)


def test_all_layers_reaches_nested_models():
    inner_input = keras.Input((3,))
    inner = keras.Model(inner_input, keras.layers.BatchNormalization(name="bn")(inner_input), name="inner")
    outer_input = keras.Input((3,))
    outer = keras.Model(outer_input, keras.layers.Dense(1, name="top")(inner(outer_input)))
    names = [layer.name for layer in all_layers(outer)]
    assert {"inner", "bn", "top"} <= set(names) and names.index("inner") < names.index("bn")  # depth first
