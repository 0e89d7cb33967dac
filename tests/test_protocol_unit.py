"""The server-side programs' error kinds all map to documented exit codes.

The kinds are read from the programs' source (every ``AgentError(kind, ...)``,
``BuildError(kind, ...)`` and ``"kind": ...`` literal), so a kind added there without a
mapping here fails this test instead of reaching a user as the wrong exit code.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

import pytest

from jupyter_tether import launch, provision
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.remote import protocol

README = Path(__file__).resolve().parents[1] / "README.md"


def raised_kinds(program: str, error_class: str) -> set[str]:
    source = resources.files("jupyter_tether.remote").joinpath(program).read_text()
    kinds: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == error_class
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            kinds.add(str(node.args[0].value))
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "kind"
                    and isinstance(value, ast.Constant)
                ):
                    kinds.add(str(value.value))
    return kinds


def documented_codes() -> set[int]:
    table = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}


@pytest.mark.parametrize(
    ("program", "error_class", "codes"),
    [
        ("agent.py", "AgentError", protocol.AGENT_CODES),
        ("builder.py", "BuildError", protocol.BUILDER_CODES),
    ],
)
def test_every_kind_a_program_raises_is_mapped(
    program: str, error_class: str, codes: dict[str, ExitCode]
) -> None:
    kinds = raised_kinds(program, error_class)
    assert len(kinds) >= 5, kinds  # the reader found the raises at all
    assert kinds - codes.keys() == set()


def test_the_interpreter_check_kind_is_mapped() -> None:
    # remote/__init__.py answers no_python itself when the interpreter is missing.
    source = resources.files("jupyter_tether.remote").joinpath("__init__.py").read_text()
    assert '"kind": "no_python"' in source
    assert protocol.AGENT_CODES["no_python"] == ExitCode.REMOTE_ENV


def test_every_mapped_code_is_documented() -> None:
    documented = documented_codes()
    assert {0, 9, 10} <= documented
    for codes in (protocol.AGENT_CODES, protocol.BUILDER_CODES):
        assert {int(code) for code in codes.values()} <= documented
    assert {int(code) for code in ExitCode} <= documented


def test_an_unknown_server_is_exit_9() -> None:
    err = launch.agent_error("aura", {"ok": False, "kind": "not_found", "message": "no server"})
    assert err.code == ExitCode.NOT_FOUND
    assert int(err.code) == 9


def test_builder_failures_are_provisioning_failures() -> None:
    assert set(protocol.BUILDER_CODES.values()) == {ExitCode.PROVISION}
    err = provision.builder_error("aura", {"ok": False, "kind": "no_wheel", "message": "x"})
    assert isinstance(err, TetherError)
    assert err.code == ExitCode.PROVISION


def test_an_unknown_kind_is_a_bug() -> None:
    assert protocol.exit_code(protocol.AGENT_CODES, "no-such-kind") == ExitCode.INTERNAL
