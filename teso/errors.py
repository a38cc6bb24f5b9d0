"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class TesoError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched checkpoint.

    The message must name the file or argument at fault and say what was expected.
    """
