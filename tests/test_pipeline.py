import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import make_image
from featpipe.pipeline import decode_and_resize, indexed_images, labeled_images, unreadable_reason


def test_decodes_every_mode_and_format_to_rgb(corrupt_dataset):
    files = sorted(str(p) for p in (corrupt_dataset / "train").rglob("*") if p.is_file())
    out = list(indexed_images(files, (12, 10)).as_numpy_iterator())
    bad = {i for i, f in enumerate(files) if f.endswith(("zero.jpg", "text.png", "truncated.jpg"))}
    assert [int(row) for _, row in out] == [i for i in range(len(files)) if i not in bad]
    for image, _ in out:
        assert image.shape == (12, 10, 3) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 255


def test_rows_subset_keeps_order(dataset):
    files = sorted(str(p) for p in (dataset / "test").rglob("*.*"))
    rows = [r for _, r in indexed_images(files, (8, 8), rows=np.array([4, 1, 5])).as_numpy_iterator()]
    assert rows == [4, 1, 5]


def test_values_match_pil_for_a_plain_image(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (40, 30), (10, 120, 250)).save(path)
    image = decode_and_resize(tf.io.read_file(str(path)), (7, 9)).numpy()
    np.testing.assert_allclose(image, np.broadcast_to([10, 120, 250], (7, 9, 3)))


def test_crop_to_aspect_ratio_takes_the_centre(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 255  # a white centre square between black side bands
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    contents = tf.io.read_file(str(path))
    assert decode_and_resize(contents, (5, 5), crop_to_aspect_ratio=True).numpy().min() == 255
    assert decode_and_resize(contents, (5, 5)).numpy().min() == 0


def test_labeled_images_skips_bad_files(corrupt_dataset):
    files = sorted(str(p) for p in (corrupt_dataset / "train").rglob("*") if p.is_file())
    labels = [0 if "/cat/" in f else 1 for f in files]
    batches = list(labeled_images(files, labels, (8, 8), batch_size=4).as_numpy_iterator())
    assert sum(len(y) for _, y in batches) == len(files) - 3


def test_shuffling_changes_the_order_reproducibly_from_the_seed(dataset):
    files = sorted(str(p) for p in (dataset / "train").rglob("*") if p.is_file())
    rows = list(range(len(files)))  # each image labelled with its row, so the labels show the order

    def epochs(n=1, **kwargs):
        data = labeled_images(files, rows, (8, 8), 4, **kwargs)
        return [np.concatenate([y for _, y in data.as_numpy_iterator()]).tolist() for _ in range(n)]

    assert epochs() == [rows]  # no shuffle: file order
    first, second = epochs(2, shuffle=True, seed=7)
    assert sorted(first) == sorted(second) == rows  # every image once per epoch
    assert first != rows and second != first  # shuffled, and again differently each epoch
    assert epochs(2, shuffle=True, seed=7) == [first, second]  # the same seed, the same orders
    assert epochs(shuffle=True, seed=8) != [first]


def test_unreadable_reasons(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    good = make_image(tmp_path / "ok.jpg", (1, 2, 3))
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    assert unreadable_reason(str(tmp_path / "zero.jpg")) == "empty file"
    assert "cannot identify image file" in unreadable_reason(str(tmp_path / "text.jpg"))
    assert str(tmp_path) not in unreadable_reason(str(tmp_path / "text.jpg"))
    assert "runcated" in unreadable_reason(str(tmp_path / "cut.jpg"))
