"""The one exception type that carries a message meant for the user."""


class FeatpipeError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""
