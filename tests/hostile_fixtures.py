"""Hostile inputs generated on the fly: a small full disk, decompression bombs, poisoned pickles."""

from __future__ import annotations

import os
import subprocess
import zlib
import struct
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system of `directory` up to `leave` free bytes."""
    with open(directory / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to flush on close
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    if leave:
        size = (directory / "filler").stat().st_size
        os.truncate(directory / "filler", max(size - leave, 0))


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid PNG header claiming width x height grey pixels over a few KB of deflated zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compressobj(9)
    body = b"".join(rows.compress(b"\0" * (width + 1)) for _ in range(min(height, 200))) + rows.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


class Evil:
    """Unpickling this creates `marker`: what a swapped model.joblib could do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
