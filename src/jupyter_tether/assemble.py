"""One server-side program as one script: its entry module, what it imports, its snippets.

The programs in ``jupyter_tether/remote`` are split by concern and share ``core.py``;
the server has none of them installed. Each call ships the program whole on ssh's stdin
(as sshuttle does with its ``assembler.py``), so the two sides can never run different
versions. :func:`bundle` walks the entry module's relative imports and its
``core.snippet("NAME")`` calls, and appends those files to ``remote/boot.py``, which
imports them on the server under their real names.
"""

from __future__ import annotations

import ast
from functools import cache

from jupyter_tether import remote

PROGRAMS = ("agent", "builder")


def _references(source: str) -> tuple[list[str], list[str]]:
    """The sibling modules ``source`` imports (``from . import x``, ``from .x import y``)
    and the snippets it reads (``core.snippet("x.py")`` or ``snippet("x.py")``)."""
    modules: list[str] = []
    snippets: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                modules.append(node.module)
            else:
                modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "snippet" and isinstance(node.args[0].value, str):
                snippets.append(node.args[0].value)
    return modules, snippets


@cache
def files(program: str) -> dict[str, str]:
    """The files ``program`` needs, by path relative to ``remote/``, entry first."""
    out: dict[str, str] = {}
    todo = [program]
    while todo:
        module = todo.pop(0)
        path = f"{module}.py"
        if path in out:
            continue
        out[path] = remote.read(path)
        modules, snippets = _references(out[path])
        todo.extend(modules)
        for name in snippets:
            out[f"snippets/{name}"] = remote.read(f"snippets/{name}")
    return out


@cache
def bundle(program: str) -> str:
    """``program`` (``"agent"`` or ``"builder"``) as one Python script.

    Run with no arguments it reads one request on stdin; the agent's bundle is also the
    file the autostart hook runs as ``python agent.py revive NAME``.
    """
    if program not in PROGRAMS:
        raise ValueError(f"no server-side program called {program!r}")
    return (
        remote.read("boot.py")
        + f"\n\nFILES = {files(program)!r}\n\n"
        + 'if __name__ in ("__main__", "__tether_program__"):\n'
        + f"    run(FILES, {program!r})\n"
    )
