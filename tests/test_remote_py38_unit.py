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
# Every Python file in remote/ but the package's __init__, which stays on the workstation;
# protocol.py is held to the same promise although only the workstation imports it.
SHIPPED = sorted(
    [p.name for p in REMOTE.iterdir() if p.name.endswith(".py") and p.name != "__init__.py"]
    + [
        f"snippets/{p.name}"
        for p in REMOTE.joinpath("snippets").iterdir()
        if p.name.endswith(".py")
    ]
)


def test_there_are_programs_to_check() -> None:
    assert {"agent.py", "builder.py", "core.py", "boot.py", "snippets/listener.py"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_parses_as_python_38(name: str) -> None:
    source = REMOTE.joinpath(*name.split("/")).read_text(encoding="utf-8")
    ast.parse(source, filename=name, feature_version=(3, 8))


@pytest.mark.parametrize("name", SHIPPED)
def test_imports_only_the_standard_library(name: str) -> None:
    tree = ast.parse(REMOTE.joinpath(*name.split("/")).read_text(encoding="utf-8"))
    imported: set[str] = set()
    # A fallback under `except ImportError` is for interpreters that lack the module.
    fallbacks = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Try)
        for handler in node.handlers
        if isinstance(handler.type, ast.Name) and handler.type.id == "ImportError"
        for inner in ast.walk(handler)
    }
    for node in ast.walk(tree):
        if id(node) in fallbacks:
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, name
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()
