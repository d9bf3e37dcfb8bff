"""One extraction worker: rebuild the extraction from its job (plain JSON) and extract the given parts.

The same function serves every distributor: a local worker process per GPU or CPU slot
(``python -m featpipe.worker`` with the job on stdin, see featpipe.distribute) and a cluster engine's actor,
which calls `run_job` in its own process. A worker refuses to run if what it rebuilds has another key than the
job's (the dataset or the base changed since the run was planned): it never writes parts of another cache.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from featpipe.collector import collect_for_a_command
from featpipe.errors import FeatpipeError
from featpipe.tf_env import prefer_onednn

if TYPE_CHECKING:
    from featpipe.parts import Part

EXIT_ERROR, EXIT_TERMINATED = 1, 143
M_ARENA_MAX = -8  # glibc's mallopt parameter number
PR_SET_PDEATHSIG = 1  # Linux prctl option


def run_job(job: dict, parts: list[Part], *, threads: int | None = None, progress: bool = False,
            ready=None) -> dict:
    """Extract `parts` of the extraction `job` describes (Extraction.to_json()); returns the writer's figures.

    The worker's own start-up (loading the dataset listing and the base) is counted in its first part.
    `ready()`, if given, is called once the extraction is loaded, just before the first part starts.
    """
    from featpipe.extraction import run_parts

    start = time.perf_counter()
    extraction = load_job(job, threads=threads)
    if ready:
        ready()
    return run_parts(extraction, parts, progress=progress, threads=threads,
                     setup_seconds=time.perf_counter() - start)


def load_job(job: dict, *, threads: int | None = None):
    """This process kept to `threads` cores, then the Extraction `job` describes, rebuilt (Extraction.from_json).

    Long-lived workers (a Ray actor) call it once and then run many parts with featpipe.extraction.run_parts.
    A worker that imports TensorFlow here takes the CPU kernels the command does (featpipe.tf_env).
    """
    prefer_onednn()
    import tensorflow as tf

    from featpipe.extraction import Extraction

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return Extraction.from_json(job)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas in an extraction process (a no-op without glibc).

    tf.data's threads, TensorFlow's and the part writer each get an arena by default; their fragmentation made
    peak RSS grow with the length of a run (bench/bench_scale.py: +150 MB from 10k to 100k images; flat with
    two arenas, at the same speed). Call it before TensorFlow starts its threads.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def _terminate_with_parent() -> None:
    """Workers run in their own session (featpipe.distribute), out of reach of a terminal's hang-up: the
    kernel sends this one SIGTERM when its parent dies, so it never outlives the extraction (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds through run_parts, which commits the finished parts


def main() -> None:
    """``python -m featpipe.worker``: a JSON object {"job", "parts", "threads"} on stdin.

    Until its parts start, a worker has nothing to commit: SIGTERM keeps its default action and ends it at
    once, even inside TensorFlow's import or the model's loading (which hold off Python signal handlers).
    From the first part on, SIGTERM unwinds like Ctrl-C, so finished parts are written before it exits.
    """
    limit_malloc_arenas()
    collect_for_a_command()  # it imports TensorFlow, and the command waits for it to end (featpipe.collector)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _terminate_with_parent()  # first: a parent that dies before this call leaves the worker running
    from featpipe.parts import Part  # numpy and h5py: 0.3 s of import, after the call above

    request = json.load(sys.stdin)
    if request.get("parent") not in (None, os.getppid()):
        sys.exit(EXIT_TERMINATED)  # the parent died before the kernel could be told to end this worker with it
    parts = [Part(*p) for p in request["parts"]]
    try:
        run_job(request["job"], parts, threads=request.get("threads"), progress=request.get("progress", False),
                ready=lambda: signal.signal(signal.SIGTERM, _terminate))
    except FeatpipeError as e:
        print(f"featpipe: error: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        print("featpipe: worker interrupted; finished parts are kept", file=sys.stderr)
        sys.exit(EXIT_TERMINATED)


if __name__ == "__main__":
    main()
