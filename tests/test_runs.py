import json

import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.runs import find_runs, finish_run, is_complete, load_run, read_json, write_json


def test_finish_and_load(tmp_path):
    run_dir = finish_run(tmp_path / "r1", {"name": "r1"}, {"test": {"accuracy": np.float32(0.5)}},
                         {"loss": [1.0, 0.5], "phases": [{"name": "head", "start_epoch": 0}]})
    loaded = load_run(run_dir)
    assert loaded["run"] == {"name": "r1", "status": "complete"}
    assert loaded["metrics"]["test"]["accuracy"] == 0.5 and loaded["history"]["loss"] == [1.0, 0.5]
    assert not list(run_dir.glob("*.tmp"))


def test_unfinished_runs_are_told_apart(tmp_path):
    finish_run(tmp_path / "runs" / "done", {"name": "done"}, {})
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
