"""Choosing the engine that runs an extraction's parts, once, from what the user asked for.

An engine runs the missing parts of an extraction and nothing else (interface: featpipe.extraction.
InProcessEngine): this process, worker processes of this node (featpipe.distribute.LocalEngine), or actors of
a Ray cluster (featpipe.ray_engine.RayEngine). The command line and Python callers build one here and hand it
to `featpipe.extraction.extract(..., engine=...)`; a new engine is one more class with the same four members
and one more branch below.
"""

from __future__ import annotations

import logging

from featpipe.errors import ArgumentError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def make_engine(engine: str = "local", *, devices: str = "all", workers: int = 1, address: str | None = None):
    """The engine for `engine` ("local" or "ray").

    local: `devices` ("all": every visible GPU, else the CPU; "cpu"; "0,1": those GPUs) and `workers` (CPU
    worker processes) give one worker process per GPU or `workers` on the CPU, capped at what this node's
    cores and memory hold (a warning says what was capped); a single worker runs in this process.
    ray: the cluster at `address` (None: Ray's default); `devices` and `workers` are for the local engine.
    """
    from featpipe.extraction import InProcessEngine

    if engine not in ENGINES:
        raise ArgumentError(f"{{engine}} must be one of {', '.join(ENGINES)}, got {engine!r}", "engine")
    if workers < 1:
        raise ArgumentError(f"{{workers}} must be at least 1, got {workers}", "workers")
    if engine == "ray":
        from featpipe.ray_engine import RayEngine

        if devices != "all" or workers != 1:
            raise ArgumentError("the Ray engine places its own actors (one per GPU of the cluster); {devices} and "
                                "{workers} are for the local engine", "devices", "workers")
        return RayEngine(address)
    if address is not None:
        raise ArgumentError("{address} is for the Ray engine", "address")
    from featpipe import distribute, runtime

    chosen = distribute.select_devices(devices, workers, len(runtime.gpus()))
    chosen, capped = distribute.cap_workers(chosen, distribute.available_cores(), distribute.available_memory())
    if capped:
        log.warning("%s", capped)
    if chosen == [None]:
        return InProcessEngine()
    return distribute.LocalEngine(chosen)
