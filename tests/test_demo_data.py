import numpy as np
from PIL import Image

from featpipe.data import load_image_folder
from featpipe.demo_data import make_demo_dataset


def test_demo_dataset_layout_and_reproducibility(tmp_path):
    sizes = {"train": 3, "validation": 2, "test": 1}
    a = make_demo_dataset(tmp_path / "a", split_sizes=sizes, size=24, seed=1)
    b = make_demo_dataset(tmp_path / "b", split_sizes=sizes, size=24, seed=1)
    data = load_image_folder(a)
    assert data.classes == ("checks", "hstripes", "rings", "vstripes")
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 12, "validation": 8, "test": 4}
    first = "train/checks/checks.0.jpg"
    assert (a / first).read_bytes() == (b / first).read_bytes()
    assert Image.open(a / first).size == (24, 24)


def test_stripes_have_their_orientation(tmp_path):
    root = make_demo_dataset(tmp_path / "d", classes=("hstripes", "vstripes"),
                             split_sizes={"train": 4, "validation": 0, "test": 0}, size=48)
    for name, axis in (("hstripes", 1), ("vstripes", 0)):
        for path in (root / "train" / name).iterdir():
            pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
            # Along the stripes the image barely changes; across them it does.
            along = np.abs(np.diff(pixels, axis=axis)).mean()
            across = np.abs(np.diff(pixels, axis=1 - axis)).mean()
            assert along < across
