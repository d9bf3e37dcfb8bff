import importlib

import keras
import numpy as np
import pytest
from plain_keras import outputs_without_featpipe

from featpipe.backbones import KERAS_APP_PREPROCESSING
from featpipe.errors import FeatpipeError
from featpipe.preprocessing import preprocessing_config, preprocessing_layer


@pytest.mark.parametrize("module, mode", sorted(KERAS_APP_PREPROCESSING.items()))
def test_modes_match_keras_preprocess_input(module, mode):
    """The table of application -> mode must agree with Keras' own preprocess_input."""
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    expected = importlib.import_module(f"keras.applications.{module}").preprocess_input(pixels.copy())
    layer = preprocessing_layer(preprocessing_config(mode))
    np.testing.assert_allclose(np.asarray(layer(pixels)), np.asarray(expected), rtol=1e-5, atol=1e-4)


def test_the_layer_is_frozen():
    layer = preprocessing_layer(preprocessing_config("caffe"))
    assert not layer.trainable and not layer.trainable_weights


@pytest.mark.slow
def test_scale_offset_per_channel_loads_with_plain_keras(tmp_path):
    """A saved model that carries its preprocessing loads without featpipe and computes the same."""
    config = preprocessing_config("scale_offset", [1 / 255, 2 / 255, 3 / 255], [0.0, -1.0, 1.0])
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, preprocessing_layer(config)(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.full((1, 4, 4, 3), 255.0, np.float32)
    out = outputs_without_featpipe(path, x, tmp_path)
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(out, np.asarray(model(x)), rtol=1e-6)


def test_unknown_mode():
    with pytest.raises(FeatpipeError, match="unknown preprocessing 'yolo'"):
        preprocessing_config("yolo")
