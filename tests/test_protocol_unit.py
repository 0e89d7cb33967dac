"""The server-side programs' error kinds all map to documented exit codes.

The kinds are read from the source of every file a program ships with (every
``RemoteError(kind, ...)`` and ``"kind": ...`` literal, in the files ``assemble.py``
bundles for it), so a kind added there without a mapping fails this test instead of
reaching a user as the wrong exit code.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from jupyter_tether import assemble, clients, ssh
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.remote import protocol

README = Path(__file__).resolve().parents[1] / "README.md"


def kinds_in(source: str) -> set[str]:
    kinds: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "RemoteError"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            kinds.add(str(node.args[0].value))
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "kind":
                    kinds.update(_constants(value))
    return kinds


def _constants(node: ast.expr) -> set[str]:
    """The strings a kind's value can be: a literal, or either branch of ``a if c else b``."""
    if isinstance(node, ast.Constant):
        return {str(node.value)}
    if isinstance(node, ast.IfExp):
        return _constants(node.body) | _constants(node.orelse)
    raise AssertionError(f"a kind that is not a literal, line {node.lineno}")


def raised_kinds(program: str) -> set[str]:
    return set().union(*(kinds_in(text) for text in assemble.files(program).values()))


def documented_codes() -> set[int]:
    table = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}


@pytest.mark.parametrize(
    ("program", "kinds", "codes"),
    [
        ("agent", protocol.AGENT_KINDS, clients.AGENT_CODES),
        ("builder", protocol.BUILDER_KINDS, clients.BUILDER_CODES),
    ],
)
def test_every_kind_a_program_raises_is_mapped(
    program: str, kinds: frozenset[str], codes: dict[str, ExitCode]
) -> None:
    raised = raised_kinds(program)
    assert len(raised) >= 5, raised  # the reader found the raises at all
    assert raised - kinds == set(), "raised but not in remote/protocol.py"
    assert kinds - codes.keys() == set(), "in remote/protocol.py but given no exit code"


def test_core_failures_are_in_both_programs() -> None:
    core = kinds_in(assemble.files("agent")["core.py"])
    assert core == {"unsafe_dir", "locked", "bad_request", "disk_full", "os_error"}
    assert core <= protocol.CORE_KINDS


def test_the_interpreter_check_kind_is_mapped() -> None:
    # clients.script answers no_python itself when the interpreter is missing.
    assert '"kind": "no_python"' in inspect.getsource(clients.script)
    assert clients.AGENT_CODES["no_python"] == ExitCode.REMOTE_ENV
    assert clients.BUILDER_CODES["no_python"] == ExitCode.PROVISION


def test_every_mapped_code_is_documented() -> None:
    documented = documented_codes()
    assert {0, 9, 10} <= documented
    for codes in (clients.AGENT_CODES, clients.BUILDER_CODES):
        assert {int(code) for code in codes.values()} <= documented
    assert {int(code) for code in ExitCode} <= documented


def test_help_lists_every_exit_code() -> None:
    from jupyter_tether.cli import EPILOG

    listed = {int(m) for m in re.findall(r"(\d+) [a-z]", EPILOG)}
    assert {int(code) for code in ExitCode} <= listed


TARGET = ssh.make_target("aura")


def test_an_unknown_server_is_exit_9() -> None:
    agent = clients.Agent(TARGET, "python3")
    err = agent.error({"ok": False, "kind": "not_found", "message": "no server"})
    assert err.code == ExitCode.NOT_FOUND
    assert int(err.code) == 9
    assert err.message == "aura: no server"


def test_builder_failures_are_provisioning_failures() -> None:
    assert set(clients.BUILDER_CODES.values()) == {ExitCode.PROVISION}
    builder = clients.Builder(TARGET, "python3")
    err = builder.error({"ok": False, "kind": "no_wheel", "message": "x", "output": "uv said"})
    assert isinstance(err, TetherError)
    assert err.code == ExitCode.PROVISION
    assert err.details == "uv said"
    assert err.hint == "rerun with --verbose"


def test_an_unknown_kind_is_a_bug() -> None:
    assert clients.exit_code(clients.AGENT_CODES, "no-such-kind") == ExitCode.INTERNAL
