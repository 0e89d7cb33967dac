"""jupyter-tether's agent: the server side of starting, checking and stopping servers.

Standard library only, Python >= 3.8 (it runs under the Python of the Jupyter it
manages). The workstation ships it with the modules it imports as one stream
(``boot.py``) and sends one JSON request on stdin (never in argv: the request may carry
the token); the answer is one JSON line (``core.serve``). ``core.py`` has the layout of
the files it keeps.
"""

from __future__ import annotations

from typing import Dict, List

from . import autostart, core, jobs, launching, servers, snapshotting, syncing

OPS: Dict[str, core.Op] = {
    "up": launching.op_up,
    "status": servers.op_status,
    "down": servers.op_down,
    "logs": servers.op_logs,
    "revive": launching.op_revive,
    "autostart": autostart.op_autostart,
    "job_submit": jobs.op_job_submit,
    "job_status": jobs.op_job_status,
    "job_cancel": jobs.op_job_cancel,
    "sync_list": syncing.op_sync_list,
    "sync_read": syncing.op_sync_read,
    "sync_write": syncing.op_sync_write,
    "backups_list": syncing.op_backups_list,
    "backup_restore": syncing.op_backup_restore,
    "snapshots_list": snapshotting.op_snapshots_list,
    "snapshots_restore": snapshotting.op_snapshots_restore,
}


def main(argv: List[str]) -> int:
    return core.serve(OPS, argv)
