import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cache_fixtures import part_data, write_cache
from featpipe.assemble import assemble
from featpipe.errors import FeatpipeError
from featpipe.parts import Part, write_part
from featpipe.store import FeatureCache, cache_file_name, list_caches
from featpipe.workdir import WorkDir

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


# Written by the code before issue 18 (commit 635da3f; see tests/data/format-v1/README): a finished cache, an
# interrupted extraction's work directory (its last part missing) and a run directory.
FORMAT_V1 = Path(__file__).parent / "data" / "format-v1"


def _layout(path: Path, values: bool = True) -> dict:
    """Everything a reader of a cache or part file relies on: attributes, and each dataset's dtype, row shape,
    chunking, filters (and rows and values)."""
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found[name] = (str(obj.dtype), obj.shape[1:], obj.compression, obj.fletcher32) + (
                    (obj.shape, obj.chunks, obj[()].tolist()) if values else ())
            found[f"{name}@"] = {k: (v if k != "seconds" and values else k) for k, v in obj.attrs.items()}

        f.visititems(visit)
        found["@"] = {k: (v if values else k) for k, v in f.attrs.items()}
    return found


def test_a_cache_written_before_issue_18_reads_as_it_did():
    with FeatureCache(FORMAT_V1 / "cache.h5") as cache:
        assert cache.key == "k" * 64 and cache.classes == ["cat", "dog"] and cache.splits == ["train", "test"]
        assert cache.n_rows("train") == 6 and cache.skipped("train") == [("train/c/1.jpg", "empty file")]
        assert cache.paths("test") == [f"test/c/{r}.jpg" for r in range(4)]
        assert cache.features("train").dtype == np.float16 and cache.feature_shape == (3,)
        assert cache.attrs["device"] == "CPU" and cache.timing("train")["seconds"] > 0


def test_old_parts_resume_into_the_old_cache_layout(tmp_path):
    # Today's code validates the old work directory's parts, writes the missing one and assembles: the file it
    # makes has the old layout, attribute for attribute (so the old reader reads it too).
    shutil.copytree(FORMAT_V1 / "resume.h5.partial", tmp_path / "resume.h5.partial")
    workdir = WorkDir(tmp_path / "resume.h5")
    missing = workdir.missing(workdir.plan())
    assert missing == [Part("test", 3, 4)]
    rng = np.random.default_rng(0)
    features = {"train": rng.normal(size=(7, 3)).astype(np.float32), "test": rng.normal(size=(4, 3)).astype(np.float32)}
    new_part = write_part(workdir.path, "k" * 64, part_data("test", 3, features["test"][3:4], [1]))
    old_part = FORMAT_V1 / "resume.h5.partial" / "test-0000000000-0000000003.h5"
    assert _layout(new_part, values=False) == _layout(old_part, values=False)  # other rows, the same format
    assert _layout(assemble(workdir)) == _layout(FORMAT_V1 / "cache.h5")
