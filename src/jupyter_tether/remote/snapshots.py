"""Snapshots of notebooks, the safety net for keep_outputs (README: Snapshots).

jupyter-server-documents keeps the notebook in a server-side room and saves it from
there; its #305 reports a whole notebook lost when a freed room met a reconnecting
client. So, while keep_outputs is on, every save of a notebook passes through
:func:`pre_save_hook` first (``FileContentsManager.pre_save_hook``, which the agent
puts in the Jupyter config), and the file as it is on disk is copied aside before it is
overwritten when

- the last snapshot of it is older than ``every`` seconds (every few minutes while it
  changes, and always before the first save after an absence longer than that: the
  one a reconnecting client causes), or
- the save would drop a cell that is on disk, or every output.

Snapshots live in ``ROOT_DIR/.tether-snapshots/PATH/ID.ipynb`` (hidden from Jupyter's
file browser; directories 0700, files 0600), at most ``keep`` per notebook, the
oldest going first. Standard library only, Python >= 3.8: this file runs inside the
Jupyter server as well as in the agent, and it is shipped to the server as it is.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

DIR = ".tether-snapshots"
EVERY = 300.0  # seconds between two snapshots of a notebook that changes
KEEP = 20  # snapshots kept per notebook
Json = Dict[str, Any]
# The agent fills these from the launch request (the Jupyter config it writes).
settings: Json = {"every": EVERY, "keep": KEEP}


def snapshot_dir(root_dir: str, path: str) -> str:
    """Where the snapshots of the notebook ``path`` (relative to ``root_dir``) go."""
    rel = os.path.normpath(path.strip("/"))
    if rel.startswith("..") or os.path.isabs(rel) or rel.split(os.sep)[0] == DIR:
        raise ValueError("not a notebook under the root dir: %s" % path)
    return os.path.join(root_dir, DIR, rel)


def new_id(now: float, taken: Sequence[str]) -> str:
    """A snapshot id that sorts by time: ``20261204T031502.123456Z``, unique in ``taken``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    base = "%s.%06dZ" % (stamp, int((now % 1) * 1e6))
    sid, n = base, 1
    while sid in taken:
        sid, n = "%s-%d" % (base, n), n + 1
    return sid


def id_time(sid: str) -> Optional[float]:
    """When the snapshot ``sid`` was taken (from its id), or None for a foreign name."""
    try:
        stamp, _, micro = sid.split("-", maxsplit=1)[0].rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S")) + int(micro or 0) / 1e6
    except ValueError:
        return None


