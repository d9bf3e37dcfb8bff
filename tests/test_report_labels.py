"""Run labels: short, unique, path-free, built from what distinguishes runs."""

import pytest

from featpipe.report.labels import MAX_LENGTH, make_labels, shared_facts, short_backbone

BASE = "/home/someone/project/bases/base-d474d63db627feef.keras:features"


def _info(**changes):
    info = dict(backbone=BASE, weights="file", pretrained=True, image_size=[32, 32], pooling="avg", path="cached",
                head="logreg", dataset={"root": "/home/someone/data/cats"}, seed=0, params={})
    return {**info, **changes}


def _check(labels):
    assert len(set(labels)) == len(labels), labels
    for label in labels:
        assert len(label) <= MAX_LENGTH and "/" not in label and "\\" not in label and "home" not in label, label


@pytest.mark.parametrize("infos, expected", [
    ([_info(), _info(head="svm"), _info(head="dense")], ["logreg", "svm", "dense"]),
    ([_info(), _info(pretrained=False, weights="none")], ["logreg", "random init · logreg"]),
    ([_info(), _info(image_size=[64, 64])], ["32px · logreg", "64px · logreg"]),
    ([_info(backbone="keras:MobileNet(alpha=0.25)"), _info(backbone="keras:VGG16")],
     ["MobileNet α0.25 · logreg", "VGG16 · logreg"]),
    ([_info(), _info(path="end-to-end", head="finetune", params={"epochs": 15, "fine_tune_epochs": 2})],
     ["logreg", "fine-tune 15+2"]),
])
def test_labels_name_what_differs(infos, expected):
    assert make_labels(infos) == expected
    _check(expected)


def test_model_files_of_one_name_in_two_folders_are_told_apart_without_paths():
    other = BASE.replace("/bases/", "/other-bases/")
    labels = make_labels([_info(), _info(backbone=other)])
    _check(labels)
    assert labels[0] == "base-d474d6….keras:features (bases) · logreg"
    assert labels[1].endswith("(other-bases) · logreg")  # cut in the middle to fit
    deeper = make_labels([_info(backbone="/a/x/m.keras"), _info(backbone="/b/x/m.keras")])
    _check(deeper)  # same file and folder names: a digest of the spec tells them apart


def test_copies_of_one_run_get_numbers_and_long_names_are_cut():
    labels = make_labels([_info(), _info()])
    _check(labels)
    assert labels == ["logreg #1", "logreg #2"]
    long = make_labels([_info(backbone="keras:" + "X" * 80), _info(backbone="keras:Y")])
    _check(long)
    assert long[0].endswith("· logreg") and "…" in long[0]


def test_seed_and_dataset_break_ties_only_where_needed():
    labels = make_labels([_info(), _info(seed=1), _info(head="svm")])
    assert labels == ["logreg · seed 0", "logreg · seed 1", "svm"]
    labels = make_labels([_info(), _info(dataset={"root": "/d/flowers"})])
    assert labels == ["logreg · data cats", "logreg · data flowers"]


def test_a_single_run_names_its_base_and_shared_facts_say_what_labels_leave_out():
    assert make_labels([_info()]) == ["base-d474d6….keras:features · logreg"]
    assert shared_facts([_info(), _info(head="svm")]) == [
        "backbone base-d474d6….keras:features", "image size 32px", "avg pool"]


def test_short_backbone_never_keeps_a_directory():
    assert short_backbone("/x/y/model.h5") == "model.h5"
    assert short_backbone("C:\\models\\net.keras") == "net.keras"
    assert short_backbone("xception_41_imagenet") == "xception_41_imagenet"
    assert short_backbone("hf://user/repo") == "repo"
