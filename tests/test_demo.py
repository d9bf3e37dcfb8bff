import dataclasses

import pytest

from featpipe import demo, demo_data, pretrain
from featpipe.errors import FeatpipeError
from featpipe.pretrain import PretrainConfig
from featpipe.runs import read_json

TINY = PretrainConfig(image_size=16, widths=(4, 8), per_class=2, validation_per_class=1, epochs=1, batch_size=32)
SMALL_TARGET = {"train": 4, "validation": 2, "test": 3}


@pytest.fixture
def small_target(monkeypatch):
    monkeypatch.setattr(demo_data, "DEMO_SPLIT_SIZES", SMALL_TARGET)


@pytest.mark.slow
def test_demo_pretrains_a_base_then_compares_it_with_end_to_end_and_a_random_copy(tmp_path, small_target):
    result = demo.run_demo(tmp_path / "out", epochs=1, fine_tune_epochs=1, progress=False,
                           base_cache=tmp_path / "bases", pretrain_config=TINY)
    (base,) = (tmp_path / "bases").glob("base-*.keras")
    assert (tmp_path / "out" / "data-seed0" / "train" / "star-checks").is_dir()
    summary = read_json(result["summary_json"])
    runs = {(row["head"], row["pretrained"]): row for row in summary["runs"]}
    heads = ["dense", "linear-svm", "logreg", "svm"]
    assert sorted(runs) == sorted([*((h, True) for h in heads), *((h, False) for h in heads), ("finetune", True)])
    assert {row["backbone"] for row in summary["runs"]} == {f"{base}:features"}
    assert {row["weights"] for row in summary["runs"] if not row["pretrained"]} == {"none"}
    versus = summary["verdict"]["pretrained_vs_random"]
    assert versus["pretrained"]["head"] == versus["random"]["head"]
    assert any(line.startswith("Pretrained vs random") for line in summary["verdict"]["lines"])
    assert summary["verdict"]["end_to_end_vs_cached"] is not None
    # Labels a person reads, intervals, a paired verdict and the best run's mistakes with thumbnails.
    assert all(len(row["label"]) <= 48 and "/" not in row["label"] for row in summary["runs"])
    assert all(row["test_accuracy_ci"][0] <= row["test_accuracy"] <= row["test_accuracy_ci"][1]
               for row in summary["runs"])
    assert summary["verdict"]["test"] == "mcnemar-exact" and summary["verdict"]["untested"] == []
    page = result["html"].read_text()
    errors = page[page.index('<section id="errors">'):]
    assert "data:image/jpeg;base64," in errors[:errors.index("</section>")]
    notes = " ".join(result["notes"])
    assert str(base) in notes and "random-initialised copy" in notes and "never draws" in notes
    assert "pretrained" in result["html"].read_text()


def stop_at_the_grid(monkeypatch) -> list:
    """The experiments the demo starts, recorded; the first one stops it (KeyboardInterrupt)."""
    experiments = []

    def stop(exp, progress):
        experiments.append(exp)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_experiment", stop)
    return experiments


@pytest.mark.slow
def test_a_second_demo_reuses_the_pretrained_base(tmp_path, small_target, monkeypatch):
    base = pretrain.pretrained_base(tmp_path / "bases", TINY, verbose=False)
    monkeypatch.setattr(pretrain, "_pretrain", lambda *args: pytest.fail("pretrained again"))
    experiments = stop_at_the_grid(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", progress=False, base_cache=tmp_path / "bases", pretrain_config=TINY)
    assert experiments[0].backbones == [base.spec] and experiments[0].weights == "default"


def test_the_seed_reaches_the_base_and_the_target_images(tmp_path, monkeypatch):
    seen = {}

    def fake_base(cache, config):
        seen["config"] = config
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "pretrained_base", fake_base)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", seed=7, progress=False, pretrain_config=TINY)
    assert seen["config"] == dataclasses.replace(TINY, seed=7)


def test_the_default_base_cache_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo.default_base_cache() == tmp_path / "featpipe" / "bases"


@pytest.mark.slow
def test_a_users_base_on_the_generated_target_task(tmp_path, tiny_model_file, small_target):
    result = demo.run_demo(tmp_path / "out", backbone=tiny_model_file, epochs=1, fine_tune_epochs=1,
                           progress=False, control=False)
    summary = read_json(result["summary_json"])
    assert sorted(row["head"] for row in summary["runs"]) == ["dense", "finetune", "linear-svm", "logreg", "svm"]
    assert not list(tmp_path.glob("**/base-*.keras"))  # nothing pretrained for a user's base


def test_a_users_base_never_falls_back(tmp_path, dataset):
    with pytest.raises(FeatpipeError, match="no such model file"):
        demo.run_demo(tmp_path / "out", data=str(dataset), backbone="models/missing.keras", progress=False)


def test_a_users_data_without_a_base_needs_real_imagenet_weights(tmp_path, dataset, monkeypatch):
    from featpipe import backbones

    asked = []

    def offline(spec, weights="default", **kwargs):
        asked.append((spec, weights))
        raise FeatpipeError("cannot download ImageNet weights")

    monkeypatch.setattr(backbones, "load_backbone", offline)
    with pytest.raises(FeatpipeError, match="ImageNet"):
        demo.run_demo(tmp_path / "out", data=str(dataset), progress=False)
    assert asked == [(demo.USER_DATA_BACKBONE, "default")]


def test_half_generated_data_is_never_used(tmp_path, tiny_model_file, monkeypatch):
    def interrupted(root, **kwargs):
        (root / "train" / "star-checks").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, "make_demo_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", backbone=tiny_model_file, progress=False)
    assert not (tmp_path / "out" / "data-seed0").exists()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["--base-cache", "XDG_CACHE_HOME"])
def test_an_unwritable_base_cache_pretrains_into_the_demo_folder_and_says_so(tmp_path, small_target, monkeypatch,
                                                                              caplog, where):
    """Issue 20, item 7: a read-only HOME or --base-cache (here: a path through a regular file, which no user,
    root included, can create folders in) is not a crash: the base is pretrained for this demo only."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    if where == "XDG_CACHE_HOME":
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    experiments = stop_at_the_grid(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "out", progress=False, pretrain_config=TINY,
                      base_cache=blocker / "bases" if where == "--base-cache" else None)
    assert experiments[0].backbones[0].startswith(str(tmp_path / "out" / "base" / "base-"))
    assert blocker.read_text() == "a file, not a folder"
    assert f"cannot keep the pretrained base in {blocker / 'featpipe' / 'bases' if where != '--base-cache' else blocker / 'bases'}" \
        in caplog.text and "for this demo only" in caplog.text


def test_pretraining_refuses_an_unwritable_cache_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "_pretrain", lambda *args: pytest.fail("pretrained before checking"))
    (tmp_path / "blocker").write_text("")
    with pytest.raises(pretrain.BaseCacheUnwritable, match="^cannot keep the pretrained base in .*not a directory"):
        pretrain.pretrained_base(tmp_path / "blocker" / "bases", TINY, verbose=False)
