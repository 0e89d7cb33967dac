"""What runs on the server: real files, shipped over ssh for every call.

``probe.sh`` (POSIX sh) learns about the server in one round trip; ``run.sh`` runs
Jupyter in the foreground under tmux/screen/setsid and restarts it; the agent
(``agent.py``: launching, health and stop, autostart) and the builder (``builder.py``:
interpreters, environments, checks) are stdlib-only Python >= 3.8 sharing ``core.py``,
with ``boot.py`` to load them from one stream (``jupyter_tether/assemble.py``) and
``snippets/`` for the small programs they run under other interpreters.
``protocol.py`` types the requests and answers.

This ``__init__`` is the workstation's handle on those files; it is not shipped.
"""

from __future__ import annotations

import shlex
from functools import cache
from importlib import resources

# The server-side roots as sh expressions (remote/core.py defines them for Python).
STATE_EXPR = '"${XDG_STATE_HOME:-$HOME/.local/state}/jupyter-tether"'
DATA_EXPR = '"${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether"'


@cache
def read(name: str) -> str:
    """The text of a file in this package, by its path relative to it."""
    return resources.files(__package__).joinpath(*name.split("/")).read_text(encoding="utf-8")


def shell_path(path: str) -> str:
    """Quote a server path for sh, keeping a leading ``~/`` meaning the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def probe_script() -> str:
    return f"TETHER_STATE={STATE_EXPR}\nTETHER_DATA={DATA_EXPR}\n{read('probe.sh')}"
