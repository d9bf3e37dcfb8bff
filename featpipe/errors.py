"""The exception types the command line turns into one line and an exit code."""

import signal


class FeatpipeError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so everything that commits work on Ctrl-C (context
    managers, finally blocks) does so for SIGTERM too; `signum` gives the exit code, 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
