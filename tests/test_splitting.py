import os

import pytest

from conftest import make_image
from featpipe.data import load_image_folder
from featpipe.errors import FeatpipeError
from featpipe.splitting import group_by_label, make_splits


@pytest.fixture
def flat(tmp_path):
    src = tmp_path / "kaggle"
    for label, colour in (("cat", (200, 60, 40)), ("dog", (40, 80, 200))):
        for i in range(12):
            make_image(src / f"{label}.{i}.jpg", colour, seed=i)
    (src / "readme.txt").write_text("not an image")
    return src


def test_groups_naturally_sorted(flat):
    groups = group_by_label(flat)
    assert list(groups) == ["cat", "dog"]
    assert groups["cat"][:3] == ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"] and groups["cat"][10] == "cat.10.jpg"


def test_book_layout_by_hard_links(flat, tmp_path):
    dest = tmp_path / "split"
    placed = make_splits(flat, dest, {"train": 5, "validation": 3, "test": 4})
    assert placed == {"train": {"cat": 5, "dog": 5}, "validation": {"cat": 3, "dog": 3}, "test": {"cat": 4, "dog": 4}}
    assert sorted(os.listdir(dest / "validation" / "cat")) == ["cat.5.jpg", "cat.6.jpg", "cat.7.jpg"]
    assert os.path.samefile(dest / "train" / "dog" / "dog.0.jpg", flat / "dog.0.jpg")
    data = load_image_folder(dest)
    assert data.classes == ("cat", "dog") and len(data.splits["test"]) == 8


def test_shuffle_is_seeded(flat, tmp_path):
    chosen = []
    for name in ("a", "b"):
        make_splits(flat, tmp_path / name, {"train": 4, "test": 4}, shuffle=True, seed=3)
        chosen.append(sorted(os.listdir(tmp_path / name / "train" / "cat")))
    assert chosen[0] == chosen[1] != ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg", "cat.3.jpg"]


def test_refuses_too_few_images_and_non_empty_destination(flat, tmp_path):
    with pytest.raises(FeatpipeError, match="not enough images for 20 per class"):
        make_splits(flat, tmp_path / "x", {"train": 10, "test": 10})
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    with pytest.raises(FeatpipeError, match="not empty"):
        make_splits(flat, dest, {"train": 1})
    assert (dest / "keep.txt").read_text() == "precious"
