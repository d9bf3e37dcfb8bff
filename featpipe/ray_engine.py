"""The Ray distributor: the parts of an extraction run on a Ray cluster, one actor per GPU (or per few cores).

Ray core actors, not Ray Data: featpipe's unit of work is already a part that a worker turns into a file on the
shared filesystem, so no data has to stream through Ray, only part names in and small figures out. An actor
loads the base once (and traces its forward call once), then extracts part after part; the driver hands one
part at a time to each idle actor, so fast and slow nodes balance themselves. A part whose actor dies (node
lost, OOM, `ray.kill`) or whose task raises is retried on a fresh actor up to `max_attempts` times, then named
in the error; the other parts are kept and a rerun does only what is missing. Ray's ActorPool is not used: it
hands the next task to an actor that has died.

`import ray` happens only when an engine connects: the base install never needs Ray.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass

from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.parts import Part
from featpipe.progress import Progress
from featpipe.workdir import WorkDir

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# CPU actors: TensorFlow's CPU kernels and the tf.data decoders scale well to a few cores per process; more
# processes of a few cores each beat one process with every core of a large node.
CPU_ACTOR_CPUS = 4
INSTALL_HINT = 'pip install "featpipe[ray]"'
NICENESS = "RAY_worker_niceness"
# Ray retries a cluster that does not answer for minutes, deaf to Ctrl-C; featpipe first checks, within this
# deadline, that something listens at the address and that it is a Ray cluster (a connection in a child process,
# stopped at the deadline).
CONNECT_TIMEOUT_ENV = "FEATPIPE_RAY_CONNECT_TIMEOUT"
CONNECT_TIMEOUT = 45.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise ArgumentError(f"{{engine}} ray needs Ray, which is not installed: {INSTALL_HINT}", "engine") from None
    return ray


@dataclass(frozen=True)
class ActorShape:
    """How many extraction actors the cluster holds at once, and what each one reserves."""

    count: int
    num_cpus: int
    num_gpus: int

    def describe(self) -> str:
        kind = "GPU" if self.num_gpus else "CPU"
        return f"Ray: {self.count} {kind} actor{'s' * (self.count != 1)} of {self.num_cpus} CPU" + (
            " + 1 GPU" if self.num_gpus else "")


def plan_actors(nodes: list[dict], cpus_per_actor: int | None = None) -> ActorShape:
    """Actors for the alive nodes' resources (Ray's resource dicts): one per GPU, each with its share of its
    node's CPUs for decoding; on a cluster without GPUs, CPU actors of `cpus_per_actor` cores (default: up to
    CPU_ACTOR_CPUS) packed onto the nodes, so that their threads never oversubscribe a node."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
    if gpu_nodes:
        count = sum(int(n["GPU"]) for n in gpu_nodes)
        return ActorShape(count, min(int(n.get("CPU", 0)) // int(n["GPU"]) for n in gpu_nodes), 1)
    cpus = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpus:
        raise FeatpipeError("the Ray cluster has no node with a CPU or a GPU for extraction actors")
    size = cpus_per_actor or min(CPU_ACTOR_CPUS, max(cpus))
    count = sum(c // size for c in cpus)
    if count == 0:
        raise FeatpipeError(f"no node of the Ray cluster has {size} CPUs for an extraction actor "
                            f"(largest: {max(cpus)})")
    return ActorShape(count, size, 0)


class PartExtractor:
    """One actor's state: the extraction rebuilt from its job once, then `run` part after part.

    A GPU actor sees only its own GPU (Ray sets CUDA_VISIBLE_DEVICES for num_gpus=1, and no other actor gets
    it); a CPU actor hides any GPU of its node from TensorFlow and keeps to its `threads`.
    """

    def __init__(self, job: dict, threads: int | None, gpu: bool):
        if not gpu:
            from featpipe import runtime

            runtime.hide_gpus()
        from featpipe.extraction import forward_of
        from featpipe.reuse import Reuse
        from featpipe.worker import load_job

        self.threads = threads
        self.error: FeatpipeError | None = None
        try:
            self.extraction = load_job(job, threads=threads)
            self.forward = forward_of(self.extraction)
            self.reuse = Reuse(self.extraction.reuse_index)  # the index, loaded once per actor
        except FeatpipeError as e:  # the same for every actor: raised by `run`, where the driver stops on it
            self.error = e

    def run(self, part: Part) -> dict:
        from featpipe.extraction import run_parts

        if self.error is not None:
            raise self.error
        return run_parts(self.extraction, [part], progress=False, threads=self.threads, forward=self.forward,
                         reuse=self.reuse)


class RayEngine:
    """Runs the missing parts of an extraction on a Ray cluster (featpipe.extraction.extract(engine=...); the
    interface is featpipe.extraction.InProcessEngine's).

    `address`: a Ray address (``auto``, ``ray://host:10001``, ``host:6379``); None means Ray's own default:
    RAY_ADDRESS, else a cluster started on this node with `ray start`, else a new local one. An engine that
    started Ray (or connected) stops it again on `close` (it is a context manager); one that found Ray already
    initialised in this process (a notebook, the tests) leaves it alone.
    """

    def __init__(self, address: str | None = None, *, max_attempts: int = MAX_ATTEMPTS,
                 cpus_per_actor: int | None = None):
        if max_attempts < 1:
            raise FeatpipeError(f"max_attempts must be at least 1, got {max_attempts}")
        self.address, self.max_attempts, self.cpus_per_actor = address, max_attempts, cpus_per_actor
        self._shape: ActorShape | None = None
        self._owns_ray = False
        self.start_seconds = 0.0  # time spent starting or connecting to Ray

    # --- the cluster ----------------------------------------------------------------------------------

    def connect(self) -> ActorShape:
        """Connect (or start a local cluster) once; returns the actors the cluster holds."""
        if self._shape is None:
            ray = import_ray()
            start = time.perf_counter()
            if not ray.is_initialized():
                self._init(ray)
                self._owns_ray = True
            self.start_seconds = time.perf_counter() - start
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            self._shape = plan_actors(nodes, self.cpus_per_actor)
            log.info("%s", self._shape.describe())
        return self._shape

    def _init(self, ray) -> None:
        # Ray runs its workers at nice 15; the actors are this job's whole work, so a local cluster started here
        # runs them at the driver's priority (RAY_worker_niceness is read by the raylet this call may start; it
        # does nothing to a cluster that is already running, whose operator sets it with `ray start`).
        saved = os.environ.get(NICENESS)
        os.environ[NICENESS] = saved or "0"
        where = self.address or "RAY_ADDRESS / this node"
        timeout = connect_timeout()
        try:
            _probe(self.address or os.environ.get("RAY_ADDRESS"), timeout)
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise FeatpipeError(f"cannot connect to the Ray cluster at {where}: {_first_line(e)}") from None
        finally:
            if saved is None:
                del os.environ[NICENESS]

    @property
    def gpus(self) -> bool:
        """Whether the actors run on GPUs (decides precision "auto" for them, not for this process)."""
        return bool(self.connect().num_gpus)

    def describe(self) -> str:
        return self.connect().describe()

    def workers(self) -> int:
        return self.connect().count

    def close(self) -> None:
        if self._owns_ray:
            import_ray().shutdown()
            self._owns_ray = False
        self._shape = None

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the work -------------------------------------------------------------------------------------

    def run(self, extraction, parts: list[Part], *, progress: bool = True, setup_seconds: float = 0.0) -> dict:
        """Extract `parts` of `extraction` into part files of its work directory; returns summed figures (the
        actors count their own start-up, not `setup_seconds`).

        Raises FeatpipeError naming the parts that failed `max_attempts` times (the others are kept), or at
        once with the message of a FeatpipeError an actor raised (the job itself is wrong: it would fail on
        every actor).
        """
        ray = import_ray()
        shape = self.connect()
        job, workdir = extraction.to_json(), extraction.workdir
        plan = len(workdir.plan())
        title = f"ray ({shape.count} actor{'s' * (shape.count != 1)})"
        if len(parts) < plan:
            title += f" (resuming: {plan - len(parts)} of {plan} parts already done)"
        run = _Run(ray, job, shape, parts, workdir, self.max_attempts,
                   Progress(sum(p.rows for p in parts), title) if progress else None)
        try:
            run.loop()
        finally:
            run.stop()
        if run.meter:
            run.meter.close()
        if run.failed:
            names = "; ".join(f"{part} ({reason})" for part, reason in run.failed.items())
            n = len(run.failed)
            raise FeatpipeError(
                f"{n} part{'s' * (n != 1)} failed {self.max_attempts} time{'s' * (self.max_attempts != 1)}: "
                f"{names}. The other parts are kept: run the same command again to extract the missing ones")
        return dict(run.stats)


class _Run:
    """One pass over the parts: at most one part in flight per actor, dead actors replaced while work remains."""

    def __init__(self, ray, job: dict, shape: ActorShape, parts: list[Part], workdir: WorkDir, max_attempts: int,
                 meter):
        self.ray, self.job, self.shape, self.max_attempts, self.meter = ray, job, shape, max_attempts, meter
        self.workdir = workdir
        self.actor_class = ray.remote(PartExtractor)
        self.queue = deque(parts)
        self.attempts: Counter = Counter()
        self.failed: dict[Part, str] = {}
        self.stats: Counter = Counter()
        self.failures_in_a_row = 0
        self.running: dict = {}  # ObjectRef -> (actor, part)
        self.actors: list = []
        self.idle = [self._new_actor() for _ in range(min(shape.count, len(parts)))]

    def _new_actor(self):
        # Named, so an operator sees them in `ray list actors` (and the tests can kill one); no restarts by
        # Ray: the driver replaces a dead actor itself and counts the attempt against the part it ran.
        actor = self.actor_class.options(
            name=f"featpipe-extract-{len(self.actors)}", num_cpus=self.shape.num_cpus,
            num_gpus=self.shape.num_gpus, max_restarts=0, max_task_retries=0,
        ).remote(self.job, self.shape.num_cpus or None, bool(self.shape.num_gpus))
        self.actors.append(actor)
        return actor

    def loop(self) -> None:
        ray = self.ray
        while self.queue or self.running:
            while self.idle and self.queue:
                actor, part = self.idle.pop(), self.queue.popleft()
                self.attempts[part] += 1
                self.running[actor.run.remote(part)] = (actor, part)
            [ref], _ = ray.wait(list(self.running), num_returns=1)
            actor, part = self.running.pop(ref)
            try:
                self.stats.update(ray.get(ref))
            except ray.exceptions.RayActorError as e:
                # The actor is gone; its part's file may have reached the disk just before: then it is done.
                lost = bool(self.workdir.missing([part]))
                if lost:
                    self._retry(part, f"its actor died: {_first_line(e)}")
                if self.queue:
                    self.idle.append(self._new_actor())
                if lost:
                    continue
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, FeatpipeError):
                    raise FeatpipeError(str(e.cause)) from None
                self._retry(part, f"{type(e.cause).__name__}: {_first_line(e.cause)}")
                self.idle.append(actor)
                continue
            else:
                self.idle.append(actor)
            self.failures_in_a_row = 0
            if self.meter:
                self.meter.update(part.rows)

    def _retry(self, part: Part, reason: str) -> None:
        # Every actor failing, none finishing a part (featpipe missing on the nodes, a base that does not fit
        # in memory): stop instead of retrying each part on fresh actors.
        self.failures_in_a_row += 1
        if self.failures_in_a_row > self.shape.count * self.max_attempts:
            raise FeatpipeError(f"{self.failures_in_a_row} attempts in a row failed and none finished a part; "
                                f"the last: {part}: {reason}")
        if self.attempts[part] < self.max_attempts:
            log.warning("retrying %s (attempt %d of %d failed: %s)", part, self.attempts[part],
                        self.max_attempts, reason)
            self.queue.appendleft(part)
        else:
            self.failed[part] = reason

    def stop(self) -> None:
        """Release every actor (and its GPU); parts in flight on an interrupt are simply redone by a rerun."""
        for actor in self.actors:
            self.ray.kill(actor)


def connect_timeout() -> float:
    """Seconds allowed to reach a Ray cluster's address: FEATPIPE_RAY_CONNECT_TIMEOUT, else CONNECT_TIMEOUT."""
    value = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(value) if value else CONNECT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise FeatpipeError(f"{CONNECT_TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


# A child process connects and lets go: Ray's connection loop runs in C++ and does not return to Python (so
# neither a deadline nor Ctrl-C reaches it) until it gives up, minutes later.
_TRY_CONNECT = ("import logging, sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, "
                "logging_level=logging.ERROR); ray.shutdown()")


def _probe(address: str | None, timeout: float) -> None:
    """An address naming a host and port (``host:6379``, ``ray://host:10001``) must answer within `timeout`
    seconds: nothing listening is an error at once, and a cluster that does not answer (another service on that
    port, a hung head) is an error at the deadline, where Ray would retry for minutes."""
    host, sep, port = (address or "").split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # auto, local, or Ray's own default: nothing to probe
    def refused(reason: str) -> FeatpipeError:
        return FeatpipeError(f"cannot connect to the Ray cluster at {address}: {reason}")

    deadline = time.monotonic() + timeout
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise refused(f"{reason} (is a Ray head running there? `ray start --head` starts one)") from None
    try:
        done = subprocess.run([sys.executable, "-c", _TRY_CONNECT, address], capture_output=True, text=True,
                              timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise refused(f"no answer from a Ray cluster within {timeout:g} s "
                      f"(set {CONNECT_TIMEOUT_ENV} to wait longer)") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise refused(lines[-1].strip() if lines else f"exit code {done.returncode}")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
