"""The local distributor: one worker process per GPU (or per CPU slot) on this node, each on its own parts.

`LocalEngine` is the engine (featpipe.extraction.InProcessEngine has the interface); `select_devices` turns
``--devices``/``--workers`` into one entry per worker and `cap_workers` keeps them to what the node's cores and
memory hold (featpipe.engines.make_engine uses both). Each worker is ``python -m featpipe.worker`` with
``CUDA_VISIBLE_DEVICES`` set to its one GPU, so it loads the model once, on its own device; the machine's cores
are divided between workers so their input pipelines do not oversubscribe them. The parts are divided into
contiguous slices of near-equal rows. A worker that dies is named in the error; the others finish, their parts
stay, and a rerun does only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from featpipe.errors import ArgumentError, FeatpipeError
from featpipe.parts import Part, shard_parts
from featpipe.progress import Progress
from featpipe.workdir import WorkDir

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60
# Resident memory of one TensorFlow worker process extracting with a small base (measured on a 2-core CPU
# node: about 700 MB each; a big base on a GPU needs more host memory, never less).
WORKER_MEMORY_BYTES = 700 << 20
WORKER_COMMAND = (sys.executable, "-m", "featpipe.worker")


def available_cores() -> int:
    # The CPUs this process may run on (a Slurm or container cpuset), not the machine's total.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes this process can still use: the kernel's MemAvailable, lowered by a cgroup (container, Slurm job)
    limit; None when neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def cap_workers(devices: list[str | None], cores: int, memory: int | None) -> tuple[list[str | None], str | None]:
    """At most the worker processes this node can hold: CPU workers up to one per core, any worker up to one
    per WORKER_MEMORY_BYTES of available memory. Returns the devices kept and, when some were dropped, why."""
    on_cpu = all(d is None for d in devices)
    limits = {}
    if on_cpu:
        limits[f"{cores} core{'s' * (cores != 1)}"] = cores
    if memory is not None:
        limits[f"{memory / 2**30:.1f} GiB of available memory at about {WORKER_MEMORY_BYTES / 2**30:.1f} GiB "
               "per worker"] = max(1, memory // WORKER_MEMORY_BYTES)
    if not limits or min(limits.values()) >= len(devices):
        return devices, None
    reason, allowed = min(limits.items(), key=lambda item: item[1])
    kept = devices[:allowed]
    what = "worker processes" if on_cpu else f"GPU workers (kept: {', '.join(map(str, kept))})"
    return kept, f"{len(devices)} {what} requested, {allowed} started: {reason} allow{'s' * (allowed == 1)} {allowed}"


class LocalEngine:
    """Runs the parts of an extraction on worker processes of this node: one per entry of `devices` (a CUDA
    device id, or None: a CPU worker), each with its share of the cores. See featpipe.extraction.InProcessEngine
    for the interface. Build it with featpipe.engines.make_engine, which also caps the workers."""

    def __init__(self, devices: list[str | None]):
        if not devices:
            raise ArgumentError("{devices} names no device", "devices")
        self.devices = list(devices)

    @property
    def gpus(self) -> bool:
        return any(d is not None for d in self.devices)

    def workers(self) -> int:
        return len(self.devices)

    def describe(self) -> str:
        from featpipe import runtime

        return runtime.device_label()

    def run(self, extraction, parts: list[Part], *, progress: bool = True, setup_seconds: float = 0.0) -> dict:
        """Run `parts` of `extraction` on the workers (each counts its own start-up); returns no figures."""
        run_local_workers(extraction.to_json(), parts, self.devices, extraction.workdir, progress=progress)
        return {}


def run_local_workers(job: dict, parts: list[Part], devices: list[str | None], workdir: WorkDir,
                      progress: bool = True) -> None:
    """Run `parts` of `job` on one worker process per entry of `devices` (a CUDA device id, or None: CPU).

    Workers run in their own session, so a Ctrl-C at a terminal reaches this process only, which stops them
    (SIGTERM) in order; an interrupt while they are still being started stops those already started.
    """
    n = len(devices)
    threads = max(1, available_cores() // n)
    slices = [shard_parts(parts, k, n) for k in range(n)]
    workers = []
    try:
        for k, (device, mine) in enumerate(zip(devices, slices)):
            if mine:
                workers.append(_start_worker(job, k, n, device, mine, threads, workdir))
        meter = Progress(sum(p.rows for p in parts), f"{n} workers") if progress else None
        _wait(workers, workdir, parts, meter)
    except BaseException:
        _stop(workers)
        raise
    finally:
        for _, _, log_file, _ in workers:
            log_file.close()
    if meter:
        meter.close()
    failed = [(name, proc, log_file, mine) for name, proc, log_file, mine in workers if proc.returncode != 0]
    if failed:
        lost = workdir.unwritten([p for _, _, _, mine in failed for p in mine])
        reasons = "; ".join(f"{name} {_how(proc.returncode, log_file.name)}"
                            for name, proc, log_file, _ in failed)
        raise FeatpipeError(f"{reasons}. The other parts are kept: run the same command again to extract the "
                            f"{len(lost)} missing part{'s' * (len(lost) != 1)}")


def _start_worker(job: dict, k: int, n: int, device: str | None, parts: list[Part], threads: int,
                  workdir: WorkDir) -> tuple:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=device if device is not None else "-1")
    log_file = open(workdir.path / f"worker-{k}.log", "wb")  # noqa: SIM115 - closed when the worker ends
    try:
        proc = subprocess.Popen(WORKER_COMMAND, stdin=subprocess.PIPE, stdout=log_file, stderr=log_file, env=env,
                                start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    name = f"worker {k}/{n} ({f'GPU {device}' if device is not None else 'CPU'})"
    worker = (name, proc, log_file, parts)
    try:
        proc.stdin.write(json.dumps({"job": job, "parts": [[p.split, p.start, p.stop] for p in parts],
                                     "threads": threads, "parent": os.getpid()}).encode())
        proc.stdin.close()
    except BaseException:
        _stop([worker])
        log_file.close()
        raise
    return worker


def _wait(workers, workdir: WorkDir, parts: list[Part], meter: Progress | None) -> None:
    shown = 0
    while any(proc.poll() is None for _, proc, _, _ in workers):
        time.sleep(POLL_SECONDS)
        if meter:
            done = workdir.finished_rows(parts)
            meter.update(done - shown)
            shown = done
    if meter:
        meter.update(workdir.finished_rows(parts) - shown)


def _stop(workers) -> None:
    """Interrupted: ask every worker to commit its finished parts and stop (SIGTERM), then make sure."""
    for _, proc, _, _ in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for _, proc, _, _ in workers:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _how(returncode: int, log_path: str) -> str:
    """How a worker ended: the signal that killed it (its log's last line is then whatever it was doing, often
    a CUDA message, not why), or its exit code and its last own log line."""
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)} (log: {log_path})"
    return f"failed (exit {returncode}){_last_line(log_path)}"


def signal_name(signum: int) -> str:
    """``signal 9 (SIGKILL)``; a number alone for a signal Python does not name."""
    try:
        return f"signal {signum} ({signal.Signals(signum).name})"
    except ValueError:
        return f"signal {signum}"


def _last_line(log_path: str) -> str:
    from featpipe.native_logs import is_native_log

    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip() and not is_native_log(ln.strip())]
    except OSError:
        return ""
    return f": {lines[-1].decode(errors='replace')}" if lines else ""


def select_devices(devices: str, workers: int, visible_gpus: int) -> list[str | None]:
    """`--devices` / `--workers` -> one entry per worker process: a CUDA device id, or None for a CPU worker.

    ``all`` means every visible GPU (the CPU when there is none), ``cpu`` the CPU, ``0,1`` those GPUs (indices
    into the visible ones). A single worker on the CPU, or on the only visible GPU, runs in this process: the
    caller gets ``[None]``.
    """
    ids = _visible_gpu_ids(visible_gpus)
    if devices == "cpu" or (devices == "all" and not ids):
        return [None] * workers
    if workers != 1:
        raise ArgumentError("{workers} is for CPU runs; on GPUs one worker runs per device ({devices})",
                            "workers", "devices")
    if devices == "all":
        return [None] if len(ids) == 1 else ids
    try:
        chosen = [int(d) for d in devices.split(",")]
    except ValueError:
        raise ArgumentError(f"{{devices}} must be all, cpu or GPU indices like 0,1; got {devices!r}",
                            "devices") from None
    bad = [d for d in chosen if not 0 <= d < len(ids)]
    if bad or len(set(chosen)) != len(chosen):
        raise ArgumentError(f"{{devices}} {devices}: this machine has {len(ids)} visible GPU(s) "
                            f"(indices 0-{len(ids) - 1})" if ids else f"{{devices}} {devices}: no GPU is visible",
                            "devices")
    if chosen == [0] and len(ids) == 1:
        return [None]
    return [ids[d] for d in chosen]


def _visible_gpu_ids(count: int) -> list[str]:
    # Worker k gets the k-th GPU this process sees: its CUDA id under the node's own CUDA_VISIBLE_DEVICES.
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]
