import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from cache_fixtures import manifest, part_data
from featpipe.errors import FeatpipeError
from featpipe.parts import Part, write_part
from featpipe.workdir import WorkDir


def test_the_first_manifest_wins(tmp_path):
    workdir = WorkDir(tmp_path / "c.h5")
    first = workdir.open(manifest("k", {"train": 10}, part_rows=4, attrs={}))
    again = workdir.open(manifest("k", {"train": 10}, part_rows=7, attrs={}))  # a resumed run keeps the layout
    assert first == again and again["part_rows"] == 4
    assert workdir.plan() == [Part("train", 0, 4), Part("train", 4, 8), Part("train", 8, 10)]


def test_an_unusable_manifest_is_replaced_with_a_warning(tmp_path, caplog):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.path.mkdir()
    workdir.manifest_path.write_text('{"key": "k", "part_r')
    with caplog.at_level(logging.WARNING, logger="featpipe"):
        assert workdir.open(manifest("k", {"train": 10}, part_rows=5, attrs={}))["part_rows"] == 5
    assert "discarding the manifest" in caplog.text and "it cannot be read" in caplog.text
    other = workdir.open(manifest("k2", {"train": 10}, part_rows=3, attrs={}))  # another key never reuses it
    assert other["key"] == "k2" and other["part_rows"] == 3


def test_missing_parts_and_unusable_part_files_are_redone(tmp_path, caplog):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.open(manifest("k", {"train": 9}, part_rows=3, attrs={}))
    for start in (0, 3):
        write_part(workdir.path, "k", part_data("train", start, np.ones((3, 2), np.float32), [0, 1, 0]))
    workdir.part_path(Part("train", 3, 6)).write_bytes(b"half a part")  # e.g. a disk that filled up
    (workdir.path / "train-0000000006-0000000009.h5.tmp-99-ab").write_bytes(b"a killed writer's temp file")
    with caplog.at_level(logging.WARNING, logger="featpipe"):
        assert workdir.missing(workdir.plan()) == [Part("train", 3, 6), Part("train", 6, 9)]
    assert "redoing train rows 3-5" in caplog.text and not workdir.part_path(Part("train", 3, 6)).exists()
    assert workdir.finished_rows(workdir.plan()) == 3


def test_locks_keep_out_a_second_process_per_key_and_per_shard(tmp_path):
    workdir = WorkDir(tmp_path / "c.h5")
    with workdir.lock():
        with pytest.raises(FeatpipeError, match="another featpipe process is writing c.h5"):
            with workdir.lock():
                pass
        with workdir.lock(shard=(0, 2)), workdir.lock(shard=(1, 2)):  # shards of one key run side by side
            with pytest.raises(FeatpipeError, match="writing shard 1/2 of c.h5"):
                with workdir.lock(shard=(1, 2)):
                    pass


def test_unwritable_cache_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FeatpipeError, match="cannot write to cache directory"):
        WorkDir(blocker / "sub" / "c.h5").open(manifest("k", {"train": 1}, 1, {}))
    with pytest.raises(FeatpipeError, match="cannot write to cache directory"):
        with WorkDir(blocker / "sub" / "c.h5").lock():
            pass


def test_a_removed_lock_is_never_held_twice(tmp_path):
    """Issue 20, item 8 (run directories): a lock file deleted by its holder on release, while another process
    had it open, is not taken by both that process and a newcomer."""
    import fcntl
    import os

    from featpipe.workdir import exclusive_lock

    path = tmp_path / ".run.lock"
    with exclusive_lock(path, "run", remove=True):
        stale = os.open(path, os.O_RDWR)  # a second process opens the file the holder will delete
    assert not path.exists()
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it gets the lock of the deleted file...
    with exclusive_lock(path, "run", remove=True):  # ...which does not keep a newcomer out: the path is new
        with pytest.raises(FeatpipeError, match="another featpipe process is writing run"):
            with exclusive_lock(path, "run", remove=True):
                pass
    os.close(stale)


@pytest.mark.parametrize("change, why", [
    ({"splits": {"train": 6}}, "its splits is not this extraction's"),  # fewer rows than the dataset
    ({"splits": {"train": 99}}, "its splits is not this extraction's"),
    ({"dtype": "float16"}, "its dtype is not this extraction's"),
    ({"attrs": {"classes": ["a"]}}, "its classes are not this extraction's"),
])
def test_a_manifest_that_disagrees_with_the_plan_is_redone_with_a_warning(tmp_path, caplog, change, why):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.open(manifest("k", {"train": 10}, part_rows=4, attrs={}))
    tampered = {**workdir.manifest(), **change}
    workdir.manifest_path.write_text(json.dumps(tampered))
    with caplog.at_level(logging.WARNING, logger="featpipe"):
        now = workdir.open(manifest("k", {"train": 10}, part_rows=5, attrs={}))
    assert why in caplog.text
    assert now["splits"] == {"train": 10} and now["part_rows"] == 5 and now["attrs"]["classes"] == ["a", "b"]


@pytest.mark.parametrize("change", [
    {"shards": 10**20}, {"shards": 11}, {"shards": 0}, {"shards": "2"}, {"part_rows": 0}, {"part_rows": True},
    {"splits": {"train": "10"}}, {"splits": {"train": -1}}, {"splits": {"train": 10**20}}, {"splits": []},
    {"dtype": "int8"}, {"attrs": []}, {"attrs": {"classes": "ab"}}, {"key": 1},
])
def test_a_malformed_manifest_is_never_trusted(tmp_path, change):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.open(manifest("k", {"train": 10}, part_rows=4, attrs={}))
    workdir.manifest_path.write_text(json.dumps({**workdir.manifest(), **change}))
    with pytest.raises(FeatpipeError, match="has no usable manifest.json: run the extract command again"):
        workdir.plan()  # what `cache ls` and `cache merge` read: an error at once, never a long loop
    assert workdir.open(manifest("k", {"train": 10}, part_rows=4, attrs={}))[next(iter(change))] != \
        change[next(iter(change))]


def test_parts_of_the_right_key_are_checked_against_the_dataset(tmp_path, caplog):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.open(manifest("k", {"train": 6}, part_rows=3, attrs={}))
    write_part(workdir.path, "k", part_data("train", 0, np.ones((3, 2), np.float32), [0, 1, 0]))
    write_part(workdir.path, "k", part_data("train", 3, np.ones((3, 2), np.float32), [0, 1, 7]))  # label 7 of 2
    dataset = SimpleNamespace(splits={"train": SimpleNamespace(paths=[f"train/c/{r}.jpg" for r in range(6)],
                                                               labels=[0, 0, 0, 0, 1, 0])})
    with caplog.at_level(logging.WARNING, logger="featpipe"):
        assert workdir.missing(workdir.plan()) == [Part("train", 3, 6)]
        assert "it has labels outside the 2 classes" in caplog.text
        write_part(workdir.path, "k", part_data("train", 3, np.ones((3, 2), np.float32), [0, 1, 0]))
        assert workdir.missing(workdir.plan(), dataset) == [Part("train", 0, 3)]  # row 1 is labelled 0 there
        assert "its labels are not the dataset's" in caplog.text
        dataset.splits["train"].paths[4] = "train/d/4.jpg"
        assert workdir.missing(workdir.plan(), dataset) == [Part("train", 0, 3), Part("train", 3, 6)]
        assert "its paths are not the dataset's" in caplog.text
