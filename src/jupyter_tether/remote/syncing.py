"""The agent's side of ``tether sync``: list, read and write files under a synced folder.

Every decision is made on the workstation (``jupyter_tether/sync.py``) from content
hashes; this side only answers what is there and carries out writes that still find
what the workstation saw. A file is only offered while it is complete: Jupyter saves a
notebook by rewriting it in place with the old content in ``.~NAME`` meanwhile
(jupyter_server's ``atomic_writing`` with ``use_atomic_writing``'s default), so a
``.~NAME`` beside it, a change in the last seconds, or a notebook that does not parse
means "come back later". Every file a write replaces is first copied into
``backups/NAME/STAMP/`` under the state root.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence

from . import core
from .core import Json, RemoteError

SETTLE = 2.0  # seconds a file must have been left alone before it is read
BACKUPS_KEPT = 20  # backup stamps kept per server


def folder(req: Json) -> str:
    root = os.path.expanduser(str(req.get("root_dir") or "~"))
    path = os.path.join(root, os.path.expanduser(str(req["remote"])))
    return os.path.normpath(path)


def excluded(rel: str, patterns: Sequence[str]) -> bool:
    """``dir/`` patterns match a directory anywhere, others the name or the whole path."""
    parts = rel.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatchcase(p, pattern[:-1]) for p in parts[:-1]):
                return True
        elif fnmatch.fnmatchcase(parts[-1], pattern) or fnmatch.fnmatchcase(rel, pattern):
            return True
    return False


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staging_root() -> str:
    """Where rsync puts what the workstation pushes before a write takes it (0700)."""
    return os.path.join(core.state_root(), "sync-staging")


def _rsync() -> Optional[str]:
    """This server's rsync, for big transfers (``jupyter_tether/transfer.py``), with a
    private staging directory for it to write into; None without one."""
    found = shutil.which("rsync")
    if found:
        os.makedirs(staging_root(), 0o700, exist_ok=True)
        os.chmod(staging_root(), 0o700)
    return found


def _incomplete(path: str, data: bytes, now: float, mtime: float) -> Optional[str]:
    head, name = os.path.split(path)
    if os.path.exists(os.path.join(head, ".~" + name)):
        return "being saved (%s is there)" % (".~" + name)
    if abs(now - mtime) < SETTLE:
        return "changed in the last %.0f s" % SETTLE
    if name.endswith(".ipynb"):
        try:
            json.loads(data.decode("utf-8"))
        except ValueError:
            return "not a complete notebook (it does not parse)"
    return None


def _read(path: str, max_size: int, now: float) -> Json:
    st = os.lstat(path)
    if max_size and st.st_size > max_size:
        return {"skip": "larger than the limit (%d bytes)" % st.st_size}
    with open(path, "rb") as f:
        data = f.read()
    why = _incomplete(path, data, now, st.st_mtime)
    if why:
        return {"defer": why}
    if os.lstat(path).st_mtime != st.st_mtime:
        return {"defer": "changed while it was read"}
    return {"sha256": digest(data), "size": len(data), "data": data}


def _walk(base: str, patterns: List[str]) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not excluded(rel_dir + d + "/x", patterns))
        for name in sorted(filenames):
            rel = rel_dir + name
            full = os.path.join(dirpath, name)
            if name.startswith(".~") or excluded(rel, patterns) or os.path.islink(full):
                continue
            found.append(rel)
    return found


def op_sync_list(req: Json) -> Json:
    """Every file under the folder with its hash; the incomplete ones as deferred."""
    base = folder(req)
    found = _rsync()
    tools = {"rsync": found, "staging": staging_root() if found else None}
    if not os.path.isdir(base):
        return dict(tools, folder=base, exists=False, files={}, deferred={}, skipped={})
    patterns = list(req.get("exclude") or [])
    max_size = int(req.get("max_size") or 0)
    now = time.time()
    files: Json = {}
    deferred: Dict[str, str] = {}
    skipped: Dict[str, str] = {}
    for rel in _walk(base, patterns):
        try:
            got = _read(os.path.join(base, rel), max_size, now)
        except OSError as exc:
            deferred[rel] = exc.strerror or str(exc)
            continue
        if "defer" in got:
            deferred[rel] = got["defer"]
        elif "skip" in got:
            skipped[rel] = got["skip"]
        else:
            files[rel] = {"sha256": got["sha256"], "size": got["size"]}
    return dict(tools, folder=base, exists=True, files=files, deferred=deferred, skipped=skipped)


def _safe(base: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(base, rel))
    if not path.startswith(base + os.sep):
        raise RemoteError("bad_request", "%s is outside the synced folder" % rel)
    return path


def op_sync_read(req: Json) -> Json:
    """The contents of ``paths``, each only if complete and still of the hash listed."""
    base = folder(req)
    max_size = int(req.get("max_size") or 0)
    now = time.time()
    out: Json = {}
    deferred: Dict[str, str] = {}
    for rel, want in dict(req.get("paths") or {}).items():
        try:
            got = _read(_safe(base, rel), max_size, now)
        except OSError as exc:
            deferred[rel] = exc.strerror or str(exc)
            continue
        if "data" not in got:
            deferred[rel] = got.get("defer") or got.get("skip") or "unreadable"
        elif got["sha256"] != want:
            deferred[rel] = "changed since it was listed"
        else:
            out[rel] = {"sha256": got["sha256"], "data": base64.b64encode(got["data"]).decode()}
    return {"files": out, "deferred": deferred}


def _current(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return digest(f.read())
    except FileNotFoundError:
        return None


def backup_dir(name: str, stamp: str) -> str:
    return os.path.join(core.state_root(), "backups", name, stamp)


def _prune(name: str) -> None:
    parent = os.path.join(core.state_root(), "backups", name)
    stamps = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
    for old in stamps[:-BACKUPS_KEPT]:
        core.remove_quietly(os.path.join(parent, old))


def _open_notebooks(name: str) -> Optional[List[str]]:
    """Paths (relative to root_dir) of notebooks with a live session in server ``name``,
    or None when that server is not running here."""
    from . import servers

    p = core.Paths(name)
    st = core.read_json(p.state)
    if not st:
        return None
    try:
        code, body = servers.http_request(st, "GET", "/api/sessions", servers.read_token(p))
    except OSError:
        return None
    if code != 200:
        return None
    try:
        sessions = json.loads(body.decode())
    except ValueError:
        return None
    return [str(s.get("path") or "") for s in sessions if isinstance(s, dict)]


def _staged(req: Json) -> Optional[str]:
    """The staging directory rsync wrote this push into, if any: only ever one directly
    under :func:`staging_root`, since it is removed afterwards."""
    name = req.get("staging")
    if not name:
        return None
    name = str(name)
    if "/" in name or os.sep in name or name.startswith("."):
        raise RemoteError("bad_request", "%s is not a staging directory" % name)
    return os.path.join(staging_root(), name)


def _staged_data(staging: str, rel: str, want: str) -> Optional[bytes]:
    """What rsync staged for ``rel``, if it arrived whole (the hash the workstation read)."""
    try:
        with open(_safe(staging, rel), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if digest(data) == want else None


def op_sync_write(req: Json) -> Json:
    """Write files that still have the hash the workstation expects (None: absent).

    A file changed since the workstation listed it is refused (``changed``), a notebook
    with a live Jupyter session is refused unless ``force`` (``open``); every file
    replaced is copied into the backup store first. An item marked ``staged`` is read
    from the staging directory rsync wrote it into (``staging``, removed at the end);
    one that did not arrive there whole is left for the workstation to send
    (``unstaged``).
    """
    staging = _staged(req)
    try:
        return _sync_write(req, staging)
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _sync_write(req: Json, staging: Optional[str]) -> Json:
    base = folder(req)
    os.makedirs(base, exist_ok=True)
    name = str(req["name"])
    stamp = time.strftime("%Y%m%dT%H%M%S") + "-%d" % os.getpid()
    root = os.path.expanduser(str(req.get("root_dir") or "~"))
    live = [] if req.get("force") else (_open_notebooks(name) or [])
    written: List[str] = []
    changed: List[str] = []
    opened: List[str] = []
    backups: List[str] = []
    unstaged: List[str] = []
    for rel, item in dict(req.get("files") or {}).items():
        path = _safe(base, rel)
        if os.path.relpath(path, root).replace(os.sep, "/") in live:
            opened.append(rel)
            continue
        if _current(path) != item.get("expect"):
            changed.append(rel)
            continue
        if item.get("staged"):
            got = _staged_data(staging, rel, str(item["sha256"])) if staging else None
            if got is None:
                unstaged.append(rel)
                continue
            data = got
        else:
            data = base64.b64decode(item["data"])
        if digest(data) != item["sha256"]:
            raise RemoteError("bad_request", "%s arrived damaged" % rel)
        if os.path.exists(path):
            backups.append(back_up(name, stamp, base, rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, data)
        if _current(path) != item["sha256"]:
            raise RemoteError("os_error", "%s does not read back as written" % rel)
        written.append(rel)
    if backups:
        _prune(name)
    return {
        "written": written,
        "changed": changed,
        "open": opened,
        "backups": backups,
        "unstaged": unstaged,
    }


META = ".tether-backup.json"  # in each backup stamp: the folder its paths are under


def back_up(name: str, stamp: str, base: str, rel: str) -> str:
    """Copy ``base/rel`` into the backup stamp ``stamp``; return the copy's path."""
    where = backup_dir(name, stamp)
    saved = os.path.join(where, rel)
    os.makedirs(os.path.dirname(saved), 0o700, exist_ok=True)
    if not os.path.exists(os.path.join(where, META)):
        core.write_private(os.path.join(where, META), json.dumps({"folder": base}))
    with open(os.path.join(base, rel), "rb") as src:
        _write(saved, src.read())
    os.chmod(saved, 0o600)
    return saved


