from PIL import Image

from featpipe import shapes
from featpipe.data import load_image_folder
from featpipe.demo_data import DEMO_CLASSES, make_demo_dataset

SIZES = {"train": 3, "validation": 2, "test": 1}


def test_demo_dataset_is_the_target_task_as_an_image_folder(tmp_path):
    root = make_demo_dataset(tmp_path / "a", split_sizes=SIZES, size=24, seed=1)
    data = load_image_folder(root)
    assert data.classes == tuple(sorted(shapes.class_name(c) for c in DEMO_CLASSES))
    assert not set(data.classes) & {shapes.class_name(c) for c in shapes.SOURCE_CLASSES}
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 18, "validation": 12, "test": 6}
    first = root / "train" / "star-checks" / "star-checks.0.png"
    assert Image.open(first).size == (24, 24) and Image.open(first).format == "PNG"


def test_same_seed_same_images_other_seed_other_images(tmp_path):
    a = make_demo_dataset(tmp_path / "a", split_sizes=SIZES, size=24, seed=1)
    b = make_demo_dataset(tmp_path / "b", split_sizes=SIZES, size=24, seed=1)
    c = make_demo_dataset(tmp_path / "c", split_sizes=SIZES, size=24, seed=2)
    first = "train/star-checks/star-checks.0.png"
    assert (a / first).read_bytes() == (b / first).read_bytes() != (c / first).read_bytes()


def test_a_bigger_test_split_leaves_the_training_images_alone(tmp_path):
    a = make_demo_dataset(tmp_path / "a", split_sizes=SIZES, size=24)
    b = make_demo_dataset(tmp_path / "b", split_sizes={**SIZES, "test": 5}, size=24)
    for path in (a / "train").rglob("*.png"):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
