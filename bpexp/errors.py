"""The one exception type for bad user input.

A :class:`UserError` carries one line: which key, what value, what is allowed. The entry point
prints it and exits 2 (before any run folder exists: every check runs in the validation phase).
Any other exception is a bug: its traceback goes to the run folder's error.txt.
"""


class UserError(ValueError):
    """Bad input from the user; the message is one line: key, value, what is allowed."""


def die(msg: str, code: int = 2):
    """Bad input: ``error: msg`` on stderr, one line, and exit ``code`` (2)."""
    import sys

    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def quiet_interrupt(signum=None, frame=None):
    """SIGINT where nothing needs recording (starting up, or a second Ctrl-C while the first
    is being recorded): one line and exit 130, no traceback."""
    import os
    import sys

    sys.stderr.write("\ninterrupted\n")
    sys.stderr.flush()
    os._exit(130)
