"""featpipe.provenance: digests, versions and timestamps."""

from __future__ import annotations

import datetime
import hashlib

from featpipe.provenance import dir_digest, file_digest, key_digest, sha256_file, timestamp, versions


def test_file_digests(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
    assert file_digest(path) == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_dir_digest_covers_names_and_contents_in_any_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x", "sub/y"]), (b, ["sub/y", "x"])):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
    assert dir_digest(a) == dir_digest(b) and dir_digest(a).startswith("sha256:")
    (b / "x").write_text("changed")
    assert dir_digest(a) != dir_digest(b)
    (b / "x").write_text("x")
    (b / "x").rename(b / "z")
    assert dir_digest(a) != dir_digest(b)


def test_key_digest_ignores_key_order_but_not_values():
    assert key_digest({"a": 1, "b": [1, 2]}) == key_digest({"b": [1, 2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})
    assert len(key_digest({})) == 64


def test_versions_and_timestamp():
    import keras
    import tensorflow as tf

    import featpipe

    found = versions()
    assert found == {**found, "featpipe": featpipe.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__}
    assert set(found) == {"featpipe", "tensorflow", "keras", "keras_hub"}
    when = datetime.datetime.fromisoformat(timestamp())
    assert when.tzinfo is not None and when.microsecond == 0
