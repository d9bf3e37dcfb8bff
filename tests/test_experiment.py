import pytest

from featpipe import train
from featpipe.errors import FeatpipeError
from featpipe.experiment import Experiment, load_experiment, run_experiment
from featpipe.runs import RUN_FILE, load_run


def _grid(dataset, model_file, tmp_path, **kwargs):
    return Experiment(data=str(dataset), backbones=[model_file], heads=["logreg", "dense"],
                      cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                      params=["dense.epochs=2"], **kwargs)


@pytest.mark.slow
def test_grid_runs_every_head_on_one_cache_and_finetunes(dataset, tiny_model_file, tmp_path):
    run_dirs, notes = run_experiment(_grid(dataset, tiny_model_file, tmp_path, finetune=True, epochs=1,
                                           fine_tune_epochs=1), progress=False)
    runs = [load_run(d)["run"] for d in run_dirs]
    assert [r["head"] for r in runs] == ["logreg", "dense", "finetune"]
    assert runs[0]["cache"] == runs[1]["cache"] and runs[2]["path"] == "end-to-end"
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 1 and notes == []


@pytest.mark.slow
def test_interrupted_grid_resumes_with_finished_runs_reused(dataset, tiny_model_file, tmp_path, monkeypatch):
    real_train_head = train.train_head

    def die_on_dense(cache, head, runs_dir, **kwargs):
        if head.name == "dense":
            raise KeyboardInterrupt
        return real_train_head(cache, head, runs_dir, **kwargs)

    monkeypatch.setattr(train, "train_head", die_on_dense)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_grid(dataset, tiny_model_file, tmp_path), progress=False)
    done = next((tmp_path / "runs").glob("*-logreg")) / RUN_FILE
    stamp = done.stat().st_mtime_ns
    monkeypatch.setattr(train, "train_head", real_train_head)
    run_dirs, _ = run_experiment(_grid(dataset, tiny_model_file, tmp_path), progress=False)
    assert done.stat().st_mtime_ns == stamp  # reused, not redone
    assert [load_run(d)["run"]["head"] for d in run_dirs] == ["logreg", "dense"]


def test_random_weights_are_noted(dataset, tiny_model_file, tmp_path):
    exp = _grid(dataset, tiny_model_file, tmp_path, weights="none")
    exp.heads, exp.params = ["logreg"], []
    _, notes = run_experiment(exp, progress=False)
    assert len(notes) == 1 and "random-initialised" in notes[0]


def test_experiment_file(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text('data = "data"\nbackbones = ["keras:VGG16"]\nheads = ["logreg"]\nfinetune = true\n'
                      'epochs = 3\nparams = ["C=0.1,1"]\n')
    exp = load_experiment(config, heads=["svm"], epochs=None)
    assert exp.data == str(tmp_path / "data") and exp.heads == ["svm"] and exp.epochs == 3 and exp.finetune
    assert exp.cache_dir == "cache" and exp.params == ["C=0.1,1"]


def test_binary_experiment_file(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    with pytest.raises(FeatpipeError, match="is not a TOML text file"):
        load_experiment(config)
    with pytest.raises(FeatpipeError, match="cannot read experiment file"):
        load_experiment(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('data = "d"\nbackbones = ["b"]\nhedas = ["x"]\n', "unknown keys hedas"),
    ('data = "d"\nbackbones = [\n', "bad TOML"),
    ('backbones = ["b"]\n', "missing required key data$"),
    ('data = "d"\nbackbones = "keras:VGG16"\n',
     "backbones must be a list of strings, got a string 'keras:VGG16' \\(write backbones = \\[\"keras:VGG16\"\\]\\)"),
    ('data = "d"\nbackbones = ["b"]\nepochs = "3"\n', "epochs must be an integer, got a string '3'"),
    ('data = "d"\nbackbones = ["b"]\nfinetune = 1\n', "finetune must be true or false, got an integer 1"),
    ('data = "d"\nbackbones = ["b"]\nval_fraction = nan\n', "val_fraction must be a number, got a number nan"),
    ('data = 3\nbackbones = ["b"]\n', "data must be a string"),
    ('data = "d"\nbackbones = ["b", 2]\n', "backbones must be a list of strings"),
    ('data = "d"\nbackbones = ["b"]\n[extra]\nx = 1\n', "unknown keys extra"),
    ('data = "d"\nbackbones = []\n', "names no backbone"),
    ('data = "d"\nbackbones = ["b"]\nheads = []\n', "nothing to compare"),
])
def test_bad_experiment_files(tmp_path, text, message):
    config = tmp_path / "exp.toml"
    config.write_text(text)
    with pytest.raises(FeatpipeError, match=message):
        load_experiment(config)
    with pytest.raises(FeatpipeError, match="not found"):
        load_experiment(tmp_path / "missing.toml")
