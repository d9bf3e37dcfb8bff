"""Interrupts (issue 9, case 7): SIGTERM is handled like Ctrl-C, with its own exit code, and an interrupt
that lands inside a finalizer is not swallowed."""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import click
import pytest
from click.testing import CliRunner

from featpipe.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, _Group


def _group(body):
    @click.group(cls=_Group)
    def cli():
        pass

    @cli.command()
    def work():
        body()
        click.echo("ran to the end")

    return cli


def test_sigterm_exits_143_with_a_resume_hint():
    def body():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what a library (Ray) installed earlier
    result = CliRunner().invoke(_group(body), ["work"])
    assert result.exit_code == EXIT_TERMINATED == 143
    assert result.stderr.strip() == "featpipe: terminated (SIGTERM); run the same command again to resume"
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the command's only


@pytest.mark.slow
def test_an_interrupt_inside_a_finalizer_is_delivered_again():
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while TensorFlow runs a finalizer
            for _ in range(1000):
                pass

    def body():
        Finalised()
        gc.collect()
        for _ in range(300):  # the rest of a long grid
            time.sleep(0.1)

    result = CliRunner().invoke(_group(body), ["work"])
    assert result.exit_code == EXIT_INTERRUPTED and "ran to the end" not in result.output


SIGTERM_AFTER_TWO_PARTS = textwrap.dedent("""
    import os, signal, sys
    from featpipe import writer
    from featpipe.cli import main

    original, written = writer.write_part, []

    def write_then_terminate(directory, key, part):
        original(directory, key, part)
        written.append(part)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what a batch scheduler sends before SIGKILL

    writer.write_part = write_then_terminate
    main(sys.argv[1:])
""")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_during_extract_keeps_the_finished_parts(dataset, tiny_model_file, tmp_path):
    args = ["extract", str(dataset), "--backbone", tiny_model_file, "--cache-dir", str(tmp_path / "cache"),
            "--batch-size", "2", "--part-rows", "2", "-q"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_TWO_PARTS, *args], capture_output=True, text=True,
                            timeout=280, env=env)
    assert killed.returncode == 143, killed.stderr
    assert killed.stderr.strip().endswith("featpipe: terminated (SIGTERM); run the same command again to resume")
    partial = list((tmp_path / "cache").glob("*.partial"))
    # The two parts written before the signal, and any the forward loop had already handed over, are committed.
    kept = len(list(partial[0].glob("train-*.h5")))
    assert len(partial) == 1 and 2 <= kept < 6
    resumed = subprocess.run([sys.executable, "-c", "from featpipe.cli import main; main()", *args[:-1]],
                             capture_output=True, text=True, timeout=280, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"train (resuming: {2 * kept} of 12 images already done)" in resumed.stderr
