"""predictions.npz: one writer, one reader, its digest in run.json, no pickles."""

import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.run_predictions import PREDICTIONS_FILE, SplitPredictions, read_predictions, write_predictions


def _splits():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    return {"validation": SplitPredictions(("cat/a.jpg",), np.array([0]), proba[:1]),
            "test": SplitPredictions(("cat/b.jpg", "dög/ç.png"), np.array([0, 0]), proba[1:])}


def test_round_trip_keeps_paths_labels_and_probabilities(tmp_path):
    record = write_predictions(tmp_path, _splits())
    assert record["file"] == PREDICTIONS_FILE and record["splits"] == ["test", "validation"]
    found = read_predictions(tmp_path, {"predictions": record})
    assert set(found) == {"validation", "test"}
    assert found["test"].paths == ("cat/b.jpg", "dög/ç.png")
    np.testing.assert_array_equal(found["test"].labels, [0, 0])
    np.testing.assert_allclose(found["test"].proba, [[0.2, 0.8], [0.6, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(found["test"].correct, [False, True])


def test_a_run_without_the_record_has_none(tmp_path):
    assert read_predictions(tmp_path, {"name": "old run"}) is None


def test_a_modified_or_missing_file_is_refused(tmp_path):
    record = write_predictions(tmp_path, _splits())
    path = tmp_path / PREDICTIONS_FILE
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(FeatpipeError, match="does not match the SHA-256"):
        read_predictions(tmp_path, {"predictions": record})
    path.unlink()
    with pytest.raises(FeatpipeError, match="missing"):
        read_predictions(tmp_path, {"predictions": record})
    with pytest.raises(FeatpipeError, match="malformed"):
        read_predictions(tmp_path, {"predictions": {"file": "../x"}})


def test_rows_that_disagree_are_refused_at_construction():
    with pytest.raises(ValueError, match="disagree"):
        SplitPredictions(("a", "b"), np.array([0]), np.ones((2, 2)))
