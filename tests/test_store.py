import json

import h5py
import numpy as np
import pytest

from featpipe.errors import FeatpipeError
from featpipe.store import CacheWriter, FeatureCache, cache_file_name, cache_key, list_caches

PATHS = [f"train/c/{i}.jpg" for i in range(7)]


def _write_split(writer, features, skip=()):
    """Shards of 3 rows over 7 source rows, dropping `skip` rows as unreadable."""
    for start in range(0, 7, 3):
        rows = np.array([r for r in range(start, min(start + 3, 7)) if r not in skip], np.int64)
        writer.write_shard("train", start, features[rows], rows % 2, rows,
                           [(r, "empty file") for r in range(start, min(start + 3, 7)) if r in skip], seconds=0.5)


def test_key_is_order_independent_and_sensitive():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1}) != cache_key({"a": 2, "b": [1, 2]})
    assert cache_file_name("keras:MobileNet(alpha=0.25)/x", "f" * 64) == "keras_MobileNet_alpha=0.25_x-ffffffffffffffff.h5"


def test_shards_merge_into_final_file_and_read_back(tmp_path):
    features = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    final = tmp_path / "c.h5"
    with CacheWriter(final, "k" * 64, shard_rows=3) as writer:
        _write_split(writer, features, skip={4})
        assert writer.done_shards("train") == {0, 3, 6}
        writer.finalize({"train": PATHS}, {"classes": ["a", "b"], "facts": {"x": 1}}, "float16", "gzip")
    assert final.exists() and not (tmp_path / "c.h5.partial").exists() and not (tmp_path / "c.h5.lock").exists()
    with FeatureCache(final) as cache:
        keep = [0, 1, 2, 3, 5, 6]
        assert cache.classes == ["a", "b"] and cache.facts == {"x": 1} and cache.key == "k" * 64
        assert cache.splits == ["train"] and cache.n_rows("train") == 6 and cache.feature_shape == (4,)
        np.testing.assert_array_equal(cache.features("train"), features[keep].astype(np.float16))
        assert cache.labels("train").tolist() == [r % 2 for r in keep]
        assert cache.paths("train") == [PATHS[r] for r in keep]
        assert cache.skipped("train") == [("train/c/4.jpg", "empty file")]
        assert cache.timing("train") == {"seconds": 1.5, "images": 7, "images_per_second": 7 / 1.5}
        assert cache.total_timing() == cache.timing("train")  # one split: the same sums
        chunks = list(cache.iter_batches("train", 4))
        assert [len(x) for x, _ in chunks] == [4, 2]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), cache.features("train"))
        assert cache.describe()["rows"] == {"train": 6}
        with pytest.raises(FeatpipeError, match="no 'test' split"):
            cache.features("test")
    assert list_caches(tmp_path) == ([final], [])


def test_partial_is_not_a_cache_and_resume_keeps_shard_size(tmp_path):
    final = tmp_path / "c.h5"
    with CacheWriter(final, "k1", shard_rows=3) as writer:
        writer.write_shard("train", 0, np.zeros((3, 2)), np.zeros(3), np.arange(3), [], seconds=1.0)
    with pytest.raises(FeatpipeError, match="interrupted"):
        FeatureCache(final)
    assert list_caches(tmp_path) == ([], [tmp_path / "c.h5.partial"])
    with CacheWriter(final, "k1", shard_rows=50) as writer:  # a resumed run keeps the first run's shards
        assert writer.shard_rows == 3 and writer.done_shards("train") == {0}
    with CacheWriter(final, "k2", shard_rows=50) as writer:  # another key never reuses them
        assert writer.shard_rows == 50 and writer.done_shards("train") == set()


def test_second_writer_is_refused(tmp_path):
    final = tmp_path / "c.h5"
    with CacheWriter(final, "k", shard_rows=3):
        with pytest.raises(FeatpipeError, match="another featpipe process is writing c.h5"):
            with CacheWriter(final, "k", shard_rows=3):
                pass


def test_foreign_and_unwritable_files(tmp_path):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    with pytest.raises(FeatpipeError, match="not a complete featpipe cache"):
        FeatureCache(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("nope")
    with pytest.raises(FeatpipeError, match="cannot read cache file"):
        FeatureCache(garbage)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FeatpipeError, match="cannot write to cache directory"):
        with CacheWriter(blocker / "sub" / "c.h5", "k", 3):
            pass
    with pytest.raises(FeatpipeError, match="cache directory not found"):
        list_caches(tmp_path / "nowhere")


def test_attributes_are_json(tmp_path):
    final = tmp_path / "c.h5"
    with CacheWriter(final, "k", shard_rows=3) as writer:
        _write_split(writer, np.ones((7, 2), np.float32))
        writer.finalize({"train": PATHS}, {"classes": ["a"], "facts": {}, "image_size": [8, 8]}, "float32", None)
    with h5py.File(final) as f:
        assert json.loads(f.attrs["image_size"]) == [8, 8]
    with FeatureCache(final) as cache:
        assert cache.attrs["image_size"] == [8, 8]


def test_work_files_go_once_another_process_has_finished(tmp_path):
    final = tmp_path / "c.h5"
    with CacheWriter(final, "k", shard_rows=3) as writer:
        writer.write_shard("train", 0, np.zeros((3, 2)), np.zeros(3), np.arange(3), [], seconds=1.0)
        final.write_bytes(b"finished elsewhere")  # stands for the other process's atomic rename
    assert not (tmp_path / "c.h5.partial").exists() and not (tmp_path / "c.h5.lock").exists()
    assert final.read_bytes() == b"finished elsewhere"
