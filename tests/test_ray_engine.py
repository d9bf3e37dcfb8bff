"""The Ray engine on a real local Ray cluster (2 CPUs, started once per session): equal caches, killed actors."""

import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

from featpipe.backbones import load_backbone
from featpipe.cli import main
from featpipe.data import load_image_folder
from featpipe.errors import FeatpipeError
from featpipe.extraction import extract
from featpipe.ray_engine import ActorShape, RayEngine, import_ray, plan_actors
from test_extract import assert_same_cache


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def whole(corrupt_dataset, tiny_model_file, tmp_path):
    """The single-process extraction every Ray extraction must equal."""
    return extract(load_image_folder(corrupt_dataset), load_backbone(tiny_model_file), tmp_path / "whole",
                   batch_size=4, progress=False)


@pytest.mark.parametrize("nodes, cpus_per_actor, expected", [
    ([{"CPU": 2.0}], None, ActorShape(1, 2, 0)),                        # a laptop: one actor, both cores
    ([{"CPU": 16.0}, {"CPU": 6.0}], None, ActorShape(5, 4, 0)),         # packed by 4 cores, never more
    ([{"CPU": 0.0}, {"CPU": 8.0}], 2, ActorShape(4, 2, 0)),             # a head node that runs nothing
    ([{"CPU": 32.0, "GPU": 8.0}, {"CPU": 8.0, "GPU": 2.0}, {"CPU": 64.0}], None, ActorShape(10, 4, 1)),
])
def test_actors_fit_the_cluster(nodes, cpus_per_actor, expected):
    assert plan_actors(nodes, cpus_per_actor) == expected


def test_a_cluster_without_room_is_one_clear_error():
    with pytest.raises(FeatpipeError, match="no node with a CPU or a GPU"):
        plan_actors([{"CPU": 0.0}])
    with pytest.raises(FeatpipeError, match="no node of the Ray cluster has 8 CPUs"):
        plan_actors([{"CPU": 4.0}], 8)


def test_ray_is_imported_only_for_the_ray_engine():
    probe = ("import sys; from click.testing import CliRunner; from featpipe.cli import main; "
             "r = CliRunner().invoke(main, ['extract', '--help']); "
             "assert r.exit_code == 0 and '--engine' in r.output; assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_without_ray_the_engine_says_what_to_install(monkeypatch, dataset, tiny_model_file, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(FeatpipeError, match=r'pip install "featpipe\[ray\]"'):
        import_ray()
    result = CliRunner().invoke(main, ["extract", str(dataset), "-b", tiny_model_file, "--cache-dir",
                                       str(tmp_path), "--engine", "ray"])
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
        'featpipe: error: --engine ray needs Ray, which is not installed: pip install "featpipe[ray]"']


def _kill_two_actors(ray, stop: threading.Event) -> None:
    """Kill the first actor and then its replacement soon after each exists: while it is still loading the base
    (importing TensorFlow alone takes seconds), with the first part handed to it, which therefore fails twice.

    Not at once: Ray drops a kill that reaches a worker before the actor is placed on it ("ignoring KillActor
    ... current actor ID: NIL_ID"), and the actor then never runs nor dies."""
    for name in ("featpipe-extract-0", "featpipe-extract-1"):
        while not stop.is_set():
            try:
                actor = ray.get_actor(name)
            except ValueError:  # not created yet
                time.sleep(0.005)
                continue
            stop.wait(0.5)
            ray.kill(actor)
            break


@pytest.mark.slow
def test_killed_actors_mean_a_retry_then_a_named_part_and_the_cli_rerun_does_the_rest(
        ray_cluster, corrupt_dataset, tiny_model_file, tmp_path, whole, caplog):
    data, base = load_image_folder(corrupt_dataset), load_backbone(tiny_model_file)
    cache = tmp_path / "ray"
    stop = threading.Event()
    killer = threading.Thread(target=_kill_two_actors, args=(ray_cluster, stop))
    killer.start()
    try:
        with pytest.raises(FeatpipeError, match=r"^1 part failed 2 times: train rows 0-3 \(its actor died: .*\)\. "
                                                r"The other parts are kept"):
            extract(data, base, cache, batch_size=4, part_rows=4, progress=False, engine=RayEngine(max_attempts=2))
    finally:
        stop.set()
        killer.join()
    assert "retrying train rows 0-3 (attempt 1 of 2 failed: its actor died" in caplog.text
    partial = next(cache.glob("*.partial"))
    assert len(list(partial.glob("*.h5"))) == 8 - 1 and not list(cache.glob("*.h5"))  # nothing looks finished

    args = ["extract", str(corrupt_dataset), "-b", tiny_model_file, "--cache-dir", str(cache), "--batch-size", "3",
            "--engine", "ray", "--json"]
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0, rerun.output
    assert "ray (1 actor) (resuming: 7 of 8 parts already done): 4/4 images" in rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["cached"] is False and summary["rows"] == {"train": 12, "validation": 6, "test": 6}
    assert_same_cache(summary["cache"], whole.path)
    assert ray_cluster.is_initialized()  # the session's Ray is not the command's to stop
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["cached"] is True
    assert CliRunner().invoke(main, [*args, "--shard", "0/2"]).exit_code == 2


def _free_local_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_with_nothing_listening_is_one_line_at_once(form, monkeypatch):
    ray = pytest.importorskip("ray")
    address = form.format(port=_free_local_port())
    start = time.monotonic()
    with pytest.raises(FeatpipeError, match=rf"cannot connect to the Ray cluster at {address}: connection refused"):
        RayEngine(address)._init(ray)  # what connect() calls when this process has no Ray yet
    assert time.monotonic() - start < 5
    monkeypatch.setenv("FEATPIPE_RAY_CONNECT_TIMEOUT", "soon")
    with pytest.raises(FeatpipeError, match="FEATPIPE_RAY_CONNECT_TIMEOUT must be a positive number of seconds"):
        RayEngine(address)._init(ray)


@pytest.mark.slow  # a subprocess loading TensorFlow: ~12 s
def test_the_cli_names_an_address_with_nothing_listening(dataset, tiny_model_file, tmp_path):
    pytest.importorskip("ray")  # without it, the command says what to install instead (tested above)
    address = f"127.0.0.1:{_free_local_port()}"
    probe = textwrap.dedent(f"""
        import sys
        from featpipe.cli import main
        sys.exit(main(["extract", {str(dataset)!r}, "-b", {tiny_model_file!r}, "--cache-dir", {str(tmp_path)!r},
                       "--engine", "ray", "--ray-address", {address!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
        f"featpipe: error: cannot connect to the Ray cluster at {address}: connection refused"), done.stderr


def test_an_address_that_never_answers_meets_the_deadline(monkeypatch):
    ray = pytest.importorskip("ray")
    with socket.socket() as silent:  # listens, never answers: another service on the port, or a hung head
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("FEATPIPE_RAY_CONNECT_TIMEOUT", "2")
        start = time.monotonic()
        with pytest.raises(FeatpipeError, match=rf"cannot connect to the Ray cluster at {address}: no answer from a "
                                                r"Ray cluster within 2 s \(set FEATPIPE_RAY_CONNECT_TIMEOUT"):
            RayEngine(address)._init(ray)
        assert time.monotonic() - start < 10


@pytest.mark.slow
def test_the_connection_check_passes_a_live_cluster(ray_cluster):
    from featpipe.ray_engine import _probe

    start = time.monotonic()
    _probe(ray_cluster.get_runtime_context().gcs_address, 45)  # a child process connects and lets go
    assert time.monotonic() - start < 30
