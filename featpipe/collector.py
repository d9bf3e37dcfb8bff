"""How a featpipe command's or worker's process uses Python's cycle collector: less often, and not at exit.

Importing TensorFlow, Keras and scikit-learn makes millions of objects, and at the default thresholds the
collector walked them again and again as they grew (7 full passes): the import took 8.1-8.9 s on a 2-core AMD
EPYC against 6.8-7.7 s with a first threshold of 10,000 instead of 700 (3 paired runs; no full pass then). Cycles
of garbage are still collected, a little later.

And when Python shuts down it runs the collector over every object still alive: 1.7-2.2 s at the end of every
command that imported them (`featpipe extract` of a small dataset, fresh and on the cache it had written, 3 runs
each), against 0.15-0.23 s when the objects alive at exit had first been moved to the collector's permanent
generation (`gc.freeze`), which it never walks. That is done by the last exit handler: every other one still runs
before it (files, HDF5, Ray and worker pools close as before) and modules are still torn down, their objects
released by reference counting; only cycles left alive at the very end are not collected, and the process's end
frees their memory.
"""

from __future__ import annotations

import atexit
import gc

# Allocations between two collections of the youngest generation (Python's default: 700).
YOUNG_THRESHOLD = 10_000


def collect_for_a_command() -> None:
    """This process's collector as a command's or worker's: the youngest generation collected every
    YOUNG_THRESHOLD allocations, and the objects alive at exit frozen after every other exit handler. Call it
    before the libraries are imported; calling it again changes nothing but the place of the one exit handler
    (exit handlers run last registered first, so it moves before handlers registered in between)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
