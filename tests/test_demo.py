import pytest

from featpipe import backbones, demo
from featpipe.errors import FeatpipeError
from featpipe.runs import read_json


def test_demo_generates_data_and_writes_the_report(tmp_path, tiny_model_file):
    result = demo.run_demo(tmp_path / "out", backbone=tiny_model_file, epochs=1, fine_tune_epochs=1, progress=False)
    assert (tmp_path / "out" / "data" / "train" / "checks").is_dir()
    summary = read_json(result["summary_json"])
    assert sorted(row["head"] for row in summary["runs"]) == ["dense", "finetune", "linear-svm", "logreg", "svm"]
    assert result["html"].is_file() and result["notes"] == []


def test_default_base_falls_back_to_random_weights_and_says_so(monkeypatch, caplog):
    def offline(spec, weights, **kwargs):
        raise FeatpipeError("cannot download ImageNet weights")

    monkeypatch.setattr(backbones, "load_backbone", offline)
    assert demo.demo_weights(demo.DEMO_BACKBONE, demo.DEMO_IMAGE_SIZE) == "none"
    assert "using random-initialised weights" in caplog.text


def test_default_base_uses_imagenet_weights_when_they_load(monkeypatch):
    monkeypatch.setattr(backbones, "load_backbone", lambda spec, weights, **kwargs: object())
    assert demo.demo_weights(demo.DEMO_BACKBONE, demo.DEMO_IMAGE_SIZE) == "imagenet"


def test_a_users_base_never_falls_back(tmp_path, dataset):
    with pytest.raises(FeatpipeError, match="no such model file"):
        demo.run_demo(tmp_path / "out", data=str(dataset), backbone="models/missing.keras", progress=False)


def test_half_generated_data_is_never_used(tmp_path, tiny_model_file, monkeypatch):
    from featpipe import demo_data

    def interrupted(root, **kwargs):
        (root / "train" / "checks").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, "make_demo_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", backbone=tiny_model_file, progress=False)
    assert not (tmp_path / "out" / "data").exists()