def ids(folder: str) -> List[str]:
    """The snapshot ids in ``folder``, oldest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n[: -len(".ipynb")] for n in names if n.endswith(".ipynb"))


def to_drop(existing: Sequence[str], keep: int) -> List[str]:
    """Which of ``existing`` (ids, oldest first) go so that ``keep`` remain."""
    extra = len(existing) - max(keep, 1)
    return list(existing[:extra]) if extra > 0 else []


def _private_dirs(root_dir: str, folder: str) -> None:
    here = root_dir
    for part in os.path.relpath(folder, root_dir).split(os.sep):
        here = os.path.join(here, part)
        try:
            os.mkdir(here, 0o700)
        except FileExistsError:
            if os.path.islink(here) or not os.path.isdir(here):
                raise ValueError("%s is not a directory" % here) from None


def take(root_dir: str, path: str, data: bytes, keep: int, now: Optional[float] = None) -> str:
    """Store ``data`` (a notebook file's bytes) as a new snapshot of ``path``; drop the
    oldest beyond ``keep``. Returns the new id."""
    folder = snapshot_dir(root_dir, path)
    _private_dirs(root_dir, folder)
    existing = ids(folder)
    sid = new_id(time.time() if now is None else now, existing)
    target = os.path.join(folder, sid + ".ipynb")
    tmp = target + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    for old in to_drop([*existing, sid], keep):
        try:
            os.unlink(os.path.join(folder, old + ".ipynb"))
        except OSError:
            pass
    return sid


def _cells(nb: Any) -> List[Json]:
    cells = nb.get("cells") if isinstance(nb, dict) else None
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def _outputs(nb: Any) -> int:
    return sum(len(c.get("outputs") or []) for c in _cells(nb))


def loses(old: Any, new: Any) -> bool:
    """Whether saving ``new`` over ``old`` drops a cell of ``old`` (by id; by count
    where cells have no ids) or every one of its outputs."""
    old_cells, new_cells = _cells(old), _cells(new)
    old_ids = [c.get("id") for c in old_cells]
    if old_ids and all(old_ids):
        if set(old_ids) - {c.get("id") for c in new_cells}:
            return True
    elif len(new_cells) < len(old_cells):
        return True
    return _outputs(old) > 0 and _outputs(new) == 0


def due(last: Optional[float], now: float, every: float) -> bool:
    """A time-based snapshot is due: none yet, the last one ``every`` seconds ago, or
    the clock went back past it (else none would be due until it caught up)."""
    return last is None or now - last >= every or now < last


def _last_time(folder: str) -> Optional[float]:
    found = ids(folder)
    return id_time(found[-1]) if found else None


def _same_as_last(folder: str, data: bytes) -> bool:
    found = ids(folder)
    if not found:
        return False
    try:
        with open(os.path.join(folder, found[-1] + ".ipynb"), "rb") as f:
            return f.read() == data
    except OSError:
        return False


def before_save(root_dir: str, path: str, new: Any, now: Optional[float] = None) -> Optional[str]:
    """Snapshot the file ``path`` as it is on disk if saving ``new`` over it calls for one
    (see the module's docstring). Returns the new id, or None."""
    if not path.endswith(".ipynb"):
        return None
    try:
        folder = snapshot_dir(root_dir, path)
        with open(os.path.join(root_dir, path.strip("/")), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None  # a new file, or one outside the root: nothing on disk to keep
    try:
        old = json.loads(data.decode("utf-8"))
    except ValueError:
        old = None  # torn or not JSON: still worth keeping if it is time
    now = time.time() if now is None else now
    every, keep = float(settings["every"]), int(settings["keep"])
    if not due(_last_time(folder), now, every) and (old is None or not loses(old, new)):
        return None
    if _same_as_last(folder, data):
        return None  # kept already: the file has not changed since
    return take(root_dir, path, data, keep, now)


def pre_save_hook(model: Json, path: str, contents_manager: Any, **kwargs: Any) -> None:
    """``FileContentsManager.pre_save_hook``: never fails the save it runs before (a
    failed snapshot is logged; losing the user's save would be worse)."""
    if model.get("type") != "notebook":
        return
    try:
        before_save(str(contents_manager.root_dir), path, model.get("content"))
    except Exception:
        log = getattr(contents_manager, "log", None)
        if log is not None:
            log.exception("jupyter-tether: could not snapshot %s before saving it", path)


# --- listing and restoring (the agent) -------------------------------------------------


def describe(folder: str, sid: str) -> Json:
    """One snapshot: its id, when (epoch seconds), size in bytes, and cells (None when
    the file does not parse)."""
    file = os.path.join(folder, sid + ".ipynb")
    st = os.stat(file)
    try:
        with open(file, "rb") as f:
            cells: Optional[int] = len(_cells(json.loads(f.read().decode("utf-8"))))
    except ValueError:
        cells = None
    when = id_time(sid)
    return {
        "id": sid,
        "time": st.st_mtime if when is None else when,
        "size": st.st_size,
        "cells": cells,
    }


def listing(root_dir: str, path: Optional[str]) -> Dict[str, List[Json]]:
    """The snapshots of ``path``, or of every notebook that has some: path -> newest first."""
    base = os.path.join(root_dir, DIR)
    if path:
        folders = {path.strip("/"): snapshot_dir(root_dir, path)}
    else:
        folders = {}
        for here, _dirs, files in os.walk(base):
            if any(f.endswith(".ipynb") for f in files):
                folders[os.path.relpath(here, base)] = here
    out: Dict[str, List[Json]] = {}
    for rel, folder in sorted(folders.items()):
        found = [describe(folder, sid) for sid in reversed(ids(folder))]
        if found:
            out[rel] = found
    return out


def find(root_dir: str, sid: str, path: Optional[str]) -> Optional[str]:
    """The notebook path (relative) whose snapshots hold ``sid``."""
    for rel, found in listing(root_dir, path).items():
        if any(s["id"] == sid for s in found):
            return rel
    return None


def restore(root_dir: str, rel: str, sid: str, keep: int) -> Json:
    """Put snapshot ``sid`` back at ``rel``; what is there now becomes a snapshot first
    (even if it is the same as the newest, so that the restore can be undone)."""
    folder = snapshot_dir(root_dir, rel)
    with open(os.path.join(folder, sid + ".ipynb"), "rb") as f:
        data = f.read()
    target = os.path.join(root_dir, rel)
    saved: Optional[str] = None
    mode = 0o600
    try:
        with open(target, "rb") as f:
            current = f.read()
        mode = os.stat(target).st_mode & 0o777
        # Kept one more than usual so that the one being restored stays too.
        saved = take(root_dir, rel, current, max(keep, len(ids(folder)) + 1))
    except FileNotFoundError:
        pass  # deleted since: nothing to keep, the snapshot comes back
    tmp = "%s.~tether-restore" % target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)  # in one step: Jupyter never reads a half-written file
    return {"path": rel, "restored": sid, "saved_as": saved}