def op_backups_list(req: Json) -> Json:
    """Every backed-up file of server ``name``: stamp, path, size, folder."""
    parent = os.path.join(core.state_root(), "backups", str(req["name"]))
    found = []
    for stamp in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        meta = core.read_json(os.path.join(parent, stamp, META)) or {}
        for dirpath, _dirs, files in os.walk(os.path.join(parent, stamp)):
            for f in sorted(files):
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, os.path.join(parent, stamp)).replace(os.sep, "/")
                if rel == META:
                    continue
                st = os.stat(full)
                found.append(
                    {
                        "stamp": stamp,
                        "path": rel,
                        "size": st.st_size,
                        "folder": meta.get("folder", ""),
                    }
                )
    return {"backups": found}


def op_backup_restore(req: Json) -> Json:
    """Put a backed-up file back where it was; the file there now is backed up first."""
    name, stamp, rel = str(req["name"]), str(req["stamp"]), str(req["path"])
    where = backup_dir(name, stamp)
    if os.sep in stamp or stamp.startswith("."):
        raise RemoteError("bad_request", "%s is not a backup" % stamp)
    meta = core.read_json(os.path.join(where, META))
    source = _safe(where, rel)
    if not meta or not os.path.isfile(source):
        raise RemoteError(
            "not_found", "no backup %s/%s of %s" % (stamp, rel, name), "`tether backups NAME`"
        )
    base = str(meta["folder"])
    target = _safe(base, rel)
    kept = None
    if os.path.exists(target):
        kept = back_up(name, time.strftime("%Y%m%dT%H%M%S") + "-%d" % os.getpid(), base, rel)
    with open(source, "rb") as f:
        data = f.read()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    _write(target, data)
    return {"restored": target, "kept": kept}


def _write(path: str, data: bytes) -> None:
    """Atomically: a temporary file beside it, fsynced, renamed over it."""
    tmp = "%s.tether-%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        core.remove_quietly(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
