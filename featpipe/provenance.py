"""Where results come from: content digests, the digest of a key's facts, library versions, timestamps.

Cache keys, run keys and recorded weights all go through these, so two equal things always get one digest.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file (how weights files are identified)."""
    return "sha256:" + sha256_file(path)


def dir_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` over every file below a folder: relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).rglob("*")):
        if file.is_file():
            digest.update(f"{file.relative_to(path)}:{file_digest(file)}\n".encode())
    return "sha256:" + digest.hexdigest()


def key_digest(facts: dict) -> str:
    """The hex SHA-256 of a dict of facts, independent of key order (cache keys and run keys)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict:
    """The versions that can change results, recorded with every cache and run."""
    # Imported here: TensorFlow is loaded anyway by whoever records results, but not by this module's users.
    import keras
    import tensorflow as tf

    import featpipe

    # keras-hub's version from its metadata: importing it costs ~1 s when the base is not a hub preset.
    return {"featpipe": featpipe.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_hub": importlib.metadata.version("keras-hub")}


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
