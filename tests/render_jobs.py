"""Jobs that tests/test_render.py hands to the figure helper (the helper imports this module
through PYTHONPATH): small, and free of JAX."""

import os
import time
from pathlib import Path


def pid() -> int:
    return os.getpid()


def meet(mine, other, timeout: float = 60.0) -> bool:
    """Leave the file ``mine``, then wait for ``other``: True when the job that leaves
    ``other`` runs at the same time as this one."""
    Path(mine).touch()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if Path(other).exists():
            return True
        time.sleep(0.01)
    return False


def fail(message: str):
    raise ValueError(message)


def unpicklable():
    return lambda: None
