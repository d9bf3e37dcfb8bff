import datetime
import json
from pathlib import Path

import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.runs import RunRecord, find_runs, finish_run, is_complete, load_run, read_json, timing, write_json
from hostile_fixtures import small_disk  # noqa: F401  (a fixture)


def record(name: str = "r", **changes) -> RunRecord:
    """A cached head's record with made-up facts."""
    facts = dict(
        name=name, kind="head", path="cached", head="logreg", backbone="keras:VGG16", weights="imagenet",
        pretrained=True, image_size=[32, 32], pooling="avg", crop_to_aspect_ratio=False,
        preprocessing={"mode": "caffe"}, cache={"path": "/c.h5", "key": "k"},
        dataset={"root": "/data", "fingerprint": "f", "classes": ["cat", "dog"]}, params={"C": 1.0}, seed=0,
        versions={"numpy": "2"}, model_file="model.bin", created="2024-01-01T00:00:00+00:00",
    )
    return RunRecord(**{**facts, **changes})


# The fields run.json has carried since issue 4 (the report, predict, export and compare read them).
COMMON = {"name", "kind", "path", "head", "backbone", "weights", "pretrained", "image_size", "pooling",
          "crop_to_aspect_ratio", "preprocessing", "cache", "dataset", "params", "seed", "versions", "created",
          "model_file"}


def test_a_record_is_run_json_with_its_details_beside_the_common_fields(tmp_path):
    rec = record(details={"weights_id": "sha256:ab", "streamed": False})
    assert set(rec.to_json()) == COMMON | {"weights_id", "streamed"}
    run_dir = finish_run(tmp_path / "r", rec, {}, model_digests={"model.bin": "00"})
    info = load_run(run_dir)["run"]
    assert info == {**rec.to_json(), "model_sha256": {"model.bin": "00"}, "status": "complete"}
    assert info["weights_id"] == "sha256:ab" and info["dataset"]["classes"] == ["cat", "dog"]


def test_to_json_copies_what_the_caller_handed_in():
    params = {"C": 1.0}
    rec = record(params=params, details={"fit": {"solver": "lbfgs"}})
    info = rec.to_json()
    info["params"]["C"] = 9.0
    info["fit"]["solver"] = "x"
    assert params == {"C": 1.0} and rec.to_json()["fit"] == {"solver": "lbfgs"}


def test_created_defaults_to_now_in_utc():
    facts = {k: v for k, v in record().__dict__.items() if k != "created"}
    created = datetime.datetime.fromisoformat(RunRecord(**facts).created)
    assert created.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - created) < datetime.timedelta(minutes=5)


@pytest.mark.parametrize("key", ["name", "cache", "model_sha256", "status"])
def test_details_cannot_overwrite_a_field_the_record_owns(key):
    with pytest.raises(ValueError, match=key):
        record(details={key: "x"})


def test_timing_totals_what_each_path_spent():
    cached = timing(fit_seconds=2.0, predict_seconds=0.5, extract_seconds=6.0, extract_images_per_second=20.0)
    assert cached == {"extract_seconds": 6.0, "extract_images_per_second": 20.0, "fit_seconds": 2.0,
                      "predict_seconds": 0.5, "total_seconds": 8.5}
    end_to_end = timing(fit_seconds=30.0, predict_seconds=1.0, setup_seconds=4.0, phase_seconds={"frozen": 30.0})
    assert end_to_end["extract_seconds"] == 0.0 and end_to_end["extract_images_per_second"] is None
    assert end_to_end["total_seconds"] == 35.0 and end_to_end["phase_seconds"] == {"frozen": 30.0}


def test_finish_and_load(tmp_path):
    run_dir = finish_run(tmp_path / "r1", record("r1"), {"test": {"accuracy": np.float32(0.5)}},
                         {"loss": [1.0, 0.5], "phases": [{"name": "head", "start_epoch": 0}]})
    loaded = load_run(run_dir)
    assert loaded["run"] == {**record("r1").to_json(), "status": "complete"}
    assert loaded["metrics"]["test"]["accuracy"] == 0.5 and loaded["history"]["loss"] == [1.0, 0.5]
    assert not list(run_dir.glob("*.tmp"))


def test_unfinished_runs_are_told_apart(tmp_path):
    finish_run(tmp_path / "runs" / "done", record("done"), {})
    (tmp_path / "runs" / "died").mkdir()
    write_json(tmp_path / "runs" / "died" / "metrics.json", {})
    (tmp_path / "runs" / "started").mkdir()
    write_json(tmp_path / "runs" / "running.json", {})
    assert not is_complete(tmp_path / "runs" / "died")
    with pytest.raises(FeatpipeError, match="not a finished run"):
        load_run(tmp_path / "runs" / "died")
    finished, unfinished = find_runs([tmp_path / "runs"])
    assert [p.name for p in finished] == ["done"] and [p.name for p in unfinished] == ["died", "started"]
    assert find_runs([tmp_path / "runs" / "done"]) == ([tmp_path / "runs" / "done"], [])
    with pytest.raises(FeatpipeError, match="no such run directory"):
        find_runs([tmp_path / "nope"])


