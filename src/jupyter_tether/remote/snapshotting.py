"""The agent's side of ``tether snapshots``: list the snapshots under a root dir, and
put one back (``snapshots.py`` takes them, inside Jupyter, before saves)."""

from __future__ import annotations

import os

from . import snapshots
from .core import Json, RemoteError


def _root(req: Json) -> str:
    root = os.path.normpath(os.path.expanduser(str(req.get("root_dir") or "~")))
    if not os.path.isdir(root):
        raise RemoteError(
            "bad_root_dir",
            "root_dir %s does not exist on the server" % root,
            "check root_dir in the profile",
        )
    return root


def _path(req: Json) -> str:
    """The notebook path asked for, relative to the root dir ('' for all of them)."""
    path = str(req.get("path") or "").strip("/")
    try:
        if path:
            snapshots.snapshot_dir("/", path)  # refuses paths that leave the root
    except ValueError as exc:
        raise RemoteError("bad_request", str(exc), "give a path under the root dir") from None
    return path


def op_snapshots_list(req: Json) -> Json:
    root = _root(req)
    return {"root_dir": root, "snapshots": snapshots.listing(root, _path(req) or None)}


def op_snapshots_restore(req: Json) -> Json:
    root = _root(req)
    path, sid = _path(req), str(req["id"])
    rel = snapshots.find(root, sid, path or None)
    if rel is None:
        where = " of %s" % path if path else ""
        raise RemoteError(
            "not_found",
            "no snapshot %s%s under %s" % (sid, where, root),
            "`tether snapshots NAME` lists them",
        )
    keep = int(req.get("keep") or snapshots.KEEP)
    return snapshots.restore(root, rel, sid, keep)
