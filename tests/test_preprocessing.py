import importlib

import keras
import numpy as np
import pytest

from featpipe.backbones import KERAS_APP_PREPROCESSING
from featpipe.errors import FeatpipeError
from featpipe.preprocessing import MODES, Preprocessing, preprocessing_config


@pytest.mark.parametrize("module, mode", sorted(KERAS_APP_PREPROCESSING.items()))
def test_modes_match_keras_preprocess_input(module, mode):
    """The table of application -> mode must agree with Keras' own preprocess_input."""
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    expected = importlib.import_module(f"keras.applications.{module}").preprocess_input(pixels.copy())
    layer = Preprocessing.from_spec(preprocessing_config(mode))
    np.testing.assert_allclose(np.asarray(layer(pixels)), np.asarray(expected), rtol=1e-5, atol=1e-4)


def test_scale_offset_per_channel_and_serialisation(tmp_path):
    config = preprocessing_config("scale_offset", [1 / 255, 2 / 255, 3 / 255], [0.0, -1.0, 1.0])
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, Preprocessing.from_spec(config)(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.full((1, 4, 4, 3), 255.0, np.float32)
    out = np.asarray(keras.saving.load_model(path)(x))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 1.0, 4.0], rtol=1e-6)


def test_unknown_mode():
    with pytest.raises(FeatpipeError, match="unknown preprocessing 'yolo'"):
        preprocessing_config("yolo")


def test_cli_choices_match_library():
    from featpipe.backbones import WEIGHTS_CHOICES
    from featpipe.cli.options import PREPROCESS_MODES, WEIGHTS_CHOICES as CLI_WEIGHTS

    assert set(PREPROCESS_MODES) == set(MODES) and CLI_WEIGHTS == WEIGHTS_CHOICES
