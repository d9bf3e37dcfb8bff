import dataclasses

import numpy as np
import pytest

from featpipe import pretrain, shapes
from featpipe.backbones import load_backbone
from featpipe.pretrain import FEATURES_LAYER, PretrainConfig, pretrained_base

TINY = PretrainConfig(image_size=16, widths=(4, 8), per_class=2, validation_per_class=1, epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return pretrained_base(tmp_path_factory.mktemp("bases"), TINY, verbose=False)


@pytest.mark.slow
def test_pretraining_saves_a_base_and_its_record(tiny_base):
    assert not tiny_base.reused
    assert tiny_base.path.is_file() and tiny_base.path.suffix == ".keras"
    assert tiny_base.path.with_suffix(".json").is_file()
    record = tiny_base.record
    assert record["key"] == TINY.key() and record["sha256"].startswith("sha256:")
    assert len(record["source_classes"]) == 54 and record["config"]["widths"] == [4, 8]
    assert 0 <= record["source_val_accuracy"] <= 1 and len(record["history"]["loss"]) == 1
    assert not list(tiny_base.path.parent.glob("*partial*"))


def test_the_base_is_used_through_the_model_file_route(tiny_base):
    assert tiny_base.spec == f"{tiny_base.path}:{FEATURES_LAYER}"
    backbone = load_backbone(tiny_base.spec)
    assert backbone.kind == "file" and backbone.pretrained and backbone.image_size == (16, 16)
    assert backbone.model.output_shape == (None, 8, 8, 8)  # cut at the last block, before pooling
    images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    assert backbone.feature_model()(images).shape == (3, 8)
    # --weights none: the same architecture, other weights.
    control = load_backbone(tiny_base.spec, weights="none")
    assert [w.shape for w in control.model.weights] == [w.shape for w in backbone.model.weights]
    assert not control.pretrained
    assert not np.allclose(control.model.get_layer("block1_conv").kernel, backbone.model.get_layer("block1_conv").kernel)


def test_a_second_call_reuses_the_cached_base(tiny_base, monkeypatch):
    monkeypatch.setattr(pretrain, "_pretrain", lambda *a: pytest.fail("pretrained again"))
    again = pretrained_base(tiny_base.path.parent, TINY)
    assert again.reused and again.path == tiny_base.path and again.record == tiny_base.record


class Pretrained(Exception):
    pass


@pytest.fixture
def cached_copy(tiny_base, tmp_path, monkeypatch):
    """A copy of the tiny base's cache folder, where pretraining again raises Pretrained instead."""
    for source in (tiny_base.path, tiny_base.path.with_suffix(".json")):
        (tmp_path / source.name).write_bytes(source.read_bytes())

    def pretrain_again(*args):
        raise Pretrained

    monkeypatch.setattr(pretrain, "_pretrain", pretrain_again)
    return tmp_path / tiny_base.path.name


def test_an_intact_copy_is_reused(cached_copy):
    assert pretrained_base(cached_copy.parent, TINY).reused


def test_a_file_that_does_not_match_its_record_is_never_loaded(cached_copy, caplog):
    cached_copy.write_bytes(cached_copy.read_bytes() + b"tampered")
    with pytest.raises(Pretrained):
        pretrained_base(cached_copy.parent, TINY)
    assert "does not match its record" in caplog.text


def test_a_file_without_its_record_is_pretrained_again(cached_copy):
    cached_copy.with_suffix(".json").unlink()
    with pytest.raises(Pretrained):
        pretrained_base(cached_copy.parent, TINY)


def test_a_record_of_another_config_is_not_taken(cached_copy):
    record = cached_copy.with_suffix(".json")
    record.write_text(record.read_text().replace(TINY.key(), "0" * 16))
    with pytest.raises(Pretrained):
        pretrained_base(cached_copy.parent, TINY)


def test_the_key_covers_what_determines_the_base(monkeypatch):
    keys = {TINY.key()}
    for change in ({"seed": 1}, {"epochs": 2}, {"widths": (4, 16)}, {"per_class": 3}, {"image_size": 24}):
        keys.add(dataclasses.replace(TINY, **change).key())
    assert len(keys) == 6
    assert TINY.key() == dataclasses.replace(TINY).key()
    monkeypatch.setattr(shapes, "GENERATOR_VERSION", 999)
    assert TINY.key() not in keys


@pytest.mark.slow
def test_pretraining_learns_the_source_task():
    # Two easy classes, a few epochs: well above chance on held-out source images.
    config = dataclasses.replace(TINY, widths=(8, 16), per_class=40, validation_per_class=20, epochs=6,
                                 batch_size=8, learning_rate=1e-2)
    classes = (("circle", "solid"), ("cross", "vstripes"))
    model = pretrain.build_classifier(config, len(classes))
    assert model.get_layer(FEATURES_LAYER).output.shape == (None, 8, 8, 16)
    _, history = pretrain.train_classifier(config, classes, verbose=False)
    assert history["val_accuracy"][-1] >= 0.75
