"""featpipe.finetune: the two phases on a copy of the base, frozen BatchNormalization, resume, the run directory
and the exported model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_dataset, tiny_cnn
from finetune_fixtures import EpochLog, tiny_tuner
from plain_keras import outputs_without_featpipe

from featpipe import runs
from featpipe.augment import RANDOM_LAYERS
from featpipe.data import load_image_folder
from featpipe.errors import FeatpipeError
from featpipe.finetune import CHECKPOINT_DIR, base_layers, run_finetune, run_name, unfreeze_start
from featpipe.model_parts import all_layers
from featpipe.pipeline import labeled_images
from featpipe.run_predictions import read_predictions
from featpipe.runtime import precision_scope

HEAD_WEIGHTS = {"dense/kernel", "dense/bias", "predictions/kernel", "predictions/bias"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_file):
    """One run on a dataset with unreadable files: frozen epoch, then top:2 (conv2, relu2) unfrozen."""
    root = tmp_path_factory.mktemp("finetune")
    data = load_image_folder(make_dataset(root / "data", corrupt=True))
    tuner = tiny_tuner(tiny_model_file, unfreeze="top:2")
    images, _ = next(iter(labeled_images(data.files("test"), data.splits["test"].labels, (32, 32), 6)))
    features = tuner.backbone.feature_model("avg")(images).numpy()
    base_weights = [w.copy() for w in tuner.backbone.model.get_weights()]
    log = EpochLog()
    result = run_finetune(data, tuner, root / "runs", callbacks=[log])
    return {"root": root, "data": data, "tuner": tuner, "log": log, "result": result, "images": images,
            "features_before": features, "base_weights_before": base_weights}


def _short(paths: list[str]) -> set[str]:
    return {"/".join(p.split("/")[-2:]) for p in paths}


@pytest.mark.slow
def test_frozen_phase_trains_only_the_head_then_the_top_layers_join(finished):
    frozen, fine_tune = finished["log"].trainable
    assert _short(frozen) == HEAD_WEIGHTS
    assert _short(fine_tune) == HEAD_WEIGHTS | {"conv2/kernel", "conv2/bias"}
    params = finished["result"].run["trainable_params"]
    assert params["fine-tune"] - params["frozen"] == 8 * 16 * 9 + 16  # conv2's kernel and bias


def test_batch_normalization_stays_frozen_and_in_inference_mode(finished):
    tuner = finished["tuner"]
    trained, original = tuner.base_.get_layer("bn1"), tuner.backbone.model.get_layer("bn1")
    assert not trained.trainable
    # Moving statistics move under training=True; gamma/beta move if trainable. Neither may change.
    for before, after in zip(original.weights, trained.weights):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    # ...while the unfrozen layer did train, in the tuner's copy.
    assert not np.array_equal(tuner.base_.get_layer("conv2").kernel.numpy(),
                              tuner.backbone.model.get_layer("conv2").kernel.numpy())


def test_the_callers_backbone_is_never_changed(finished):
    """Fine-tuning trains a copy: features extracted with the same Backbone object before and after are
    identical, so a cache keyed by its identity can never hold fine-tuned features."""
    backbone = finished["tuner"].backbone
    after = backbone.feature_model("avg")(finished["images"]).numpy()
    np.testing.assert_array_equal(after, finished["features_before"])
    for before, now in zip(finished["base_weights_before"], backbone.model.get_weights()):
        np.testing.assert_array_equal(before, now)
    assert not backbone.model.trainable and not any(layer.trainable_weights for layer in backbone.model.layers)


@pytest.mark.slow
def test_unfreeze_all_trains_the_whole_base_but_keeps_it_in_inference_mode(tmp_path, dataset):
    # A base with dropout inside: the training model must still call it in inference mode.
    inputs = keras.Input((32, 32, 3))
    x = tiny_cnn()(inputs)
    model_file = str(tmp_path / "dropout.keras")
    keras.Model(inputs, keras.layers.Dropout(0.9, name="base_dropout")(x)).save(model_file)
    log = EpochLog()
    tuner = tiny_tuner(model_file, unfreeze="all", augment="none", epochs=0, dropout=0.0)
    tuner.fit(load_image_folder(dataset), callbacks=[log])
    (trainable,) = log.trainable
    assert _short(trainable) == HEAD_WEIGHTS | {"conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias"}
    assert tuner.history_["phases"] == [{"name": "fine-tune", "start_epoch": 0}]
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(tuner.training_model_(images, training=True),
                               tuner.training_model_(images, training=False), rtol=1e-6)


def test_run_directory_has_the_shared_format_with_both_phases(finished):
    result = finished["result"]
    loaded = runs.load_run(result.run_dir)
    info, metrics, history = loaded["run"], loaded["metrics"], loaded["history"]
    assert (info["kind"], info["path"], info["head"], info["model_file"]) == ("finetune", "end-to-end", "finetune", "model.keras")
    assert info["dataset"]["classes"] == ["cat", "dog"] and info["cache"] is None
    assert info["params"]["unfreeze"] == "top:2" and info["params"]["augment"] == "flip=horizontal,rotation=0.1,zoom=0.2"
    assert history["phases"] == [{"name": "frozen", "start_epoch": 0}, {"name": "fine-tune", "start_epoch": 1}]
    assert all(len(history[k]) == 2 for k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    assert metrics["validation"]["n"] == 6 and metrics["test"]["n"] == 6
    best = int(np.argmin(history["val_loss"]))
    assert metrics["selection"]["best_params"]["epoch"] == best + 1
    assert metrics["selection"]["score"] == pytest.approx(history["val_loss"][best])
    timing = metrics["timing"]
    assert set(timing["phase_seconds"]) == {"frozen", "fine-tune"} and timing["extract_seconds"] == 0
    assert timing["total_seconds"] >= timing["fit_seconds"] == pytest.approx(sum(timing["phase_seconds"].values()))
    assert timing["images_per_second"] > 0
    # One device (this CPU): no strategy at all, one replica, the batch size is the global batch.
    assert info["distribution"] == {"strategy": "none", "replicas": 1, "devices": [], "per_device_batch_size": 8,
                                    "global_batch_size": 8}
    assert not (result.run_dir / CHECKPOINT_DIR).exists()  # checkpoints go once the run is complete


def test_saved_model_maps_images_to_probabilities_without_augmentation(finished):
    model = keras.saving.load_model(finished["result"].run_dir / "model.keras")
    assert not [layer for layer in all_layers(model) if isinstance(layer, RANDOM_LAYERS)]
    data = finished["data"]
    images, _ = next(iter(labeled_images(data.files("test"), data.splits["test"].labels, (32, 32), 6)))
    proba = model(images).numpy()
    assert proba.shape == (6, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(proba, finished["tuner"].model_(images).numpy(), rtol=1e-5, atol=1e-6)
    # The run's per-image predictions are these, row by row, with the images' relative paths.
    run_dir = finished["result"].run_dir
    found = read_predictions(run_dir, runs.load_run(run_dir)["run"])["test"]
    assert found.paths == data.splits["test"].paths
    np.testing.assert_array_equal(found.labels, data.splits["test"].labels)
    np.testing.assert_allclose(found.proba, proba, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_saved_model_loads_with_plain_keras_without_featpipe(finished, tmp_path):
    images = finished["images"].numpy()
    served = outputs_without_featpipe(finished["result"].run_dir / "model.keras", images, tmp_path)
    np.testing.assert_allclose(served, finished["tuner"].model_(images).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_finished_run_is_reused_and_other_params_make_another_run(finished, tiny_model_file):
    data, root = finished["data"], finished["root"]
    again = run_finetune(data, tiny_tuner(tiny_model_file, unfreeze="top:2"), root / "runs")
    assert again.reused and again.run_dir == finished["result"].run_dir
    assert again.metrics == finished["result"].metrics
    other = run_finetune(data, tiny_tuner(tiny_model_file, unfreeze="top:2", augment="none", fine_tune_epochs=0),
                         root / "runs")
    assert not other.reused and other.run_dir != again.run_dir


@pytest.mark.slow
def test_force_starts_over_a_finished_run(tmp_path, dataset, tiny_model_file):
    data = load_image_folder(dataset)
    params = {"augment": "none", "fine_tune_epochs": 0}
    first = run_finetune(data, tiny_tuner(tiny_model_file, **params), tmp_path / "runs")
    stale = first.run_dir / "stale.txt"
    stale.write_text("left by the first run")
    log = EpochLog()
    forced = run_finetune(data, tiny_tuner(tiny_model_file, **params), tmp_path / "runs", force=True, callbacks=[log])
    assert not forced.reused and forced.run_dir == first.run_dir
    assert log.begun == [0]  # trained again from the first epoch
    assert not stale.exists()  # the old directory went
    assert forced.run["created"] >= first.run["created"] and runs.is_complete(forced.run_dir)


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_finished_epoch(tmp_path, tiny_model_file):
    data = load_image_folder(make_dataset(tmp_path / "data", classes=("cat", "dog", "fox")))
    first = EpochLog(interrupt_after=0)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(data, tiny_tuner(tiny_model_file, epochs=2), tmp_path / "runs", callbacks=[first])
    second = EpochLog()
    result = run_finetune(data, tiny_tuner(tiny_model_file, epochs=2), tmp_path / "runs", callbacks=[second])
    assert first.begun == [0] and second.begun == [1, 2]  # epoch 0 is not redone
    # The resumed epoch starts from the weights the interrupted one ended with, not a fresh head.
    np.testing.assert_array_equal(second.kernels["begin"][0], first.kernels["end"][0])
    history = runs.load_run(result.run_dir)["history"]
    assert len(history["loss"]) == 3
    assert history["phases"] == [{"name": "frozen", "start_epoch": 0}, {"name": "fine-tune", "start_epoch": 2}]
    assert set(result.metrics["timing"]["phase_seconds"]) == {"frozen", "fine-tune"}
    assert len(result.metrics["test"]["per_class"]) == 3


def test_unfreeze_specs_resolve_to_a_layer_index(tiny_model_file):
    base = tiny_tuner(tiny_model_file).backbone.model
    names = [layer.name for layer in base_layers(base)]
    assert names == ["conv1", "bn1", "relu1", "conv2", "relu2"]
    assert unfreeze_start(base, "top:2") == 3
    assert unfreeze_start(base, "from:relu1") == 2
    assert unfreeze_start(base, "all") == 0
    with pytest.raises(FeatpipeError, match="between 1 and 5"):
        unfreeze_start(base, "top:6")
    with pytest.raises(FeatpipeError, match="no layer 'conv3'.*did you mean"):
        unfreeze_start(base, "from:conv3")
    with pytest.raises(FeatpipeError, match="expected top:N"):
        unfreeze_start(base, "middle")


@pytest.mark.parametrize("params, message", [
    ({"epochs": -1}, "^epochs must be 0 or more"),  # Python callers read argument names
    ({"epochs": 0, "fine_tune_epochs": 0}, "nothing to train"),
    ({"optimizer": "sgd"}, "^optimizer must be one of"),
    ({"fine_tune_learning_rate": 0}, "must be positive"),
    ({"augment": "flip,blur=2"}, "unknown augmentation 'blur'"),
    ({"unfreeze": "top:0"}, "^unfreeze top:N must have N between"),
    ({"batch_size": 10**9}, r"^image_size 32x32 with batch_size 1000000000 needs [\d,.]+ GiB for one batch"),
])
def test_bad_options_are_clear_errors(tiny_model_file, params, message):
    with pytest.raises(FeatpipeError, match=message):
        tiny_tuner(tiny_model_file, **params).check()


def test_dataset_without_validation_or_test_is_refused(tmp_path, tiny_model_file):
    no_val = load_image_folder(make_dataset(tmp_path / "a", per_split={"train": 4, "test": 2}))
    with pytest.raises(FeatpipeError, match="no validation/ split.*--val-fraction"):
        run_finetune(no_val, tiny_tuner(tiny_model_file), tmp_path / "runs")
    no_test = load_image_folder(make_dataset(tmp_path / "b", per_split={"train": 4, "validation": 2}))
    with pytest.raises(FeatpipeError, match="no test/ split"):
        run_finetune(no_test, tiny_tuner(tiny_model_file), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_gpu_configuration_mixed_precision_and_augmentation_in_the_model(dataset, tiny_model_file):
    with precision_scope("mixed"):
        base_policy_built = keras.mixed_precision.dtype_policy().name
        tuner = tiny_tuner(tiny_model_file, fine_tune_epochs=0, augment_in_model=True, precision="mixed")
    assert base_policy_built == "mixed_float16"
    tuner.fit(load_image_folder(dataset))  # the tuner's own precision, whatever the policy around it
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert tuner.model_.get_layer("dense").compute_dtype == "float16"
    assert tuner.model_.output.dtype == "float32"
    assert tuner.training_model_.get_layer("augmentation") is tuner.augmentation_
    assert not [layer for layer in all_layers(tuner.model_) if isinstance(layer, RANDOM_LAYERS)]
    labels, proba = tuner.predict_split(load_image_folder(dataset), "test")
    assert proba.dtype == np.float32 and len(labels) == len(proba) == 6
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


def test_precision_is_part_of_the_run_key(dataset, tiny_model_file):
    data = load_image_folder(dataset)
    assert run_name(data, tiny_tuner(tiny_model_file, precision="float32")) != \
        run_name(data, tiny_tuner(tiny_model_file, precision="mixed"))
    with pytest.raises(FeatpipeError, match="precision must be one of"):
        tiny_tuner(tiny_model_file, precision="double").check()


def test_the_head_is_seeded_explicitly_not_by_global_state(dataset, tiny_model_file):
    data = load_image_folder(dataset)
    heads = []
    for global_seed in (1, 2):
        keras.utils.set_random_seed(global_seed)  # whatever ran before must not change the head
        tuner = tiny_tuner(tiny_model_file, seed=5)
        tuner._build(len(data.classes))
        heads.append(tuner.model_.get_layer("dense").kernel.numpy())
    np.testing.assert_array_equal(*heads)


@pytest.mark.parametrize("damage", ["truncated", "not an object", "missing weights"])
def test_a_damaged_checkpoint_is_discarded_with_a_warning(tmp_path, damage):
    """Issue 9: a work file read back is checked; a bad one is redone, not a crash."""
    from featpipe.finetune.resume import PROGRESS_FILE, ResumeState
    from featpipe.runs import write_json

    write_json(tmp_path / PROGRESS_FILE, {"epochs": [{"phase": "frozen"}], "finished": [], "best": None,
                                          "last": "last-0.weights.h5"})
    if damage == "truncated":
        (tmp_path / PROGRESS_FILE).write_text('{"epochs": [')
    elif damage == "not an object":
        (tmp_path / PROGRESS_FILE).write_text("[1]")
    with pytest.warns(UserWarning, match="discarding the fine-tuning checkpoint"):
        state = ResumeState(tmp_path)
    assert state.epochs == [] and state.last is None


# Two logical CPUs must be configured before TensorFlow initialises, hence a fresh interpreter. The run is made
# the way a GPU node makes it (mixed precision, augmentation inside the model), interrupted in the fine-tune
# phase, then resumed by a new FineTuner in the same process (a second MirroredStrategy fit there too). The
# random base overflows float16 in the fine-tune phase: the step must be skipped on both replicas, not turn the
# weights into NaN (what Keras' own loss scaling does under MirroredStrategy).
_MIRRORED = """
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
from finetune_fixtures import EpochLog, tiny_tuner
from featpipe.data import load_image_folder
from featpipe.finetune import run_finetune

