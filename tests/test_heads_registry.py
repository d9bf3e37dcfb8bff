"""featpipe.heads: the registry, make_head / load_head and --param parsing."""

import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.heads import HEADS, head_class, load_head, make_head, parse_param_options
from heads_fixtures import splits, validation


def test_every_registered_head_has_its_name_and_a_model_file():
    for name in HEADS:
        cls = head_class(name)
        assert cls.name == name and cls.model_file in ("model.keras", "model.joblib", "model.h5")


def test_unknown_head_is_a_clear_error_with_a_suggestion():
    with pytest.raises(FeatpipeError, match=r"unknown head 'logref'.*did you mean logreg\?"):
        make_head("logref")


def test_make_head_takes_cli_strings_and_typed_values_alike():
    assert make_head("logreg", {"C": "0.1, 1,10"}).params["C"] == [0.1, 1.0, 10.0]
    head = make_head("logreg", {"C": 0.5, "max_iter": "50"}, seed=3, max_memory=2**30)
    assert head.get_params() == {"random_state": 3, "max_memory": 2**30, "C": [0.5], "max_iter": 50, "tol": 1e-4,
                                 "normalize": "standard", "solver": "auto", "epochs": 10, "validation_fraction": 0.2}
    assert head.params == {k: v for k, v in head.get_params().items() if k not in ("random_state", "max_memory")}


def test_load_head_finds_the_class_from_the_saved_directory(tmp_path):
    data = splits()
    head = make_head("logreg", {"C": "0.1,1"}).fit(*data["train"], **validation(data))
    loaded = load_head(head.save(tmp_path / "run"))
    assert type(loaded) is type(head) and loaded.best_params_ == head.best_params_
    np.testing.assert_array_equal(loaded.predict_proba(data["test"][0]), head.predict_proba(data["test"][0]))


def test_params_go_to_every_head_that_has_them_or_to_the_one_named():
    parsed = parse_param_options(["C=1,10", "svm.gamma=scale,0.1", "logreg.max_iter=50"], ["logreg", "svm"])
    assert parsed == {"logreg": {"C": "1,10", "max_iter": "50"}, "svm": {"C": "1,10", "gamma": "scale,0.1"}}


@pytest.mark.parametrize("option, message", [
    ("units=8", r"unknown parameter 'units' for logreg / svm; known: C, calibration, epochs, gamma, kernel, max_exact_rows, "
                r"max_iter, n_components, normalize, solver, tol, validation_fraction"),
    ("svm.max_iter=5", r"unknown parameter 'max_iter' for svm"),
    ("dense.units=8", r"names head 'dense', which is not being trained"),
    ("C", r"expected key=value"),
    ("C=", r"expected key=value"),
])
def test_bad_param_options_are_clear_errors(option, message):
    with pytest.raises(FeatpipeError, match=message):
        parse_param_options([option], ["logreg", "svm"])
