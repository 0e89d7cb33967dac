"""Starting a server on the remote, through the agent (``clients.Agent``)."""

from __future__ import annotations

import secrets

from jupyter_tether import remote, ssh
from jupyter_tether.clients import Agent
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


def snapshot_settings(profile: Profile) -> protocol.SnapshotSettings | None:
    """With keep_outputs, how the server snapshots notebooks before saves (README:
    Snapshots); a server of its own and a batch job alike."""
    if not profile.keep_outputs:
        return None
    return {"every": profile.snapshot_every, "keep": profile.snapshot_keep}


def start(
    target: ssh.Target,
    profile: Profile,
    found: Probe,
    *,
    python: str,
    transport: str,
) -> protocol.UpAnswer:
    """Start the profile's server, or reuse a healthy one. The token travels on stdin."""
    request: protocol.UpRequest = {
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
        "snapshots": snapshot_settings(profile),
    }
    return Agent(target, python).up(request, timeout=profile.startup_timeout + 60)
