"""The background part writer: the forward pass hands finished parts to a thread and goes on computing.

The queue is bounded, so at most `queue_size` parts wait in memory; if the disk is slower than the model the
forward loop waits, and that wait is measured. A write error stops the writer and is raised in the forward
loop at its next hand-over (a full disk is one line, composed by featpipe.atomic).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from featpipe.parts import PartData, write_part


class PartWriter:
    def __init__(self, directory: Path, key: str, queue_size: int = 2):
        self.directory, self.key = directory, key
        self.write_seconds = 0.0  # time the thread spent writing
        self.wait_seconds = 0.0   # time the forward loop spent waiting for it
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="featpipe-part-writer", daemon=True)
        self._thread.start()

    def put(self, data: PartData) -> None:
        """Queue a finished part (blocks while the queue is full)."""
        self._raise_error()
        start = time.perf_counter()
        self._queue.put(data)
        self.wait_seconds += time.perf_counter() - start

    def drain(self) -> None:
        """Wait until every queued part is on disk; the wait counts as forward-loop time lost to writing."""
        start = time.perf_counter()
        self._queue.join()
        self.wait_seconds += time.perf_counter() - start
        self._raise_error()

    def close(self) -> None:
        """Write what is queued (also on an interrupt: finished parts are committed), then stop the thread."""
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            try:
                if data is None:
                    return
                if self._error is None:  # after an error, drop the rest: the run is failing anyway
                    start = time.perf_counter()
                    write_part(self.directory, self.key, data)
                    self.write_seconds += time.perf_counter() - start
            except BaseException as e:  # noqa: BLE001 - re-raised in the forward loop
                self._error = e
            finally:
                self._queue.task_done()

    def _raise_error(self) -> None:
        # write_part's errors are already one line ("no space left on device writing <part file>").
        if self._error is not None:
            raise self._error
