"""`tether demo`: try jupyter-tether without a server of your own.

Starts a throwaway sshd on 127.0.0.1 for the current user (its own host key, client key
and ssh config, nothing in ~/.ssh is touched) and runs the real `tether up` against it,
which provisions Python + JupyterLab on the "server" side as it would anywhere.  On a
terminal it waits for Enter or Ctrl-C and then takes everything down again; elsewhere
it checks the server answers and tears down at once (unless --keep).
"""

from __future__ import annotations

import getpass
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_tether import demo_client, demo_sshd, jupyter_api, state
from jupyter_tether.commands import down, up
from jupyter_tether.errors import ExitCode, TetherError

ALIAS = "tether-demo"


def demo(
    *, browser: bool = True, as_json: bool = False, keep: bool = False, verbose: bool = False
) -> int:
    user = getpass.getuser()
    work = Path(tempfile.mkdtemp(prefix="tether-demo-"))

    def say(text: str) -> None:
        if not as_json:
            print(text, file=sys.stderr)

    say(f"• sandbox  a throwaway sshd on 127.0.0.1 for {user} (in {work})")
    server = demo_sshd.start_sshd(work / "sshd", users=[user])
    try:
        config = demo_client.write_ssh_config(
            work / "ssh_config", [demo_client.host_entry(server, ALIAS, user=user)]
        )
        # No `env`: the sandbox account has no Jupyter, so `up` provisions one, exactly
        # as on a real server (uv copied over, an environment built in the home dir).
        rc = up.up(
            ALIAS,
            ssh_config=config,
            browser=browser,
            as_json=as_json,
            verbose=verbose,
        )
        rec = state.load(ALIAS)
        if rec is None or jupyter_api.status(rec.local_port, rec.token) is None:
            raise TetherError(
                "the demo server did not answer through its forward",
                hint="rerun with --verbose",
                code=ExitCode.SERVER_START,
            )
        if keep:
            say(
                f"\nThe demo keeps running. Stop it with `tether down {ALIAS}` and "
                f"`kill {server.pid}` (the sandbox sshd)."
            )
            return rc
        if sys.stdin.isatty():
            say("\nJupyterLab is up at the URL above. Press Enter (or Ctrl-C) to stop the demo.")
            try:
                sys.stdin.readline()
            except KeyboardInterrupt:
                pass
        say("• cleanup  stopping the server and the sandbox")
        down.down(ALIAS, ssh_config=config)
        return rc
    finally:
        if not keep:
            demo_sshd.stop_sshd(server)
            shutil.rmtree(work, ignore_errors=True)
