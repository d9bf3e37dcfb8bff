import errno
import re
import threading

import numpy as np
import pytest

from cache_fixtures import part_data
from featpipe import atomic
from featpipe import parts as parts_module
from featpipe import writer as writer_module
from featpipe.errors import FeatpipeError
from featpipe.parts import Part
from featpipe.writer import PartWriter


def _parts(n):
    return [part_data("train", 3 * i, np.full((3, 2), i, np.float32), [0, 1, 0]) for i in range(n)]


def test_parts_are_written_in_the_background_and_counted(tmp_path):
    writer = PartWriter(tmp_path, "k")
    for data in _parts(5):
        writer.put(data)
    writer.drain()
    assert sorted(p.name for p in tmp_path.iterdir()) == [Part("train", 3 * i, 3 * i + 3).file_name for i in range(5)]
    writer.close()
    assert writer.write_seconds > 0 and writer.wait_seconds >= 0


def test_the_queue_is_bounded_so_memory_is(tmp_path, monkeypatch):
    release, seen = threading.Event(), []

    def slow_write(directory, key, data):
        seen.append(data.part)
        release.wait(10)

    monkeypatch.setattr(writer_module, "write_part", slow_write)
    writer = PartWriter(tmp_path, "k", queue_size=2)
    parts = _parts(4)
    for data in parts[:3]:  # one being written, two waiting
        writer.put(data)
    blocked = threading.Thread(target=writer.put, args=(parts[3],))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # the fourth waits for room: at most queue_size + 1 parts in memory
    release.set()
    blocked.join(10)
    writer.close()
    assert seen == [p.part for p in parts]


def test_queued_parts_are_committed_on_close_after_an_interrupt(tmp_path):
    writer = PartWriter(tmp_path, "k")
    try:
        for data in _parts(2):
            writer.put(data)
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        writer.close()
    assert len(list(tmp_path.glob("train-*.h5"))) == 2


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "no space left on device writing"),
                                           (errno.EACCES, "permission denied writing")])
def test_a_write_error_reaches_the_forward_loop_as_one_line(tmp_path, monkeypatch, code, message):
    def failing(*args, **kwargs):
        raise OSError(code, "boom")

    monkeypatch.setattr(parts_module.h5py, "File", failing)  # inside write_part, the real atomic write
    writer = PartWriter(tmp_path, "k")
    writer.put(_parts(1)[0])
    part_file = re.escape(str(tmp_path / _parts(1)[0].part.file_name))
    with pytest.raises(FeatpipeError, match=f"^{message} {part_file}$"):
        writer.drain()
    with pytest.raises(FeatpipeError, match=message):
        writer.close()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_an_h5py_error_at_close_on_a_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    # h5py reports ENOSPC met while flushing at close as its own RuntimeError; the atomic helper knows it.
    real_file = parts_module.h5py.File

    class FullAtClose(real_file):
        def close(self):
            super().close()
            raise RuntimeError("Disable slist on flush dest failure")

    monkeypatch.setattr(parts_module.h5py, "File", FullAtClose)
    monkeypatch.setattr(atomic, "_is_disk_full", lambda directory: True)
    writer = PartWriter(tmp_path, "k")
    writer.put(_parts(1)[0])
    with pytest.raises(FeatpipeError, match="^no space left on device writing .*train-0000000000-0000000003.h5$"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
