"""Incremental extraction: every way a dataset changes, the new cache equals a from-scratch extraction of the
new state, and only new or changed images go through the base."""

import json
import logging
import shutil

import h5py
import numpy as np
import pytest

from conftest import CLASS_COLOURS, make_dataset, make_image
from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe import extraction
from featpipe.distribute import LocalEngine
from featpipe.extraction import extract, extract_shard, merge
from featpipe.reuse import INDEX_PREFIX, Reuse, build_index, model_key
from featpipe.store import FeatureCache


@pytest.fixture
def base(tiny_model_file):
    return load_backbone(tiny_model_file)


@pytest.fixture
def first(tmp_path, base):
    """A dataset and its first extraction into tmp_path/cache."""
    root = make_dataset(tmp_path / "data")
    result = extract(load_image_folder(root), base, tmp_path / "cache", batch_size=4, progress=False)
    return root, result


def again(root, base, cache_dir, **kwargs):
    return extract(load_image_folder(root, val_fraction=kwargs.pop("val_fraction", None)), base, cache_dir,
                   batch_size=4, progress=False, **kwargs)


def computed(result) -> dict:
    return result.summary()["computed"]


def assert_same_as_from_scratch(result, root, base, tmp_path, val_fraction=None):
    """The cache equals a fresh extraction of the dataset's state: paths, labels, skipped and row order
    exactly, features to float tolerance; and its digests are the images' own."""
    scratch = extract(load_image_folder(root, val_fraction=val_fraction), base, tmp_path / "scratch", batch_size=4,
                      progress=False, reuse=False)
    assert result.key == scratch.key
    with FeatureCache(result.path) as new, FeatureCache(scratch.path) as old:
        assert new.splits == old.splits
        for split in new.splits:
            assert new.paths(split) == old.paths(split)
            np.testing.assert_array_equal(new.labels(split), old.labels(split))
            assert new.skipped(split) == old.skipped(split)
            np.testing.assert_allclose(new.features(split), old.features(split), rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(new.digests(split), old.digests(split))
    shutil.rmtree(tmp_path / "scratch")


def test_a_cache_keeps_each_rows_digest_and_origin(first):
    root, result = first
    with FeatureCache(result.path) as cache:
        import hashlib

        paths, digests = cache.paths("train"), cache.digests("train")
        assert [hashlib.sha256((root / p).read_bytes()).digest() for p in paths] == [d.tobytes() for d in digests]
        assert cache.origin("train") == {"computed": 12, "reused": {}}
    assert computed(result) == {"train": 12, "validation": 6, "test": 6}


def test_added_images_are_the_only_ones_computed(first, base, tmp_path, caplog):
    root, result = first
    for i in range(2):
        make_image(root / "train" / "cat" / f"new.{i}.png", CLASS_COLOURS["cat"], seed=100 + i)
    grown = again(root, base, tmp_path / "cache")
    assert grown.key != result.key and not grown.cached
    assert computed(grown) == {"train": 2, "validation": 0, "test": 0}
    assert grown.summary()["reused"] == {"train": 12, "validation": 6, "test": 6}
    with FeatureCache(grown.path) as new, FeatureCache(result.path) as old:
        # Reused rows are the old rows, bit for bit.
        new_paths, old_paths = new.paths("train"), old.paths("train")
        for i, path in enumerate(old_paths):
            np.testing.assert_array_equal(new.features("train")[new_paths.index(path)], old.features("train")[i])
        assert new.origin("train") == {"computed": 2, "reused": {result.path.name: 12}}
    assert_same_as_from_scratch(grown, root, base, tmp_path)


def test_removed_images_and_a_moved_folder_compute_nothing(first, base, tmp_path, monkeypatch):
    root, _ = first
    (root / "train" / "dog" / "dog.2.png").unlink()
    (root / "test" / "cat" / "cat.0.jpg").unlink()
    shrunk = again(root, base, tmp_path / "cache")
    assert computed(shrunk) == {"train": 0, "validation": 0, "test": 0}
    assert_same_as_from_scratch(shrunk, root, base, tmp_path)
    moved = shutil.move(root, tmp_path / "elsewhere" / "renamed")

    def no_model(*_):
        raise AssertionError("the feature model was built, though every image is known")

    with monkeypatch.context() as patch:
        patch.setattr(extraction, "inference_forward", no_model)
        result = again(moved, base, tmp_path / "cache")
    assert computed(result) == {"train": 0, "validation": 0, "test": 0} and result.rows == shrunk.rows
    assert_same_as_from_scratch(result, moved, base, tmp_path)


def test_an_image_changed_in_place_is_computed_again(first, base, tmp_path):
    root, _ = first
    make_image(root / "train" / "cat" / "cat.0.jpg", CLASS_COLOURS["dog"], seed=999)  # same name, new bytes
    result = again(root, base, tmp_path / "cache")
    assert computed(result) == {"train": 1, "validation": 0, "test": 0}
    assert_same_as_from_scratch(result, root, base, tmp_path)


def test_images_moved_between_classes_and_splits_are_reused_with_their_new_label(first, base, tmp_path):
    root, _ = first
    (root / "train" / "cat" / "cat.1.png").rename(root / "train" / "dog" / "was-cat.png")
    (root / "validation" / "dog" / "dog.0.jpg").rename(root / "test" / "cat" / "moved.jpg")
    result = again(root, base, tmp_path / "cache")
    assert computed(result) == {"train": 0, "validation": 0, "test": 0}
    with FeatureCache(result.path) as cache:
        paths = cache.paths("train")
        assert cache.labels("train")[paths.index("train/dog/was-cat.png")] == cache.classes.index("dog")
        assert "test/cat/moved.jpg" in cache.paths("test")
    assert_same_as_from_scratch(result, root, base, tmp_path)


def test_recarving_validation_reuses_every_row(tmp_path, base):
    root = make_dataset(tmp_path / "data", per_split={"train": 8, "test": 2})
    extract(load_image_folder(root, val_fraction=0.25), base, tmp_path / "cache", batch_size=4, progress=False)
    result = again(root, base, tmp_path / "cache", val_fraction=0.5)
    assert result.rows["validation"] == 8
    assert computed(result) == {"train": 0, "validation": 0, "test": 0}
    assert_same_as_from_scratch(result, root, base, tmp_path, val_fraction=0.5)


def test_no_reuse_computes_everything(first, base, tmp_path):
    root, _ = first
    make_image(root / "train" / "cat" / "new.png", CLASS_COLOURS["cat"], seed=7)
    result = again(root, base, tmp_path / "cache", reuse=False)
    assert computed(result) == {"train": 13, "validation": 6, "test": 6}
    assert result.summary()["reused"] == {"train": 0, "validation": 0, "test": 0}


def test_a_damaged_source_is_refused_warned_and_its_rows_computed(first, base, tmp_path, caplog):
    root, result = first
    with h5py.File(result.path) as f:
        offset = f["train/features"].id.get_chunk_info(0).byte_offset
    data = bytearray(result.path.read_bytes())
    data[offset + 5] ^= 0x01  # a flipped bit in the train features: the chunk checksum fails on the copy
    result.path.write_bytes(bytes(data))
    make_image(root / "train" / "cat" / "new.png", CLASS_COLOURS["cat"], seed=7)
    with caplog.at_level(logging.WARNING):
        grown = again(root, base, tmp_path / "cache")
    assert f"not reusing rows of {result.path}" in caplog.text and "damaged" in caplog.text
    # The damaged source is refused for the whole run: every row is computed.
    assert computed(grown) == {"train": 13, "validation": 6, "test": 6}
    assert_same_as_from_scratch(grown, root, base, tmp_path)


def test_a_source_whose_rows_no_longer_match_the_index_is_refused(first, base, tmp_path, caplog):
    root, result = first
    index = build_index(tmp_path / "cache", result_facts(result))
    reuse = Reuse(index)
    with FeatureCache(result.path) as cache:
        wanted = cache.digests("train")[1].tobytes()
    # A stale index entry: rewrite the source's digests after indexing.
    with h5py.File(result.path, "r+") as f:
        f["train/digests"][1] = np.ones(32, np.uint8)
    with caplog.at_level(logging.WARNING):
        found, _ = reuse.copy([reuse.find(wanted)], [wanted])
    assert found == [None] and "no longer hold" in caplog.text
    assert reuse.find(wanted) is None  # refused for the rest of the run
    reuse.close()


def result_facts(result) -> dict:
    with FeatureCache(result.path) as cache:
        return cache.facts


def test_a_source_of_other_library_versions_is_never_reused(first, base, tmp_path, caplog):
    root, result = first
    other = tmp_path / "other" / "other-versions.h5"
    other.parent.mkdir()
    shutil.move(result.path, other)
    with h5py.File(other, "r+") as f:
        facts = json.loads(f.attrs["facts"])
        facts["versions"]["tensorflow"] = "0.0.1"
        f.attrs["facts"] = json.dumps(facts)
    assert model_key(facts) != model_key(result_facts(again(root, base, tmp_path / "probe", reuse=False)))
    make_image(root / "train" / "cat" / "new.png", CLASS_COLOURS["cat"], seed=7)
    with caplog.at_level(logging.WARNING):
        grown = again(root, base, tmp_path / "cache", reuse_from=[other])
    assert computed(grown) == {"train": 13, "validation": 6, "test": 6}
    assert "another base, options or library versions" in caplog.text


def test_reuse_names_a_cache_outside_the_cache_dir(first, base, tmp_path):
    root, result = first
    elsewhere = tmp_path / "shared" / result.path.name
    elsewhere.parent.mkdir()
    shutil.move(result.path, elsewhere)
    make_image(root / "train" / "dog" / "new.png", CLASS_COLOURS["dog"], seed=8)
    grown = again(root, base, tmp_path / "cache", reuse_from=[elsewhere])
    assert computed(grown) == {"train": 1, "validation": 0, "test": 0}


def test_the_index_is_rebuilt_when_the_caches_change(first, base, tmp_path):
    root, result = first
    cache_dir = tmp_path / "cache"
    index = build_index(cache_dir, result_facts(result))
    assert index.name.startswith(INDEX_PREFIX) and build_index(cache_dir, result_facts(result)) == index
    stamp = index.stat().st_mtime_ns
    assert build_index(cache_dir, result_facts(result)).stat().st_mtime_ns == stamp  # unchanged: kept
    make_image(root / "train" / "cat" / "new.png", CLASS_COLOURS["cat"], seed=7)
    grown = again(root, base, cache_dir)
    build_index(cache_dir, result_facts(grown))
    assert len(Reuse(index)._entry) == 25 and not Reuse(index).empty  # both caches' digests, each once
    assert Reuse(None).empty  # nothing to copy: the run builds its base at once
    index.write_bytes(b"garbage")  # an unreadable index is rebuilt, never trusted
    assert Reuse(index).empty
    assert len(Reuse(build_index(cache_dir, result_facts(grown)))._entry) == 25


def test_shards_reuse_like_one_process(first, base, tmp_path):
    root, _ = first
    make_image(root / "train" / "cat" / "new.png", CLASS_COLOURS["cat"], seed=7)
    data = load_image_folder(root)
    for k in (1, 0):
        extract_shard(data, base, tmp_path / "cache", shard=(k, 2), batch_size=4, progress=False, part_rows=5)
    result = merge(extract_shard(data, base, tmp_path / "cache", shard=(0, 2), progress=False).path)
    assert computed(result) == {"train": 1, "validation": 0, "test": 0}
    assert_same_as_from_scratch(result, root, base, tmp_path)


@pytest.mark.slow
def test_worker_processes_reuse_like_one_process(first, base, tmp_path):
    root, _ = first
    make_image(root / "validation" / "dog" / "new.png", CLASS_COLOURS["dog"], seed=9)
    result = extract(load_image_folder(root), base, tmp_path / "cache", batch_size=4, progress=False,
                     part_rows=5, engine=LocalEngine([None, None]))
    assert computed(result) == {"train": 0, "validation": 1, "test": 0}
    assert_same_as_from_scratch(result, root, base, tmp_path)
