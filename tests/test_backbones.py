import os
import socket

import keras
import numpy as np
import pytest

from featpipe import backbones
from featpipe.backbones import load_backbone, parse_keras_spec
from featpipe.errors import FeatpipeError


def test_parse_keras_spec():
    assert parse_keras_spec("keras:VGG16") == ("VGG16", {})
    assert parse_keras_spec("keras:MobileNet(alpha=0.25, depth_multiplier=1)") == (
        "MobileNet", {"alpha": 0.25, "depth_multiplier": 1})


@pytest.mark.parametrize("spec, message", [
    ("keras:VGG61", "unknown keras application 'VGG61'; did you mean VGG19, VGG16"),
    ("keras:MobileNet(alpha=)", "bad arguments"),
    ("keras:MobileNet(0.25)", "key=value"),
    ("keras:MobileNet(alpha=__import__('os'))", "bad arguments"),
    ("keras:MobileNet(weights=None)", "weights are set by featpipe"),
    ("keras:", "bad backbone spec"),
])
def test_parse_keras_spec_errors(spec, message):
    with pytest.raises(FeatpipeError, match=message.replace("(", r"\(")):
        parse_keras_spec(spec)


def _features(backbone, pooling="avg", n=2):
    x = np.random.default_rng(0).uniform(0, 255, (n, *backbone.image_size, 3)).astype(np.float32)
    return np.asarray(backbone.feature_model(pooling)(x))


def test_keras_application_random_init_is_reproducible():
    a = load_backbone("keras:MobileNet(alpha=0.25)", weights="none", image_size=32, seed=1)
    b = load_backbone("keras:MobileNet(alpha=0.25)", weights="none", image_size=32, seed=1)
    assert a.kind == "keras" and a.image_size == (32, 32) and not a.pretrained
    assert a.preprocessing["mode"] == "tf" and a.weights_id == "random(seed=1)"
    assert not a.model.trainable and not a.model.trainable_weights
    np.testing.assert_array_equal(_features(a), _features(b))
    assert _features(a).shape == (2, 256)


@pytest.mark.slow
def test_keras_application_weights_file(tmp_path):
    random_init = load_backbone("keras:MobileNet(alpha=0.25)", weights="none", image_size=32, seed=5)
    path = str(tmp_path / "w.weights.h5")
    random_init.model.save_weights(path)
    loaded = load_backbone("keras:MobileNet(alpha=0.25)", weights=path, image_size=32, seed=9)
    assert loaded.pretrained and loaded.weights_id.startswith("sha256:")
    np.testing.assert_allclose(_features(loaded), _features(random_init), rtol=1e-5)


def test_offline_imagenet_weights_fail_with_instructions(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):  # what a machine without DNS or network answers
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(FeatpipeError) as error:
        load_backbone("keras:MobileNetV2", image_size=96)
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert str(tmp_path / "kh" / "models") in message and "--weights" in message


def test_hub_preset_dir(tiny_preset_dir):
    backbone = load_backbone(tiny_preset_dir)
    assert backbone.kind == "keras-hub" and backbone.image_size == (32, 32)
    assert backbone.preprocessing == {"mode": "scale_offset", "bgr": False, "scale": [1 / 127.5], "offset": [-1.0]}
    assert backbone.weights == "imagenet" and backbone.weights_id.startswith("sha256:")
    assert _features(backbone, "none").shape == (2, 7, 7, 16)
    assert load_backbone(tiny_preset_dir, image_size=(48, 64)).image_size == (48, 64)


def test_hub_preset_offline_says_how_to_provide_it(monkeypatch):
    import keras_hub
    import requests

    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(FeatpipeError, match=r"cannot fetch keras-hub preset 'xception_41_imagenet'.*save_to_preset"):
        load_backbone("xception_41_imagenet")


def test_unknown_backbone_name():
    with pytest.raises(FeatpipeError, match="unknown backbone 'not_a_backbone'"):
        load_backbone("not_a_backbone")


def test_model_file_cut_and_random_weights(tiny_model_file):
    whole = load_backbone(tiny_model_file)
    assert whole.kind == "file" and whole.image_size == (32, 32) and whole.weights == "file"
    assert whole.preprocessing["mode"] == "none"
    cut = load_backbone(f"{tiny_model_file}:relu1")
    assert _features(cut, "none").shape == (2, 16, 16, 8)
    fresh = load_backbone(tiny_model_file, weights="none", seed=3)
    assert fresh.weights_id == "random(seed=3)"
    assert not np.allclose(_features(fresh), _features(whole))
    with pytest.raises(FeatpipeError, match="no layer 'relu3'; did you mean relu2, relu1"):
        load_backbone(f"{tiny_model_file}:relu3")


def test_preprocess_override_and_bad_inputs(tiny_model_file, tmp_path):
    assert load_backbone(tiny_model_file, preprocess="caffe").preprocessing["bgr"] is True
    with pytest.raises(FeatpipeError, match="no such model file"):
        load_backbone(str(tmp_path / "missing" / "model.keras"))
    with pytest.raises(FeatpipeError, match="^weights must be"):
        load_backbone(tiny_model_file, weights="imagenet21k")
    with pytest.raises(FeatpipeError, match="takes 32x32 images only, not 24x24"):
        load_backbone(tiny_model_file, image_size=24)
    with pytest.raises(FeatpipeError, match="at least 8x8"):
        load_backbone(tiny_model_file, image_size=4)
    broken = tmp_path / "broken.keras"
    broken.write_text("not a model")
    with pytest.raises(FeatpipeError, match="cannot load model file"):
        load_backbone(str(broken))


def test_pooling_variants_really_differ(tiny_model_file):
    backbone = load_backbone(tiny_model_file)
    maps = _features(backbone, "none")
    np.testing.assert_allclose(_features(backbone, "avg"), maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_features(backbone, "max"), maps.max(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_pooling_of_token_sequences():
    tokens = keras.ops.convert_to_tensor(np.arange(24, dtype=np.float32).reshape(1, 4, 6))
    assert np.asarray(backbones.pooling_layer("max", 3)(tokens)).tolist() == [[18, 19, 20, 21, 22, 23]]


@pytest.mark.parametrize("spec", ["keras:MobileNetV2", "keras:VGG16"])
def test_known_backbone_table(spec):
    size, shape = backbones.KNOWN_BACKBONES[spec]
    base = load_backbone(spec, weights="none")
    assert base.image_size == (size, size)
    assert tuple(base.model.output_shape[1:]) == shape


def test_local_specs_are_recorded_by_absolute_path(tiny_model_file, monkeypatch):
    folder, name = os.path.split(tiny_model_file)
    monkeypatch.chdir(folder)
    assert load_backbone(name).spec == tiny_model_file
    assert load_backbone(f"{name}:relu1").spec == f"{tiny_model_file}:relu1"
    assert load_backbone(name).label == "tiny.keras"
