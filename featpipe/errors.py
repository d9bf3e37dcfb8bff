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


class ArgumentError(FeatpipeError):
    """A bad value of a library function's argument. The message names the Python argument as ``{name}``
    (``ArgumentError("{epochs} must be 0 or more", "epochs")`` reads "epochs must be 0 or more"); the command
    line spells each one as its own flag instead (`spelled`), so Python callers never read about flags."""

    def __init__(self, message: str, *arguments: str):
        self.message, self.arguments = message, arguments
        super().__init__(self.spelled(lambda name: name))

    def spelled(self, spell) -> str:
        """The message with each argument name `{name}` replaced by `spell(name)`."""
        text = self.message
        for name in self.arguments:
            text = text.replace("{" + name + "}", spell(name))
        return text
