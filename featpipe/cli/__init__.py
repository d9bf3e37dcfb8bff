"""The `featpipe` command line: a click group whose commands parse options, call the library and print.

Exit codes:
  0    success
  1    bad input or environment: one line on stderr (a full disk: "no space left on device writing X")
  2    bad usage
  3    internal error (a bug; FEATPIPE_DEBUG=1 shows the traceback)
  130  interrupted by SIGINT (Ctrl-C)          } finished work is committed first;
  143  terminated by SIGTERM (batch schedulers) } run the same command again to resume
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
import _thread

import click

from featpipe import __version__
from featpipe.collector import collect_for_a_command
from featpipe.errors import ArgumentError, FeatpipeError, Interrupted
from featpipe.tf_env import prefer_onednn

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 3, 128 + signal.SIGINT, 128 + signal.SIGTERM
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVERY_DELAY = 0.05  # seconds


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_handlers():
    """SIGINT and SIGTERM raise Interrupted in the main thread, so both unwind like Ctrl-C and commit what
    is done. An interrupt raised inside a finalizer (TensorFlow runs many) is swallowed by Python and only
    reported to sys.unraisablehook: there it is delivered again, so the command still stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in HANDLED_SIGNALS}
    previous_hook = sys.unraisablehook

    def redeliver(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # From another thread, a moment later: the handler must run after this hook (and the finalizer)
            # has returned, or it would be swallowed again.
            signum = getattr(unraisable.exc_value, "signum", signal.SIGINT)
            timer = threading.Timer(REDELIVERY_DELAY, lambda: active and _thread.interrupt_main(signum))
            timer.daemon = True
            timer.start()
        else:
            previous_hook(unraisable)

    active = True
    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        active = False
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Group(click.Group):
    """Turns expected failures into one clear line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        from featpipe.native_logs import quiet_native_logs

        # TensorFlow's C++/absl log lines only with --verbose or FEATPIPE_DEBUG: stderr stays featpipe's own.
        quiet = not (ctx.params.get("verbose") or os.environ.get("FEATPIPE_DEBUG"))
        try:
            with interrupt_handlers(), quiet_native_logs(quiet):
                return super().invoke(ctx)
        except FeatpipeError as e:
            message = e.spelled(self._flag_of) if isinstance(e, ArgumentError) else str(e)
            click.echo(f"featpipe: error: {message}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
            click.echo(f"featpipe: {what}; run the same command again to resume", err=True)
            sys.exit(128 + signum)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug: keep the log readable, but make the traceback available
            if os.environ.get("FEATPIPE_DEBUG"):
                traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0]
            click.echo(f"featpipe: internal error: {type(e).__name__}: {first} "
                       "(set FEATPIPE_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


    def _flag_of(self, argument: str) -> str:
        """The command-line flag of a library argument (`max_memory` -> `--max-memory`, `head` -> `--head`):
        the option of that name or flag in any command (commands name one argument alike), else the argument."""
        flag = f"--{argument.replace('_', '-')}"
        commands = list(self.commands.values())
        while commands:
            command = commands.pop()
            commands += list(getattr(command, "commands", {}).values())
            for param in command.params:
                if isinstance(param, click.Option) and (flag in param.opts or param.name == argument):
                    return flag if flag in param.opts else max(param.opts, key=len)
        return argument


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featpipe")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v featpipe's debug lines and TensorFlow's C++/absl logs, -vv every library's.")
def main(verbose: int) -> None:
    """featpipe: run a frozen pretrained base once, cache its features, train heads in seconds."""
    # Before any command imports TensorFlow: its C++ start-up chatter is noise on a command line (the lines
    # logged before absl starts ignore this; quiet_native_logs drops those).
    if not (verbose or os.environ.get("FEATPIPE_DEBUG")):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_onednn()  # the CPU's fastest kernels for the base (featpipe.tf_env); worker processes inherit it
    collect_for_a_command()  # a second less to import TensorFlow, two less to end (featpipe.collector)
    # featpipe's own steps are logged (batch jobs need to see where a long grid is); other libraries
    # only warn unless asked, and TensorFlow's Python-side absl chatter only with -v.
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("featpipe").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if verbose else logging.ERROR)


def _register() -> None:
    from featpipe.cli import cache_cmds, extract_cmds, finetune_cmds, head_cmds, report_cmds

    for module in (extract_cmds, cache_cmds, head_cmds, finetune_cmds, report_cmds):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
