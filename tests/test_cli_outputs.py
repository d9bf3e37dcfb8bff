"""Issue 20, item 1: outputs that are not plain files (`-`, FIFOs, devices, symbolic links) and the umask,
through the command line: what a user names is written to, never replaced."""

import csv
import io
import json
import os
import threading

import pytest
from click.testing import CliRunner

from featpipe.cli import main
from heads_fixtures import real_cache


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_file):
    root = tmp_path_factory.mktemp("outputs")
    previous = os.umask(0o022)
    try:
        cache = real_cache(root, tiny_model_file)
        result = run("train", cache, "--head", "logreg", "--runs-dir", root / "runs", "--json")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)["run_dir"]


def test_run_files_get_the_users_umask(trained):
    _, run_dir = trained
    modes = {name: os.stat(os.path.join(run_dir, name)).st_mode & 0o777 for name in os.listdir(run_dir)}
    assert modes and set(modes.values()) == {0o644}, modes


def test_predict_to_stdout(trained):
    root, run_dir = trained
    result = run("predict", run_dir, root / "data" / "test", "-o", "-")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 8 and all(r["predicted_class"] in ("cat", "dog") for r in rows)
    assert "wrote 8 rows to standard output" in result.stderr and not os.path.exists("-")
    both = run("predict", run_dir, root / "data" / "test", "-o", "-", "--json")
    assert both.exit_code == 2 and "both write to standard output" in both.stderr


def test_predict_through_a_symlink_a_fifo_and_a_device(trained, tmp_path):
    root, run_dir = trained
    images = root / "data" / "test"
    target = tmp_path / "kept" / "p.csv"
    target.parent.mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run("predict", run_dir, images, "-o", link).exit_code == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 9

    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = run("predict", run_dir, images, "-o", fifo)
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert received and received[0] == target.read_text() and not fifo.is_file()

    assert run("predict", run_dir, images, "-o", "/dev/null").exit_code == 0
    assert not os.path.isfile("/dev/null")
    if os.path.exists("/dev/full"):
        full = run("predict", run_dir, images, "-o", "/dev/full")
        assert full.exit_code == 1 and full.stderr == "featpipe: error: no space left on device writing /dev/full\n"
        assert not os.path.isfile("/dev/full")
