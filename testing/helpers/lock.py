"""One run at a time on a machine: the sandbox accounts and their homes are shared."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from jupyter_tether.errors import TetherError
from jupyter_tether.paths import hold_lock


@contextlib.contextmanager
def exclusive(
    path: Path, *, timeout: float, busy: str, waiting: str | None = None
) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block, waiting ``timeout`` s at most.

    Raises a :class:`TetherError` saying ``busy`` when it stays taken; says ``waiting``
    on stderr once if it has to wait at all.
    """
    error = TetherError(busy)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold_lock(path, timeout=0, busy=error))
        except TetherError as exc:
            if exc is not error:
                raise
            if waiting is not None:
                print(waiting, file=sys.stderr)
            stack.enter_context(hold_lock(path, timeout=timeout, busy=error))
        yield