def test_read_json_errors(tmp_path):
    with pytest.raises(FeatpipeError, match="missing file"):
        read_json(tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FeatpipeError, match="unreadable JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(TypeError):
        write_json(tmp_path / "obj.json", {"x": object()})
    assert not (tmp_path / "obj.json").exists() and not list(tmp_path.glob("*.tmp"))
    write_json(tmp_path / "ok.json", {"a": np.arange(2)})
    assert json.loads((tmp_path / "ok.json").read_text()) == {"a": [0, 1]}


# --- model digests and crash-safe model files (issue 9) ---------------------------------------------------


def test_model_files_are_digested_and_verified(tmp_path):
    from featpipe.provenance import sha256_file
    from featpipe.runs import save_model_files, verified_model_file

    run_dir = tmp_path / "run"
    digests = save_model_files(run_dir, lambda d: ((d / "model.bin").write_bytes(b"w"), (d / "head.json").write_text("{}")))
    assert digests == {"head.json": sha256_file(run_dir / "head.json"), "model.bin": sha256_file(run_dir / "model.bin")}
    assert sorted(p.name for p in run_dir.iterdir()) == ["head.json", "model.bin"]  # no staging folder left
    finish_run(run_dir, record("r"), {}, model_digests=digests)
    info = load_run(run_dir)["run"]
    assert verified_model_file(run_dir, info) == run_dir / "model.bin"
    (run_dir / "head.json").write_text('{"x": 1}')
    with pytest.raises(FeatpipeError, match="head.json does not match"):
        verified_model_file(run_dir, info)


def test_a_failing_model_writer_leaves_the_previous_files(tmp_path):
    from featpipe.runs import save_model_files

    run_dir = tmp_path / "run"
    save_model_files(run_dir, lambda d: (d / "model.bin").write_bytes(b"old"))

    def broken(folder):
        (folder / "model.bin").write_bytes(b"ne")
        raise RuntimeError("library failure")

    with pytest.raises(RuntimeError):
        save_model_files(run_dir, broken)
    assert (run_dir / "model.bin").read_bytes() == b"old" and [p.name for p in run_dir.iterdir()] == ["model.bin"]


def test_training_onto_a_full_disk_is_one_line_and_leaves_no_model(tmp_path, small_disk):
    from click.testing import CliRunner

    from featpipe.cli import main
    from heads_fixtures import synthetic_cache
    from hostile_fixtures import fill

    cache = synthetic_cache(tmp_path)
    fill(small_disk, leave=8192)
    result = CliRunner().invoke(main, ["train", str(cache), "--head", "dense", "--param", "epochs=1",
                                       "--param", "units=64", "--no-data-check", "--runs-dir", str(small_disk / "runs")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("featpipe: error: no space left on device writing") and result.output.count("\n") == 1
    run_dirs = list((small_disk / "runs").iterdir()) if (small_disk / "runs").exists() else []
    assert all(not (d / "run.json").exists() and not list(d.glob("model.*")) for d in run_dirs)


FORMAT_V1 = Path(__file__).parent / "data" / "format-v1"  # written before issue 18: see its README


def test_a_run_json_from_before_issue_18_reads_and_is_written_back_the_same():
    info = json.loads((FORMAT_V1 / "run" / "run.json").read_text())
    rec = RunRecord.from_json(info)
    assert rec.name == "logreg-v1" and rec.dataset["classes"] == ["cat", "dog"] and rec.details["streamed"] is False
    assert {**rec.to_json(), "model_sha256": info["model_sha256"], "status": "complete"} == info


def test_load_run_gives_the_validated_record(tmp_path):
    run_dir = finish_run(tmp_path / "r", record(details={"weights_id": "w"}), {})
    loaded = load_run(run_dir)
    assert loaded["record"] == record(details={"weights_id": "w"})


@pytest.mark.parametrize("changes, bad", [
    ({"kind": "other", "image_size": [32]}, "kind, image_size"),
    ({"pretrained": 1, "seed": True}, "pretrained, seed"),
    ({"dataset": {"classes": ["cat"]}}, "dataset"),
    ({"name": None}, "name"),
])
def test_from_json_names_every_missing_or_bad_field(changes, bad):
    info = {**record().to_json(), **changes}
    with pytest.raises(FeatpipeError, match=f"^where/run.json is damaged: missing or bad {bad}$"):
        RunRecord.from_json(info, "where/run.json")
    without = {k: v for k, v in record().to_json().items() if k != "versions"}
    with pytest.raises(FeatpipeError, match="missing or bad versions$"):
        RunRecord.from_json(without)
    with pytest.raises(FeatpipeError, match="expected a JSON object, got list"):
        RunRecord.from_json([1])
