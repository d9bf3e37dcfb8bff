"""An input pipeline that runs ahead at a lower OS priority than the model it feeds.

On a CPU, a base's forward pass and the pipeline decoding its next batch share the cores. At the same priority
their threads contend: each of the forward's ops waits for the scheduler to take a core back from a decoding
thread, and the forward slows by about what the overlap gains (measured: 2% fewer images/s to 5% more). When the
pipeline's threads run a few nice steps lower, the forward's threads take a core back at once, and decoding gets
the moments the forward leaves idle: every core stays busy (measured on 2 cores, 8 and 6 paired runs: 11-12% more
images/s than decoding and the base taking turns, both where decoding and where the base dominates).

Linux gives every thread its own nice value, which the threads it starts inherit; tf.data starts its threads
when the first element is asked for. So the first element is taken in a thread that lowered its own priority,
and every thread the pipeline starts from it (tf.data's, and the reading threads its generator starts) runs
lower. The caller's threads keep theirs. Elsewhere, or where a sandbox forbids it, the pipeline runs at the
caller's priority.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Iterable, Iterator

# Nice steps below the caller. Not the lowest (19): when other processes keep the same cores busy, the scheduler
# gives nice-19 threads almost nothing; beside two busy threads on 2 cores, extraction fell to a fifth of the rate
# it had taking turns, and at 10 it kept that rate.
NICE_STEPS = 10
MAX_NICE = 19
_NONE = object()  # what the first element is when there is none


def lowers_priority() -> bool:
    """Whether this platform gives threads their own priority (Linux): elsewhere `iterate_below` cannot lower it."""
    return sys.platform.startswith("linux")


def iterate_below(iterable: Iterable, steps: int = NICE_STEPS) -> Iterator:
    """An iterator over `iterable` (a tf.data dataset) whose first element is taken in a thread running `steps`
    nice values below the calling thread (at most 19), so that the threads the dataset starts then run there;
    then the rest, taken by the caller. An error taking the first element is raised here."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="featpipe-pipeline-start")
    try:
        first, rest = pool.submit(_start, iterable, steps).result()
    finally:
        pool.shutdown(wait=False)  # an interrupt while waiting is not held up by the first element
    return rest if first is _NONE else chain([first], rest)


def _start(iterable: Iterable, steps: int) -> tuple:
    if lowers_priority():
        _lower_this_thread(steps)
    iterator = iter(iterable)
    return next(iterator, _NONE), iterator


def _lower_this_thread(steps: int) -> None:
    me = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, me, min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, me) + steps))
    except OSError:  # a sandbox that forbids it (seccomp): the pipeline runs at the caller's priority, as elsewhere
        pass
