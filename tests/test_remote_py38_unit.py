"""The server-side programs keep their promise to run under any Python >= 3.8.

The servers people log in to often have only an old system python3, so every ``.py``
file shipped from ``jupyter_tether/remote`` must parse as Python 3.8 and import nothing
outside the standard library.
"""

from __future__ import annotations

import ast
import sys
from importlib import resources

import pytest

REMOTE = resources.files("jupyter_tether.remote")
# The files that travel to the server (the package's __init__ and protocol stay here).
SHIPPED = sorted(
    p.name
    for p in REMOTE.iterdir()
    if p.name.endswith(".py") and p.name not in ("__init__.py", "protocol.py")
)


def test_there_are_programs_to_check() -> None:
    assert {"agent.py", "builder.py"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_parses_as_python_38(name: str) -> None:
    source = REMOTE.joinpath(name).read_text(encoding="utf-8")
    ast.parse(source, filename=name, feature_version=(3, 8))


@pytest.mark.parametrize("name", SHIPPED)
def test_imports_only_the_standard_library(name: str) -> None:
    tree = ast.parse(REMOTE.joinpath(name).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, name
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()
