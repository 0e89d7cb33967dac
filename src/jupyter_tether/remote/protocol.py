"""What the server-side programs answer with when they fail: their error kinds.

``agent.py`` and ``builder.py`` each answer one JSON object; on failure it carries a
``kind`` from the sets below. The workstation turns a kind into a documented exit code
(README, "Exit codes") through :data:`AGENT_CODES` and :data:`BUILDER_CODES`, and
``tests/test_protocol_unit.py`` pins that every kind either program can raise is listed
here, so a new kind cannot reach a user as the wrong exit code.
"""

from __future__ import annotations

from jupyter_tether.errors import ExitCode

# The request loop's own kinds, shared by both programs.
_LOOP = {
    "bad_request": ExitCode.INTERNAL,  # the workstation sent something the program rejects
    "disk_full": ExitCode.REMOTE_ENV,
    "os_error": ExitCode.REMOTE_ENV,
}

AGENT_CODES: dict[str, ExitCode] = {
    **_LOOP,
    "start_failed": ExitCode.SERVER_START,
    "timeout": ExitCode.SERVER_START,
    "locked": ExitCode.SERVER_START,
    "not_found": ExitCode.NOT_FOUND,  # no server of that name is recorded on the server
    "no_python": ExitCode.REMOTE_ENV,  # the interpreter is missing (remote/__init__.py)
    "jupyter_not_found": ExitCode.REMOTE_ENV,
    "bad_root_dir": ExitCode.REMOTE_ENV,
    "unsafe_dir": ExitCode.REMOTE_ENV,
    "sock_path_too_long": ExitCode.REMOTE_ENV,
    "no_autostart": ExitCode.REMOTE_ENV,
    "elsewhere": ExitCode.REMOTE_ENV,
}

# Every builder failure is a provisioning failure (exit 10), whatever its kind.
BUILDER_CODES: dict[str, ExitCode] = dict.fromkeys(
    (
        *_LOOP,
        "no_python",
        "locked",
        "bad_kernel",
        "venv_failed",
        "install_failed",
        "import_failed",
        "conflict",
        "no_package",
        "no_wheel",
        "no_env",
    ),
    ExitCode.PROVISION,
)


def exit_code(codes: dict[str, ExitCode], kind: str) -> ExitCode:
    """The exit code for ``kind``; an unknown kind is a bug in jupyter-tether."""
    return codes.get(kind, ExitCode.INTERNAL)
