"""Starting, checking and stopping servers on the remote, through the agent."""

from __future__ import annotations

import secrets
from typing import Any

from jupyter_tether import remote, ssh
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.remote import protocol


def new_token() -> str:
    """48 random hex digits: URL-safe, and nothing in it needs quoting anywhere."""
    return secrets.token_hex(24)


def agent_python(profile: Profile, found: Probe) -> str:
    """The interpreter the agent runs under: the one belonging to the Jupyter we manage."""
    if profile.env:
        return profile.env.rstrip("/") + "/bin/python"
    py = found.jupyter_python()
    if py:
        return py
    raise TetherError(
        f"{profile.ssh}: Jupyter is not installed on the server (no `jupyter` on the login PATH)",
        hint=f"point the profile at an environment that has it: [hosts.{profile.name}] "
        f'env = "~/path/to/venv"; or install it there with `pip install --user jupyterlab`',
        code=ExitCode.REMOTE_ENV,
    )


def agent_error(dest: str, answer: dict[str, Any]) -> TetherError:
    kind = str(answer.get("kind", "error"))
    return TetherError(
        f"{dest}: {answer.get('message', 'the remote helper failed')}",
        hint=str(answer.get("hint") or "") or None,
        code=protocol.exit_code(protocol.AGENT_CODES, kind),
        details=("last lines of the server log:\n" + answer["log_tail"])
        if answer.get("log_tail")
        else None,
    )


def call(target: ssh.Target, python: str, request: dict[str, Any], timeout: float = 180) -> Any:
    answer = remote.call_agent(target, python, request, timeout=timeout)
    if not answer.get("ok"):
        raise agent_error(target.destination, answer)
    return answer


def start(
    target: ssh.Target,
    profile: Profile,
    found: Probe,
    *,
    python: str,
    transport: str,
) -> dict[str, Any]:
    """Start the profile's server, or reuse a healthy one. The token travels on stdin."""
    request = {
        "op": "up",
        "name": profile.name,
        "token": new_token(),
        "app": profile.app,
        "env": profile.env,
        "root_dir": profile.root_dir,
        "nice": profile.nice,
        "modules": list(profile.modules),
        "module_init": found.module_init,
        "env_vars": dict(profile.env_vars),
        "path": found.login_path,
        "transport": transport,
        "startup_timeout": profile.startup_timeout,
        "run_sh": remote.read("run.sh"),
    }
    result: dict[str, Any] = call(target, python, request, timeout=profile.startup_timeout + 60)
    return result
