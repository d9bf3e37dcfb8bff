import time

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache_fixtures import part_data
from featpipe.parts import (PART_MAX_ROWS, Part, check_part, part_rows_for, plan_parts, shard_owners, shard_parts,
                            write_part)


def test_part_names_round_trip_and_ignore_other_files():
    part = Part("validation", 4096, 8192)
    assert part.file_name == "validation-0000004096-0000008192.h5" and part.rows == 4096
    assert Part.from_file_name(part.file_name) == part
    assert str(part) == "validation rows 4096-8191"
    for other in ("manifest.json", "train-12.h5", "train-0000000000-0000000010.h5.tmp-12-ab", "x-a-b.h5"):
        assert Part.from_file_name(other) is None


def test_part_size_is_bounded_by_rows_bytes_and_worker_share():
    assert part_rows_for(row_bytes=1024, largest_split=10**6) == PART_MAX_ROWS
    assert part_rows_for(row_bytes=10 * 7 * 7 * 2048 * 4, largest_split=10**6) == 16  # 64 MiB of spatial maps
    assert part_rows_for(row_bytes=1024, largest_split=1000, workers=2) == 125       # a few parts per worker
    assert part_rows_for(row_bytes=1 << 30, largest_split=5) == 1


def test_plan_covers_every_row_once_in_order():
    plan = plan_parts({"train": 10, "test": 3}, 4)
    assert plan == [Part("train", 0, 4), Part("train", 4, 8), Part("train", 8, 10), Part("test", 0, 3)]


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40), st.integers(1, 12))
def test_shards_partition_the_plan_into_contiguous_balanced_slices(sizes, n):
    parts, at = [], 0
    for size in sizes:
        parts.append(Part("train", at, at + size))
        at += size
    slices = [shard_parts(parts, k, n) for k in range(n)]
    assert [p for s in slices for p in s] == parts  # each part once, in order: slices are contiguous
    share = at / n
    for s in slices:  # within one part of an equal share
        assert abs(sum(p.rows for p in s) - share) <= max(sizes)


def test_written_part_reads_back_and_is_validated(tmp_path):
    data = part_data("train", 10, np.ones((5, 3), np.float32), [0, 1, 0, 1, 0], skip={12})
    path = write_part(tmp_path, "key", data)
    assert path.name == "train-0000000010-0000000015.h5" and [p.name for p in tmp_path.iterdir()] == [path.name]
    with h5py.File(path) as f:
        assert f["rows"][()].tolist() == [10, 11, 13, 14] and f["skipped_rows"][()].tolist() == [12]
        assert f["paths"].asstr()[()].tolist() == ["train/c/10.jpg", "train/c/11.jpg", "train/c/13.jpg",
                                                   "train/c/14.jpg"]
        assert f.attrs["seconds"] == 0.5
    assert check_part(path, data.part, "key") is None
    assert check_part(path, data.part, "other") == "it belongs to another extraction"
    assert check_part(path, Part("train", 10, 16), "key") == "its rows do not cover its range in order"


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_a_truncated_part_is_reported_not_raised(tmp_path, cut):
    data = part_data("train", 0, np.ones((4, 3), np.float32), [0, 1, 0, 1])
    path = write_part(tmp_path, "key", data)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut) if isinstance(cut, float) else cut])
    assert check_part(path, data.part, "key").startswith("it cannot be read")


def test_shard_owners_are_arithmetic_whatever_n():
    parts = [Part("train", a, a + 5) for a in range(0, 50, 5)]
    assert shard_owners(parts, 2) == [0] * 5 + [1] * 5
    start = time.perf_counter()
    assert shard_owners(parts, 10**20)[0] == 5 * 10**18  # a 20-digit N: one pass over the parts
    assert time.perf_counter() - start < 1


def test_a_part_whose_every_image_was_skipped_is_sound(tmp_path):
    data = part_data("train", 0, np.ones((2, 3), np.float32), [0, 1], skip={0, 1})
    data.features = np.zeros((0,), np.float32)  # what the extraction hands over when no row decoded
    assert check_part(write_part(tmp_path, "key", data), data.part, "key", classes=2) is None
