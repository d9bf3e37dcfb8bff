"""The `featpipe` command line: a click group whose commands parse options, call the library and print.

Exit codes: 0 success, 1 bad input or environment (one line on stderr), 2 bad usage, 3 internal error,
130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from featpipe import __version__
from featpipe.errors import FeatpipeError

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 3, 130


class _Group(click.Group):
    """Turns expected failures into one clear line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FeatpipeError as e:
            click.echo(f"featpipe: error: {e}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("featpipe: interrupted; run the same command again to resume", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # a bug: keep the log readable, but make the traceback available
            if os.environ.get("FEATPIPE_DEBUG"):
                traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0]
            click.echo(f"featpipe: internal error: {type(e).__name__}: {first} "
                       "(set FEATPIPE_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featpipe")
@click.option("-v", "--verbose", count=True, help="More log output: -v featpipe's debug lines, -vv every library's.")
def main(verbose: int) -> None:
    """featpipe: run a frozen pretrained base once, cache its features, train heads in seconds."""
    # Before any command imports TensorFlow: its C++ start-up chatter is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # featpipe's own steps are logged (batch jobs need to see where a long grid is); other libraries
    # only warn unless asked.
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("featpipe").setLevel(logging.DEBUG if verbose else logging.INFO)


def _register() -> None:
    from featpipe.cli import cache_cmds, extract_cmds, finetune_cmds, head_cmds, report_cmds

    for module in (extract_cmds, cache_cmds, head_cmds, finetune_cmds, report_cmds):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