class Probe(EpochLog):
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.strategies = getattr(self, "strategies", []) + [type(self.model.distribute_strategy).__name__]
        self.mirrored = isinstance(self.model.get_layer("dense").kernel.value, tf.distribute.DistributedValues)
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.rates = getattr(self, "rates", []) + [float(rate)]
        self.batches = []
    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)

model_file, data_dir, runs_dir = sys.argv[2:5]
data = load_image_folder(data_dir)
params = dict(devices=["/cpu:0", "/cpu:1"], batch_size=4, epochs=1, fine_tune_epochs=2, unfreeze="top:2",
              precision="mixed", augment_in_model=True)
first = Probe(interrupt_after=1)
try:
    run_finetune(data, tiny_tuner(model_file, **params), runs_dir, callbacks=[first])
    sys.exit("not interrupted")
except KeyboardInterrupt:
    pass
second = Probe()
tuner = tiny_tuner(model_file, **params)
result = run_finetune(data, tuner, runs_dir, callbacks=[second])
bn, original = tuner.base_.get_layer("bn1"), tuner.backbone.model.get_layer("bn1")
images = np.load(sys.argv[5])
print(json.dumps({
    "run_dir": str(result.run_dir), "begun": [first.begun, second.begun], "strategies": first.strategies + second.strategies,
    "mirrored": first.mirrored and second.mirrored, "rates": first.rates + second.rates, "batches": second.batches,
    "continues": bool(np.array_equal(second.kernels["begin"][0], first.kernels["end"][-1])),
    "finite": all(np.isfinite(w).all() for w in tuner.model_.get_weights()),
    "bn_unchanged": all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(bn.weights, original.weights)),
    "proba": tuner.model_(images).numpy().tolist(),
}), flush=True)
os._exit(0)  # skips TensorFlow's teardown, which lingers for many seconds after an interrupted mirrored fit
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_devices_trains_resumes_and_records_the_global_batch(tmp_path, tiny_model_file):
    data = make_dataset(tmp_path / "data", per_split={"train": 4, "validation": 2, "test": 2})
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED, str(Path(__file__).parent), tiny_model_file, str(data),
         str(tmp_path / "runs"), str(tmp_path / "images.npy")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Both phases and the resumed one ran under the strategy, on mirrored variables, at their own learning rates.
    assert out["strategies"] == ["MirroredStrategy"] * 3 and out["mirrored"]
    assert out["rates"] == pytest.approx([1e-3, 1e-5, 1e-5])
    # 8 training images, 4 per device on 2 replicas: one global batch of 8 per epoch.
    assert out["batches"] == [0]
    # Interrupted after the first fine-tune epoch; the new run does only the last one, from where it stopped.
    assert out["begun"] == [[0, 1], [2]] and out["continues"] and out["finite"]
    assert out["bn_unchanged"]  # the base's BatchNormalization ran in inference mode on both replicas
    loaded = runs.load_run(out["run_dir"])
    info = loaded["run"]
    assert info["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "devices": ["/cpu:0", "/cpu:1"],
                                    "per_device_batch_size": 4, "global_batch_size": 8}
    assert info["params"]["batch_size"] == 4 and info["compute_dtype"] == "float16"
    assert len(loaded["history"]["loss"]) == 3 and np.isfinite(loaded["history"]["loss"]).all()
    # The exported model loads in this (single-device) process and predicts what the mirrored model did.
    proba = keras.saving.load_model(Path(out["run_dir"]) / "model.keras")(images).numpy()
    np.testing.assert_allclose(proba, out["proba"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


def test_devices_choose_the_strategy_and_replicas_are_part_of_the_run_key(dataset, tiny_model_file):
    data = load_image_folder(dataset)
    default = tiny_tuner(tiny_model_file)
    assert default.distribution() is None and default.replicas == 1 and default.global_batch_size == 8
    one = tiny_tuner(tiny_model_file, devices=["/cpu:0"])
    assert isinstance(one.distribution(), tf.distribute.OneDeviceStrategy)
    two = tiny_tuner(tiny_model_file, devices=["/cpu:0", "/cpu:1"])
    assert two.replicas == 2 and two.global_batch_size == 16
    # A single-device run keeps its key whichever device; another replica count is another run.
    assert run_name(data, one) == run_name(data, default) != run_name(data, two)
    for devices in ([], "/cpu:0", ["/cpu:0", "/cpu:0"]):
        with pytest.raises(FeatpipeError, match="devices must be a list of distinct device names"):
            tiny_tuner(tiny_model_file, devices=devices).check()


@pytest.mark.slow
def test_one_named_device_trains_under_one_device_strategy(dataset, tiny_model_file):
    tuner = tiny_tuner(tiny_model_file, devices=["/cpu:0"], augment="none", fine_tune_epochs=0)
    tuner.fit(load_image_folder(dataset))
    assert tuner.distribution_["strategy"] == "OneDeviceStrategy" and tuner.distribution_["global_batch_size"] == 8
    assert np.isfinite(tuner.history_["loss"]).all()


def test_predictions_skip_unreadable_test_images_without_shifting_rows(finished, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(finished["data"].root, data_dir)
    data = load_image_folder(data_dir)
    broken = data.splits["test"].paths[1]
    (data_dir / broken).write_bytes(b"not an image")
    found = finished["tuner"].predictions(data, "test")
    kept = [p for p in data.splits["test"].paths if p != broken]
    assert found.paths == tuple(kept)
    labels = dict(zip(data.splits["test"].paths, data.splits["test"].labels))
    assert found.labels.tolist() == [labels[p] for p in kept]
    # Row by row, the same probabilities as predicting the readable images alone.
    images, _ = next(iter(labeled_images([str(data_dir / p) for p in kept], [labels[p] for p in kept], (32, 32), 16)))
    np.testing.assert_allclose(found.proba, finished["tuner"].model_(images).numpy(), rtol=1e-4, atol=1e-5)


def test_a_run_being_written_by_another_process_is_refused_at_once(tmp_path, dataset, tiny_model_file):
    """Issue 20, item 8: two fine-tunings of one run would checkpoint into the same directory."""
    data = load_image_folder(dataset)
    tuner = tiny_tuner(tiny_model_file, augment="none", fine_tune_epochs=0)
    run_dir = tmp_path / "runs" / run_name(data, tuner)
    with runs.run_lock(run_dir):
        with pytest.raises(FeatpipeError, match=f"^another featpipe process is writing run directory {run_dir} "):
            run_finetune(data, tuner, tmp_path / "runs")
    assert not run_dir.exists()


@pytest.mark.slow
def test_temperature_calibration_is_fitted_on_validation_and_saved_in_the_model(tmp_path, tiny_model_file):
    data = load_image_folder(make_dataset(tmp_path / "data", classes=("cat", "dog", "fox")))
    params = {"augment": "none", "fine_tune_epochs": 0}
    plain = run_finetune(data, tiny_tuner(tiny_model_file, **params), tmp_path / "runs")
    tuner = tiny_tuner(tiny_model_file, **params, calibration="temperature")
    result = run_finetune(data, tuner, tmp_path / "runs")
    assert result.run_dir != plain.run_dir and result.run["params"]["calibration"] == "temperature"
    assert "calibration" not in plain.run["params"]  # older runs keep their keys
    record = result.metrics["selection"]["temperature"]
    assert record["temperature"] > 0
    assert record["validation_log_loss_after"] <= record["validation_log_loss_before"] + 1e-9
    # The same training, so the same predictions; the validation metrics are the calibrated model's.
    assert result.metrics["validation"]["accuracy"] == plain.metrics["validation"]["accuracy"]
    assert result.metrics["validation"]["ece"] == pytest.approx(record["validation_ece_after"], abs=1e-5)
    assert plain.metrics["validation"]["ece"] == pytest.approx(record["validation_ece_before"], abs=1e-5)
    saved = keras.saving.load_model(result.run_dir / "model.keras")
    images, _ = next(iter(labeled_images(data.files("test"), data.splits["test"].labels, (32, 32), 6)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(images)), tuner.model_(images), atol=1e-6)
    with pytest.raises(FeatpipeError, match="--calibration must be one of none, temperature"):
        tiny_tuner(tiny_model_file, calibration="platt").check()
