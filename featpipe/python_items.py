"""Items that Python makes (windows of files read and checked, blocks of a cache on disk) as a tf.data dataset:
`python_items`, and `PassSource` for a reader that makes them in order, one pass at a time.

Not `tf.data.Dataset.from_generator`: TensorFlow 2.21 answers a process's first generator dataset with
mallopt(M_MMAP_THRESHOLD, 128 KB), for the whole process and for good. Every allocation over 128 KB then maps
fresh zeroed pages and unmaps them when freed: each image's bytes and each copy of them, about 11% of a large
JPEG's decode time in every later extraction or fine-tuning of that process. Here the dataset is
`indices.map(py_function)`: element k is handed over by Python's `item(k)`.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import tensorflow as tf


class PassSource:
    """Item `index` of the current pass, for a pipeline that asks for items 0 .. count - 1 in order, once per pass.

    `make_pass(start)` starts a pass at item `start`: an iterator over items start, start + 1, ... (each an
    array or a tuple of arrays). The iterator of a pass stays open across calls (it may read ahead); a call out
    of order (a new pass, or one abandoned and taken up again) starts a pass at its item, and the last item of a
    pass closes its iterator at once, not when the dataset is freed."""

    def __init__(self, make_pass: Callable[[int], Iterator[tuple]], count: int):
        self._make_pass, self.count = make_pass, count
        self._lock = threading.Lock()  # tf.data may call from a different thread each time
        self._items, self._next = None, 0

    def __call__(self, index: int):
        with self._lock:
            if self._items is None or index != self._next:
                self._close()
                self._items = self._make_pass(index)
            item = next(self._items)
            self._next = index + 1
            if self._next == self.count:
                self._close()
        return item

    def _close(self) -> None:
        if self._items is not None:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
        self._items = None


def python_items(item: Callable[[int], object], indices: tf.data.Dataset, signature) -> tf.data.Dataset:
    """`item(k)` for each index k of `indices` (a dataset of int64 scalars: `Dataset.range(n)`, or a shuffle of
    it), as a dataset of `signature` (a tf.TensorSpec or a tuple of them; the items arrays or tuples of arrays
    alike). `item` is called from tf.data's threads; a `PassSource` makes one of a reader that goes in order."""
    specs = tf.nest.flatten(signature)

    # Not converted by autograph: there is no Python control flow on tensors to convert.
    @tf.autograph.experimental.do_not_convert
    def element(index):
        arrays = tf.py_function(lambda k: tf.nest.flatten(item(int(k))), [index], [spec.dtype for spec in specs])
        return tf.nest.pack_sequence_as(signature, [tf.ensure_shape(a, s.shape) for a, s in zip(arrays, specs)])

    return indices.map(element)
