from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import make_image
from dataset_graph import dataset_ops
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


# --- hostile paths (issue 9): skipped with a reason, never blocking, never decoding a bomb ---------------

import os  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402

from featpipe.data import UnusableFile  # noqa: E402
from featpipe.pipeline import check_header, max_pixels, read_image  # noqa: E402
from hostile_fixtures import png_bomb  # noqa: E402


def hostile_folder(root):
    """Good images (one plain, one linked from inside, one linked from outside the folder) among hostile paths;
    returns (files in order, {index of each unusable file: expected reason})."""
    folder = root / "imgs"
    good = make_image(folder / "a_good.png", (200, 10, 10))
    outside = make_image(root / "elsewhere" / "real.jpg", (10, 200, 10))
    (folder / "b_link_inside.png").symlink_to(good)
    (folder / "c_link_outside.jpg").symlink_to(outside)
    os.mkfifo(folder / "d_fifo.jpg")
    (folder / "e_dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "f_loopA.jpg").symlink_to(folder / "f_loopB.jpg")
    (folder / "f_loopB.jpg").symlink_to(folder / "f_loopA.jpg")
    (folder / "g_to_fifo.jpg").symlink_to(folder / "d_fifo.jpg")
    (folder / "h_dir.jpg").mkdir()
    png_bomb(folder / "i_bomb.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "j_socket.png"))
    (folder / "k_to_dev.jpg").symlink_to("/dev/zero")
    (folder / "l_empty.jpg").write_bytes(b"")
    files = sorted(str(p) for p in folder.iterdir())
    reasons = {"d_fifo": "not a regular file: a FIFO", "e_dangling": "dangling symbolic link",
               "f_loopA": "symbolic link loop", "f_loopB": "symbolic link loop",
               "g_to_fifo": "not a regular file: a FIFO", "h_dir": "not a regular file: a folder",
               "i_bomb": "image claims 900000000 pixels, over the 89478485-pixel limit", "j_socket": "not a regular file: a socket",
               "k_to_dev": "not a regular file: a character device", "l_empty": "empty file"}
    expected = {i: reasons[os.path.basename(f).rsplit(".", 1)[0]] for i, f in enumerate(files)
                if os.path.basename(f).rsplit(".", 1)[0] in reasons}
    return files, expected, sock


@pytest.mark.timeout(120)  # a FIFO that blocked would hang here
def test_hostile_paths_are_skipped_with_their_reason(tmp_path):
    files, expected, sock = hostile_folder(tmp_path)
    try:
        rows = [int(r) for _, r in indexed_images(files, (8, 8)).as_numpy_iterator()]
        assert rows == [0, 1, 2]  # the plain image and both links to regular images
        for i, reason in expected.items():
            assert unreadable_reason(files[i]).startswith(reason), (files[i], unreadable_reason(files[i]))
    finally:
        sock.close()


def test_a_bomb_is_refused_from_its_header_and_the_cap_is_configurable(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png", 5000, 5000)
    assert bomb.stat().st_size < 20_000
    with pytest.raises(UnusableFile, match="5000x5000 pixels, over the 1000000-pixel limit"):
        read_image(str(bomb), 1_000_000)
    assert read_image(str(bomb), 30_000_000)  # under a raised cap the header passes (decoding then fails: cut)
    monkeypatch.setenv("FEATPIPE_MAX_IMAGE_PIXELS", "100")
    assert max_pixels() == 100 and "over the 100-pixel limit" in unreadable_reason(str(make_image(tmp_path / "s.png", (1, 2, 3))))
    monkeypatch.setenv("FEATPIPE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(Exception, match="must be a whole number"):
        max_pixels()


def test_gif_frames_count_towards_the_cap(tmp_path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (100, 100), dtype=np.uint8)) for _ in range(20)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    data = (tmp_path / "anim.gif").read_bytes()
    with pytest.raises(UnusableFile, match="100x100 pixels x 20 frames"):
        check_header(data, 100 * 100 * 10)
    check_header(data, 100 * 100 * 20)


def test_an_unreadable_file_is_skipped(tmp_path, monkeypatch):
    path = make_image(tmp_path / "secret.png", (1, 2, 3))
    real_open = os.open

    def deny(p, *args, **kwargs):  # what chmod 000 does for a user that is not root
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    assert unreadable_reason(str(path)) == "cannot read: permission denied"
    assert list(indexed_images([str(path)], (8, 8)).as_numpy_iterator()) == []


# --- issue 20, item 10: a 100-megapixel photo is a photo --------------------------------------------------------


def _jpeg(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 50 + 1, width // 50 + 1, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(path, quality=90)
    return path


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims width x height: a header-only giant (its data then breaks)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9:]


@pytest.mark.parametrize("width, height, size, reduction", [
    (12000, 9000, (224, 224), 8), (12000, 9000, (1200, 1600), 4), (12000, 9000, (4500, 4500), 2),
    (12000, 9000, (4501, 100), 1), (1785, 1785, (224, 224), 8), (1784, 1784, (224, 224), 4), (100, 80, (224, 224), 1),
])
def test_jpegs_decode_at_the_largest_reduction_that_covers_the_target(tmp_path, width, height, size, reduction):
    from featpipe.pipeline import _jpeg_branch, jpeg_reduction

    data = _claiming(_jpeg(tmp_path / "x.jpg", 64, 48).read_bytes(), width, height)
    image = check_header(data, 2**40, size)
    assert image.size == (width, height) and jpeg_reduction(image, size) == reduction
    # The pipeline's own check (libjpeg reads the header) agrees with PIL's reading of it.
    assert int(_jpeg_branch(tf.constant(data), size, 2**40)) == reduction.bit_length() - 1
    decoded = -(-width // reduction) * -(-height // reduction)
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the pixel limit"):
        _jpeg_branch(tf.constant(data), size, decoded - 1)


def test_a_jpeg_over_the_cap_at_its_decode_scale_is_dropped_in_the_pipeline_before_decoding(tmp_path, monkeypatch):
    """A JPEG's header is checked by libjpeg inside the pipeline (not by PIL in the reader): a decodable JPEG
    whose decode would exceed the cap is dropped, and passes once the cap allows it."""
    jpeg, small = str(_jpeg(tmp_path / "a.jpg", 400, 300)), str(make_image(tmp_path / "b.jpg", (10, 200, 10)))
    # (100, 100): decoded at 1/2 (200 x 150 = 30,000 pixels); at 1/4 it would no longer cover the target
    assert [int(r) for _, r in indexed_images([jpeg, small], (100, 100), limit=29_999).as_numpy_iterator()] == [1]
    assert "(30000 decoded at 1/2), over the 29999-pixel limit" in unreadable_reason(jpeg, 29_999, (100, 100))
    out = list(indexed_images([jpeg, small], (100, 100), limit=30_000).as_numpy_iterator())
    assert [int(r) for _, r in out] == [0, 1]
    expected = tf.image.resize(tf.io.decode_jpeg(Path(jpeg).read_bytes(), channels=3, ratio=2), (100, 100)).numpy()
    np.testing.assert_allclose(out[0][0], expected, atol=1e-3)


def test_a_100_megapixel_jpeg_is_judged_at_its_decode_scale_other_formats_at_full_size(tmp_path):
    """PIL's own cap (twice 89.5 MP) is no longer the judge of a JPEG: the decode at the target scale is."""
    giant = _claiming(_jpeg(tmp_path / "x.jpg", 64, 48).read_bytes(), 12000, 9000)
    huge = _claiming(giant, 20000, 15000)  # 300 MP: over PIL's hard cap
    limit = max_pixels()
    for data in (giant, huge):
        check_header(data, limit, (224, 224))  # 1/8: 1500 x 1125 or 2500 x 1875
    with pytest.raises(UnusableFile, match=r"image claims 12000x9000 pixels \(27000000 decoded at 1/2\), over the "
                                           "1000000-pixel limit"):
        check_header(giant, 1_000_000, (4500, 4500))
    with pytest.raises(UnusableFile, match="12000x9000 pixels, over the 89478485-pixel limit"):
        check_header(giant, limit)  # no target: full size
    png = png_bomb(tmp_path / "big.png", 12000, 9000).read_bytes()
    with pytest.raises(UnusableFile, match="12000x9000 pixels, over the 89478485-pixel limit"):
        check_header(png, limit, (224, 224))  # PNG cannot decode reduced


@pytest.mark.slow
def test_a_big_jpeg_goes_through_the_pipeline_reduced_and_a_png_of_its_size_does_not(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("FEATPIPE_MAX_IMAGE_PIXELS", "1000000")
    jpeg = _jpeg(tmp_path / "big.jpg", 2400, 1800)
    png = tmp_path / "big.png"
    Image.open(jpeg).save(png)
    small = make_image(tmp_path / "small.jpg", (10, 200, 10))
    files = [str(jpeg), str(png), str(small)]
    out = list(indexed_images(files, (32, 40)).as_numpy_iterator())
    assert [int(r) for _, r in out] == [0, 2]
    expected = tf.image.resize(tf.io.decode_jpeg(jpeg.read_bytes(), channels=3, ratio=8), (32, 40)).numpy()
    assert np.abs(out[0][0] - expected).max() < 1e-3  # decoded at 1/8 (300 x 225), then resized
    assert "over the 1000000-pixel limit" in unreadable_reason(str(png))
    assert unreadable_reason(str(jpeg), size=(32, 40)) == "TensorFlow could not decode this image"  # decodable
    assert "(1080000 decoded at 1/2)" in unreadable_reason(str(jpeg), size=(900, 1200))
    crop = list(indexed_images([str(jpeg)], (40, 40), crop_to_aspect_ratio=True).as_numpy_iterator())
    assert crop[0][0].shape == (40, 40, 3)


def test_windows_of_files_keep_order_drop_the_unusable_and_skip_a_window_of_none(corrupt_dataset, monkeypatch):
    import featpipe.pipeline as pipeline

    monkeypatch.setattr(pipeline, "READ_WINDOW", 3)  # many windows, each read in chunks by two threads
    monkeypatch.setattr(pipeline, "READ_THREADS", 2)
    good = sorted(str(p) for p in (corrupt_dataset / "test").rglob("*.*"))
    bad = sorted(str(p) for p in (corrupt_dataset / "train" / "cat").glob("*")
                 if p.name in ("zero.jpg", "text.png", "truncated.jpg"))
    files = good[:2] + bad[:1] + bad + good[2:]  # the second window holds no usable file
    sieved = []
    out = list(indexed_images(files, (6, 6), sieve=lambda row, digest: sieved.append(row) or row == 1)
               .as_numpy_iterator())
    usable = [i for i, f in enumerate(files) if f not in bad and i != 1]
    assert [int(row) for _, row in out] == usable
    assert sorted(sieved) == [i for i, f in enumerate(files) if f not in bad or f.endswith(("text.png", "truncated.jpg"))]
    whole = dict((int(r), x) for x, r in indexed_images(files, (6, 6)).as_numpy_iterator())
    for image, row in out:
        np.testing.assert_array_equal(image, whole[int(row)])


def test_every_pass_over_a_dataset_reads_all_its_windows_also_after_an_abandoned_one(dataset, monkeypatch):
    import featpipe.pipeline as pipeline

    monkeypatch.setattr(pipeline, "READ_WINDOW", 2)
    files = sorted(str(p) for p in dataset.rglob("*.jpg"))
    images = indexed_images(files, (6, 6))
    first = list(images.as_numpy_iterator())
    abandoned = iter(images)
    next(abandoned), next(abandoned), next(abandoned)  # into its second window, then left
    again = list(images.as_numpy_iterator())
    assert [int(r) for _, r in first] == [int(r) for _, r in again] == list(range(len(files)))
    for (a, _), (b, _) in zip(first, again):
        np.testing.assert_array_equal(a, b)
    rest = [int(r) for _, r in abandoned]  # the abandoned pass, taken up again, goes on where it was
    assert rest == list(range(3, len(files)))


def test_the_pipeline_uses_no_generator_dataset(dataset):
    """Its windows enter tf.data through featpipe.python_items, not a GeneratorDataset (see there why)."""
    found = dataset_ops(indexed_images(sorted(str(p) for p in dataset.rglob("*.jpg")), (6, 6)))
    assert "EagerPyFunc" in found and not any("Generator" in op for op in found)
