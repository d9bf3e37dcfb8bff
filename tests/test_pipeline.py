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


# --- hostile paths (issue 9): skipped with a reason, never blocking, never decoding a bomb ---------------

import os  # noqa: E402
import socket  # noqa: E402

import pytest  # noqa: E402

from featpipe.data import UnusableFile, read_regular_file  # noqa: E402
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


def test_a_file_that_changes_while_read_is_skipped(tmp_path, monkeypatch):
    path = make_image(tmp_path / "moving.png", (1, 2, 3))
    real_read = os.read

    def read_and_grow(fd, n):
        chunk = real_read(fd, n)
        with open(path, "ab") as f:
            f.write(b"appended by another process")
        return chunk

    monkeypatch.setattr(os, "read", read_and_grow)
    with pytest.raises(UnusableFile, match="file changed while being read"):
        read_regular_file(str(path), 1 << 20)


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
