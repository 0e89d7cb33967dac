"""The ssh ControlMasters the tool leaves behind (they persist by design)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def kill_masters(runtime: Path) -> None:
    """End every ssh ControlMaster whose socket is in ``runtime``'s ``cm`` directory."""
    cm = runtime / "cm"
    if not cm.is_dir():
        return
    for sock in cm.iterdir():
        if sock.is_socket():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
                capture_output=True,
                timeout=10,
                check=False,
            )
