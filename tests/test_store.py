import json

import h5py
import numpy as np
import pytest

from cache_fixtures import write_cache
from featpipe.errors import FeatpipeError
from featpipe.store import FeatureCache, cache_file_name, list_caches

ATTRS = {"classes": ["a", "b"], "facts": {"x": 1}, "image_size": [8, 8]}


@pytest.fixture
def cache_file(tmp_path):
    features = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    return write_cache(tmp_path / "c.h5", "k" * 64, {"train": (features, np.arange(7) % 2)}, ATTRS,
                       part_rows=3, seconds=1.5)


def test_file_names_are_safe_and_carry_the_key():
    assert cache_file_name("keras:MobileNet(alpha=0.25)/x", "f" * 64) == "keras_MobileNet_alpha=0.25_x-ffffffffffffffff.h5"


def test_reads_back_what_was_written(cache_file, tmp_path):
    with FeatureCache(cache_file) as cache:
        assert cache.classes == ["a", "b"] and cache.facts == {"x": 1} and cache.key == "k" * 64
        assert cache.attrs["image_size"] == [8, 8]
        assert cache.splits == ["train"] and cache.n_rows("train") == 7 and cache.feature_shape == (4,)
        np.testing.assert_array_equal(cache.features("train"), np.arange(28, dtype=np.float32).reshape(7, 4))
        assert cache.labels("train").tolist() == [0, 1, 0, 1, 0, 1, 0]
        assert cache.paths("train") == [f"train/c/{r}.jpg" for r in range(7)]
        timing = cache.timing("train")
        assert timing["images"] == 7 and timing["seconds"] >= 1.5  # the parts' seconds + the assembly's
        assert cache.total_timing() == timing  # one split: the same sums
        chunks = list(cache.iter_batches("train", 4))
        assert [len(x) for x, _ in chunks] == [4, 3]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), cache.features("train"))
        assert cache.describe()["rows"] == {"train": 7}
        with pytest.raises(FeatpipeError, match="no 'test' split"):
            cache.features("test")
    with h5py.File(cache_file) as f:
        assert json.loads(f.attrs["image_size"]) == [8, 8]
    assert list_caches(tmp_path) == ([cache_file], [])


def test_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    with pytest.raises(FeatpipeError, match="not a complete featpipe cache"):
        FeatureCache(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("nope")
    with pytest.raises(FeatpipeError, match="cannot read cache file"):
        FeatureCache(garbage)
    (tmp_path / "x.h5.partial").mkdir()
    with pytest.raises(FeatpipeError, match="interrupted"):
        FeatureCache(tmp_path / "x.h5")
    with pytest.raises(FeatpipeError, match="cache directory not found"):
        list_caches(tmp_path / "nowhere")


def _delete_labels(f):
    del f["train/labels"]


def _drop_classes(f):
    del f.attrs["classes"]


def _garble_facts(f):
    f.attrs["facts"] = '{"x": 1'


def _labels_out_of_range(f):
    f["train/labels"][0] = 7


def _short_paths(f):
    del f["train/paths"]
    f["train/paths"] = np.array([b"a"])


@pytest.mark.parametrize("damage", [_delete_labels, _drop_classes, _garble_facts, _labels_out_of_range, _short_paths])
def test_a_damaged_cache_is_one_clear_error(cache_file, damage):
    with h5py.File(cache_file, "a") as f:
        damage(f)
    with pytest.raises(FeatpipeError, match="is damaged .*delete it and run the extraction again"):
        FeatureCache(cache_file)


def test_flipped_bytes_never_escape_as_a_traceback(cache_file):
    """Whatever byte of the file is flipped, opening it either works or is one FeatpipeError."""
    original = cache_file.read_bytes()
    for offset in range(0, min(len(original), 4096), 61):  # the superblock, object headers and attributes
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        cache_file.write_bytes(bytes(damaged))
        try:
            with FeatureCache(cache_file) as cache:
                cache.features("train"), cache.labels("train"), cache.paths("train")
        except FeatpipeError:
            pass


def test_a_flipped_feature_byte_is_detected_by_the_chunk_checksum(cache_file):
    with h5py.File(cache_file) as f:
        offset = f["train/features"].id.get_chunk_info(0).byte_offset
    data = bytearray(cache_file.read_bytes())
    data[offset + 5] ^= 0x01
    cache_file.write_bytes(bytes(data))
    with FeatureCache(cache_file) as cache:
        with pytest.raises(FeatpipeError, match="is damaged"):
            cache.features("train")
