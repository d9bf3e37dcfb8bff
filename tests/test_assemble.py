import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from cache_fixtures import manifest, part_data
from featpipe.assemble import assemble
from featpipe.errors import FeatpipeError
from featpipe.parts import write_part
from featpipe import store
from featpipe.store import FeatureCache
from featpipe.workdir import WorkDir


def _workdir(tmp_path, rows=10, part_rows=3, shards=None, skip=(), write=None):
    workdir = WorkDir(tmp_path / "c.h5")
    workdir.open(manifest("k", {"train": rows, "test": 2}, part_rows, {"classes": ["a", "b"], "facts": {}},
                          dtype="float16", compression="gzip", shards=shards))
    features = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    for part in workdir.plan():
        if write is None or part in write:
            source = features if part.split == "train" else features[:2]
            write_part(workdir.path, "k", part_data(part.split, part.start, source[part.start:part.stop],
                                                    np.arange(part.start, part.stop) % 2, skip=skip))
    return workdir, features


def test_parts_merge_into_one_self_contained_file(tmp_path):
    workdir, features = _workdir(tmp_path, skip={4})
    final = assemble(workdir)
    assert final == tmp_path / "c.h5" and not workdir.path.exists() and not workdir.lock_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
    with FeatureCache(final) as cache:
        keep = [0, 1, 2, 3, 5, 6, 7, 8, 9]
        np.testing.assert_array_equal(cache.features("train"), features[keep].astype(np.float16))
        assert cache.labels("train").tolist() == [r % 2 for r in keep]
        assert cache.paths("train") == [f"train/c/{r}.jpg" for r in keep]
        assert cache.skipped("train") == [("train/c/4.jpg", "empty file")]
        assert cache.timing("train")["seconds"] >= 4 * 0.5  # four parts of 0.5 s, plus the assembly
        assert cache.splits == ["train", "test"] and cache.n_rows("test") == 2
    with h5py.File(final) as f:
        assert f["train/features"].compression == "gzip" and not list(f["train"].attrs.keys() - {"seconds"})


def test_a_missing_part_is_a_clear_error_naming_its_shard(tmp_path):
    workdir, _ = _workdir(tmp_path, shards=2)
    workdir.part_path(workdir.plan()[1]).unlink()
    with pytest.raises(FeatpipeError, match=r"1 part missing: train rows 3-5 \(shard 0/2\)"):
        assemble(workdir)
    assert not (tmp_path / "c.h5").exists() and workdir.path.is_dir()


def test_an_unusable_part_is_found_before_anything_is_written(tmp_path):
    workdir, _ = _workdir(tmp_path)
    workdir.part_path(workdir.plan()[0]).write_bytes(b"garbage")
    with pytest.raises(FeatpipeError, match="1 part missing: train rows 0-2"):
        assemble(workdir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.partial"]


ASSEMBLE_UNDER_A_LOW_FILE_LIMIT = textwrap.dedent("""
    import resource, sys
    from featpipe.assemble import assemble
    from featpipe.workdir import WorkDir
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[2])))
    assemble(WorkDir(sys.argv[1]))
""")


@pytest.mark.slow
def test_more_parts_than_the_open_file_limit(tmp_path):
    workdir, features = _workdir(tmp_path, rows=300, part_rows=1)
    assert len(workdir.plan()) == 302  # 300 train parts + 2 test parts
    done = subprocess.run([sys.executable, "-c", ASSEMBLE_UNDER_A_LOW_FILE_LIMIT, str(workdir.final_path), "64"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with FeatureCache(workdir.final_path) as cache:
        np.testing.assert_array_equal(cache.features("train"), features.astype(np.float16))


def test_a_part_with_out_of_range_labels_is_redone_not_merged(tmp_path):
    workdir, _ = _workdir(tmp_path)
    bad = workdir.plan()[1]
    write_part(workdir.path, "k", part_data("train", 3, np.ones((3, 2), np.float32), [0, 5, 1]))
    with pytest.raises(FeatpipeError, match="1 part missing: train rows 3-5"):
        assemble(workdir)
    assert not workdir.part_path(bad).exists() and not (tmp_path / "c.h5").exists()
    assert len(list(workdir.path.glob("*.h5"))) == len(workdir.plan()) - 1  # every other part is kept


def test_a_part_with_non_finite_features_is_removed_and_the_rest_kept(tmp_path):
    workdir, _ = _workdir(tmp_path)
    features = np.ones((3, 2), np.float32)
    features[1, 0] = np.nan
    write_part(workdir.path, "k", part_data("train", 3, features, [0, 1, 1]))
    with pytest.raises(FeatpipeError, match=r"part file of train rows 3-5 was removed: 1 of its 3 rows have "
                                            r"non-finite features"):
        assemble(workdir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.partial"]
    assert len(list(workdir.path.glob("*.h5"))) == len(workdir.plan()) - 1


def test_float16_overflow_at_the_merge_is_refused(tmp_path):
    workdir, _ = _workdir(tmp_path)  # a float16 cache: 1e6 does not fit
    write_part(workdir.path, "k", part_data("train", 0, np.full((3, 2), 1e6, np.float32), [0, 1, 0]))
    with pytest.raises(FeatpipeError, match="3 of its 3 rows have non-finite features"):
        assemble(workdir)


def test_the_merged_file_is_checked_before_the_parts_are_removed(tmp_path, monkeypatch):
    workdir, _ = _workdir(tmp_path)
    parts = sorted(p.name for p in workdir.path.iterdir())
    finish = store.finish_split

    def finish_badly(group, *args):  # a merge gone wrong: a label no class has
        finish(group, *args)
        group[store.LABELS][0] = 9

    monkeypatch.setattr(store, "finish_split", finish_badly)
    with pytest.raises(FeatpipeError, match=r"the assembled cache failed its check \(.*labels outside.*\); nothing was "
                                            r"removed: the parts are still in"):
        assemble(workdir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.partial"]
    assert sorted(p.name for p in workdir.path.iterdir()) == parts
