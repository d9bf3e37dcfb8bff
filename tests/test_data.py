import os
import time

import pytest

from conftest import make_dataset, make_image
from featpipe.data import UnusableFile, load_image_folder, read_regular_file
from featpipe.errors import FeatpipeError


def test_discovers_splits_classes_and_sorted_paths(dataset):
    data = load_image_folder(dataset)
    assert data.classes == ("cat", "dog")
    assert list(data.splits) == ["train", "validation", "test"]
    train = data.splits["train"]
    assert len(train) == 12 and train.labels == (0,) * 6 + (1,) * 6
    assert train.paths[0].startswith("train/cat/") and train.paths[-1].startswith("train/dog/")
    assert all(os.path.isfile(f) for f in data.files("test"))


def test_multiclass_and_hidden_files_ignored(tmp_path):
    root = make_dataset(tmp_path / "d", classes=("cat", "dog", "fox"), per_split={"train": 2, "test": 1})
    (root / "train" / "cat" / ".DS_Store").write_text("x")
    (root / "train" / "cat" / "notes.txt").write_text("x")
    data = load_image_folder(root)
    assert data.classes == ("cat", "dog", "fox")
    assert len(data.splits["train"]) == 6 and set(data.splits["train"].labels) == {0, 1, 2}


def test_class_mismatch_is_named(dataset):
    (dataset / "test" / "dog").rename(dataset / "test" / "wolf")
    with pytest.raises(FeatpipeError, match=r"test/.*missing \['dog'\].*extra \['wolf'\]"):
        load_image_folder(dataset)


@pytest.mark.parametrize("breakage, message", [
    (lambda root: None, "not found"),
    (lambda root: root.mkdir(), "no train/ folder"),
    (lambda root: (root / "train").mkdir(parents=True), "no class folders"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "has no images"),
])
def test_missing_or_empty_folders(tmp_path, breakage, message):
    root = tmp_path / "d"
    breakage(root)
    with pytest.raises(FeatpipeError, match=message):
        load_image_folder(root)


def test_val_fraction_is_stratified_and_seeded(tmp_path):
    root = make_dataset(tmp_path / "d", per_split={"train": 10, "test": 2})
    a = load_image_folder(root, val_fraction=0.2, seed=1)
    b = load_image_folder(root, val_fraction=0.2, seed=1)
    c = load_image_folder(root, val_fraction=0.2, seed=2)
    assert a.splits["validation"].labels == (0, 0, 1, 1)
    assert len(a.splits["train"]) == 16
    assert not set(a.splits["train"].paths) & set(a.splits["validation"].paths)
    assert a.splits["validation"].paths == b.splits["validation"].paths != c.splits["validation"].paths
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_val_fraction_refused_when_validation_exists_or_out_of_range(dataset, tmp_path):
    with pytest.raises(FeatpipeError, match="already has a validation"):
        load_image_folder(dataset, val_fraction=0.2)
    root = make_dataset(tmp_path / "d2", per_split={"train": 4})
    with pytest.raises(FeatpipeError, match="between 0 and 1"):
        load_image_folder(root, val_fraction=1.5)


def test_fingerprint_changes_on_add_remove_modify(dataset):
    base = load_image_folder(dataset).fingerprint()
    assert load_image_folder(dataset).fingerprint() == base
    extra = make_image(dataset / "train" / "cat" / "new.png", (1, 2, 3))
    assert load_image_folder(dataset).fingerprint() != base
    extra.unlink()
    assert load_image_folder(dataset).fingerprint() == base
    victim = dataset / "test" / "dog" / "dog.0.jpg"
    victim.touch()
    os.utime(victim, ns=(time.time_ns(), victim.stat().st_mtime_ns + 10**9))
    assert load_image_folder(dataset).fingerprint() != base


def test_content_fingerprint_sees_edits_that_keep_size_and_time(dataset):
    victim = dataset / "test" / "dog" / "dog.0.jpg"
    before = (load_image_folder(dataset).fingerprint(), load_image_folder(dataset).fingerprint(content=True))
    stat = victim.stat()
    victim.write_bytes(victim.read_bytes()[::-1])  # same size, other bytes
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = (load_image_folder(dataset).fingerprint(), load_image_folder(dataset).fingerprint(content=True))
    assert after[0] == before[0] and after[1] != before[1]


# --- hostile datasets (issue 9) ---------------------------------------------------------------------------


def _hostile_dataset(tmp_path):
    """A real dataset plus, in train/cat, a FIFO, a dangling link, a link loop, a link to a special file and
    links to regular images inside and outside the tree: all are rows; reading skips the unusable ones."""
    from hostile_fixtures import png_bomb

    root = make_dataset(tmp_path / "data")
    cat = root / "train" / "cat"
    os.mkfifo(cat / "fifo.jpg")
    (cat / "dangling.jpg").symlink_to(cat / "gone.jpg")
    (cat / "loopA.jpg").symlink_to(cat / "loopB.jpg")
    (cat / "loopB.jpg").symlink_to(cat / "loopA.jpg")
    (cat / "null.png").symlink_to("/dev/null")
    (cat / "inside.jpg").symlink_to(cat / "cat.0.jpg")
    outside = tmp_path / "elsewhere" / "cat.jpg"
    outside.parent.mkdir()
    outside.write_bytes((cat / "cat.0.jpg").read_bytes())
    (cat / "outside.jpg").symlink_to(outside)
    png_bomb(cat / "bomb.png")
    return root


@pytest.mark.timeout(60)  # opening the FIFO must never wait for a writer
def test_fingerprint_of_hostile_paths_neither_crashes_nor_blocks(tmp_path):
    data = load_image_folder(_hostile_dataset(tmp_path))
    assert {"train/cat/fifo.jpg", "train/cat/dangling.jpg", "train/cat/loopA.jpg"} <= set(data.splits["train"].paths)
    before = data.fingerprint(), data.fingerprint(content=True)
    assert before == (data.fingerprint(), data.fingerprint(content=True))
    (data.root / "train" / "cat" / "gone.jpg").write_bytes(b"now it leads somewhere")
    assert data.fingerprint() != before[0]  # a link that stops dangling changes the dataset


def test_an_unlistable_class_folder_is_named(dataset, monkeypatch):
    """chmod 000 on a class folder (simulated: as root it would still be readable)."""
    real_scandir = os.scandir
    locked = str(dataset / "train" / "dog")

    def scandir(path="."):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(FeatpipeError, match=f"cannot read folder {locked}: permission denied"):
        load_image_folder(dataset)


def test_training_needs_two_classes_with_images(tmp_path):
    one = load_image_folder(make_dataset(tmp_path / "one", classes=("cat",)))
    with pytest.raises(FeatpipeError, match="has one class \\(cat\\)"):
        one.require_classes()
    load_image_folder(make_dataset(tmp_path / "two")).require_classes()


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


def test_a_whole_file_is_one_read_and_one_that_shrank_is_skipped(tmp_path, monkeypatch):
    path = make_image(tmp_path / "still.png", (1, 2, 3))
    real_read, asked = os.read, []

    def counted_read(fd, n):
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counted_read)
    assert read_regular_file(str(path), 1 << 20) == path.read_bytes()
    assert asked == [path.stat().st_size + 1]  # one byte more than expected, and no read for the end

    def read_and_truncate(fd, n):
        chunk = real_read(fd, n)
        os.truncate(path, 10)
        return chunk[:10]

    monkeypatch.setattr(os, "read", read_and_truncate)
    with pytest.raises(UnusableFile, match="file changed while being read"):
        read_regular_file(str(path), 1 << 20)
