"""Two-way sync of a profile's folder pairs, decided by content, never by mtime.

For each pair the workstation keeps a manifest (path -> SHA-256 of the version both
sides had after the last sync) and a copy of each synced version (content-addressed,
for three-way merges). A path then is:

* the same on both sides: nothing to do;
* changed on one side only: copied to the other (the file it replaces goes to that
  side's backups first);
* changed on both: a **conflict**; neither side is overwritten, the server's version is
  written beside the local one as ``NAME.remote-STAMP.ext`` and the command exits 12;
* deleted on one side: **not** propagated; the other side keeps its copy and says so;
* not ready on the server (being saved, changed in the last seconds, a notebook that
  does not parse): left for the next sync.

The bytes go by the agent, or by rsync when one direction moves many (``transfer.py``);
either way the same checks decide what lands.

The server's side (listing, reading only complete files, writes that still find what
was listed, its backups, notebooks open in Jupyter) is ``remote/syncing.py``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import merge, paths, transfer
from jupyter_tether.clients import Agent
from jupyter_tether.config import SyncPair
from jupyter_tether.remote import protocol

# One rule and one hash on both sides: the server's module, imported here.
from jupyter_tether.remote.syncing import digest, excluded

# Never synced: Jupyter's checkpoints and save-in-progress copies, caches, the
# collaboration store, version control (README: Syncing notebooks).
DEFAULT_EXCLUDE = (
    ".ipynb_checkpoints/",
    ".~*",
    "__pycache__/",
    ".jupyter_ystore.db",
    ".git/",
    ".tether-snapshots/",  # keep_outputs' snapshots stay on the server (README)
    ".tether-develop/",  # develop folders are pairs of their own
    "*.tether-*.tmp",
)
BACKUPS_KEPT = 20  # backup stamps kept per server on the workstation


@dataclass(frozen=True)
class Action:
    path: str
    what: str  # same, push, pull, conflict, keep-local, keep-remote, defer, skip
    why: str


def decide(
    local: Mapping[str, str],
    remote: Mapping[str, str],
    base: Mapping[str, str],
    deferred: Mapping[str, str] | None = None,
) -> list[Action]:
    """What to do with every path, from the hashes on each side and at the last sync."""
    deferred = deferred or {}
    actions = []
    for path in sorted(set(local) | set(remote) | set(base) | set(deferred)):
        if path in deferred:
            actions.append(Action(path, "defer", f"on the server: {deferred[path]}"))
            continue
        here, there, was = local.get(path), remote.get(path), base.get(path)
        if here == there:
            if here is not None:
                actions.append(Action(path, "same", "the same on both sides"))
        elif there == was:  # only this side changed
            if here is None:
                why = "deleted here; kept on the server (deletions are not propagated)"
                actions.append(Action(path, "keep-remote", why))
            else:
                actions.append(Action(path, "push", "new here" if was is None else "changed here"))
        elif here == was:  # only the server changed
            if there is None:
                why = "deleted on the server; kept here (deletions are not propagated)"
                actions.append(Action(path, "keep-local", why))
            else:
                why = "new on the server" if was is None else "changed on the server"
                actions.append(Action(path, "pull", why))
        elif here is None:
            actions.append(Action(path, "pull", "deleted here but changed on the server"))
        elif there is None:
            actions.append(Action(path, "push", "deleted on the server but changed here"))
        else:
            why = "new on both sides" if was is None else "changed on both sides"
            actions.append(Action(path, "conflict", why))
    return actions


def scan(
    folder: Path, patterns: Iterable[str], max_size: int
) -> tuple[dict[str, str], dict[str, str]]:
    """``(files, skipped)``: path -> hash of every file to sync here, and why others are not."""
    patterns = tuple(patterns)
    files: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if not folder.is_dir():
        return files, skipped
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not excluded(rel_dir + d + "/x", patterns))
        for name in sorted(filenames):
            rel = rel_dir + name
            path = Path(dirpath, name)
            if excluded(rel, patterns) or path.is_symlink():
                continue
            size = path.stat().st_size
            if size > max_size:
                skipped[rel] = f"larger than the limit ({size} bytes)"
                continue
            files[rel] = digest(path.read_bytes())
    return files, skipped


@dataclass(frozen=True)
class Place:
    """Where the workstation keeps a pair's manifest, synced versions and backups."""

    name: str
    pair: SyncPair

    @property
    def root(self) -> Path:
        key = digest(f"{self.pair.local}\0{self.pair.remote}".encode())[:12]
        return paths.state_dir() / "sync" / self.name / key

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def load(self) -> dict[str, str]:
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}

    def load_merged(self) -> dict[str, tuple[str, str]]:
        """Merged candidates offered: path -> (candidate's hash, the server's hash)."""
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
            return {str(k): (str(v[0]), str(v[1])) for k, v in data["merged"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return {}

    def save(
        self, files: Mapping[str, str], merged: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        record = {
            "local": self.pair.local,
            "remote": self.pair.remote,
            "files": dict(files),
            "merged": {k: list(v) for k, v in (merged or {}).items()},
        }
        paths.write_private(self.manifest, json.dumps(record, indent=1, sort_keys=True))

    def keep_version(self, data: bytes) -> None:
        """The synced version, by hash: the base of a later three-way decision."""
        path = self.root / "objects" / digest(data)
        if not path.exists():
            paths.write_private(path, data)


def backup_root(name: str) -> Path:
    return paths.state_dir() / "backups" / name


@dataclass
class Outcome:
    actions: list[Action]
    pushed: list[str] = dataclasses.field(default_factory=list)
    pulled: list[str] = dataclasses.field(default_factory=list)
    conflicts: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # path, beside
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why
    backups: list[str] = dataclasses.field(default_factory=list)
    merged: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)  # +conflicts
    not_merged: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why
    conflicted: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # hashes
    offered: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # merged
    transfer: str | None = None  # "rsync" when some bytes went by rsync, else "agent"
    transfer_note: str | None = None  # why a big transfer did not (all) go by rsync


def sync_pair(
    agent: Agent,
    name: str,
    pair: SyncPair,
    root_dir: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    offer_merge: bool = True,
    reported: Mapping[str, tuple[str, str]] | None = None,
) -> Outcome:
    """Sync one folder pair once, both ways; ``offer_merge``: a merged candidate for a
    conflicted notebook (nbdime, when installed). ``reported``: conflicts (path -> both
    hashes) a watching caller already has beside the file; not written again."""
    place = Place(name, pair)
    folder = Path(pair.local).expanduser()
    patterns = (*DEFAULT_EXCLUDE, *pair.exclude)
    max_size = int(pair.max_size_mb * 1024 * 1024)
    where: protocol.SyncWhere = {"remote": pair.remote, "root_dir": root_dir}
    listed = agent.sync_list(where, exclude=list(patterns), max_size=max_size)
    remote = {rel: str(v["sha256"]) for rel, v in listed["files"].items()}
    local, skipped = scan(folder, patterns, max_size)
    base = place.load()
    actions = decide(local, remote, base, listed.get("deferred") or {})
    # A conflict settled by taking the merged candidate as it was offered, the server's
    # side unchanged since: that is the user's answer, pushed (the server's copy is
    # backed up first, as every push's).
    offered = place.load_merged()
    actions = [
        Action(a.path, "push", "the merged candidate taken here")
        if a.what == "conflict" and offered.get(a.path) == (local[a.path], remote[a.path])
        else a
        for a in actions
    ]
    actions += [Action(p, "skip", why) for p, why in {**skipped, **listed["skipped"]}.items()]
    out = Outcome(actions)
    out.conflicted = {
        a.path: (local[a.path], remote[a.path]) for a in actions if a.what == "conflict"
    }
    if dry_run:
        return out
    manifest = dict(base)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    here = backup_root(name) / stamp / place.root.name  # this pair's backups of this sync
    old = reported or {}
    wanted = {
        a.path: remote[a.path]
        for a in actions
        if a.what == "pull" or (a.what == "conflict" and old.get(a.path) != out.conflicted[a.path])
    }
    fetched = _fetch(agent, where, listed, wanted, max_size, place, out) if wanted else {}
    for a in actions:
        if a.what == "same":
            manifest[a.path] = local[a.path]
        elif a.what == "pull" and a.path in fetched:
            _write_local(folder, a.path, fetched[a.path], here, out)
            place.keep_version(fetched[a.path])
            manifest[a.path] = remote[a.path]
            out.pulled.append(a.path)
        elif a.what == "conflict" and a.path in fetched:
            beside = _beside(a.path, stamp)
            _write_local(folder, beside, fetched[a.path], here, out)
            out.conflicts.append((a.path, beside))
            if offer_merge and a.path.endswith(".ipynb"):
                _offer_merge(place, folder, a.path, base.get(a.path), fetched[a.path], stamp, out)
    pushes = {a.path: (folder / a.path).read_bytes() for a in actions if a.what == "push"}
    if pushes:
        answer = _push(agent, where, listed, name, folder, pushes, remote, force, out)
        for rel in answer["written"]:
            place.keep_version(pushes[rel])
            manifest[rel] = digest(pushes[rel])
            out.pushed.append(rel)
        for rel in answer["changed"]:
            out.refused[rel] = "changed on the server meanwhile; the next sync decides again"
        for rel in answer["open"]:
            out.refused[rel] = "open in Jupyter; close it, or sync with --force"
        out.backups += [f"server: {b}" for b in answer["backups"]]
    for path in [p for p in manifest if p not in local and p not in remote]:
        del manifest[path]  # gone on both sides
    # Still to settle: in conflict, or taken but not written yet (open in Jupyter, say).
    still = {p: v for p, v in offered.items() if p in out.conflicted or p in out.refused}
    place.save(manifest, {**still, **out.offered})
    _prune(backup_root(name))
    return out


def _by_rsync(
    agent: Agent, listed: protocol.SyncListAnswer, files: int, size: int, out: Outcome
) -> str | None:
    """The server's rsync when this direction goes by rsync, else None (and why, when
    it was big enough to: ``transfer.choose``)."""
    choice = transfer.choose(
        files=files,
        size=size,
        target=agent.target,
        here=transfer.local_rsync(),
        there=listed.get("rsync"),
    )
    if choice.how == "rsync":
        return listed.get("rsync")
    if transfer.big(files, size):
        out.transfer_note = choice.why
    return None


def _fetch(
    agent: Agent,
    where: protocol.SyncWhere,
    listed: protocol.SyncListAnswer,
    wanted: dict[str, str],
    max_size: int,
    place: Place,
    out: Outcome,
) -> dict[str, bytes]:
    """The server's files ``wanted`` (path -> the hash listed), each only whole."""
    size = sum(int(listed["files"][rel]["size"]) for rel in wanted if rel in listed["files"])
    there = _by_rsync(agent, listed, len(wanted), size, out)
    got = _fetch_by_rsync(agent, there, listed, wanted, place, out) if there else {}
    rest = {rel: sha for rel, sha in wanted.items() if rel not in got}
    if not rest:
        return got
    out.transfer = out.transfer or "agent"
    answer = agent.sync_read(where, rest, max_size=max_size)
    for rel, item in answer["files"].items():
        data = base64.b64decode(item["data"])
        if digest(data) == wanted[rel]:  # what was listed, whole
            got[rel] = data
        else:
            out.refused[rel] = "arrived different from what was listed; the next sync retries"
    for rel, why in (answer.get("deferred") or {}).items():
        out.refused[rel] = f"on the server: {why}"
    return got


def _fetch_by_rsync(
    agent: Agent,
    there: str,
    listed: protocol.SyncListAnswer,
    wanted: dict[str, str],
    place: Place,
    out: Outcome,
) -> dict[str, bytes]:
    """rsync ``wanted`` into a private staging directory here; keep what arrived as it
    was listed. The listing only hashes complete files (no ``.~NAME`` beside, settled,
    a notebook that parses: ``remote/syncing.py``), so bytes of that hash are that
    complete file; a file changed since (a save begun, say) has another hash and goes by
    the agent, which looks again."""
    staging = place.root / "incoming" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    staging.mkdir(parents=True, mode=0o700)
    try:
        failed = transfer.copy(
            agent.target,
            there=there,
            source=transfer.remote(agent.target, listed["folder"] + "/"),
            dest=f"{staging.resolve()}/",
            names=sorted(wanted),
        )
        got: dict[str, bytes] = {}
        for rel, want in ({} if failed else wanted).items():
            with contextlib.suppress(OSError):
                data = (staging / rel).read_bytes()
                if digest(data) == want:
                    got[rel] = data
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if got:
        out.transfer = "rsync"
    if len(got) < len(wanted):
        out.transfer_note = failed or f"{len(wanted) - len(got)} file(s) not whole by rsync"
    return got


def _push(
    agent: Agent,
    where: protocol.SyncWhere,
    listed: protocol.SyncListAnswer,
    name: str,
    folder: Path,
    pushes: dict[str, bytes],
    remote: Mapping[str, str],
    force: bool,
    out: Outcome,
) -> protocol.SyncWriteAnswer:
    """Write ``pushes`` (path -> the bytes read here) on the server, each only over the
    version listed there. By rsync into the server's staging directory when big, then
    the agent's write takes each staged file that arrived as read here; the rest goes in
    the write's request (base64), as every push does without rsync."""
    files: dict[str, dict[str, object]] = {
        rel: {"sha256": digest(data), "expect": remote.get(rel)} for rel, data in pushes.items()
    }
    there = _by_rsync(agent, listed, len(pushes), sum(map(len, pushes.values())), out)
    staging = None
    if there and listed.get("staging"):
        # One directory per push, under the server's own 0700 staging root; the write
        # removes it whatever happens.
        staging = f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        failed = transfer.copy(
            agent.target,
            there=there,
            source=f"{folder.resolve()}/",
            dest=transfer.remote(agent.target, f"{listed['staging']}/{staging}/"),
            names=sorted(pushes),
        )
        if failed:
            out.transfer_note = failed
        else:
            for item in files.values():
                item["staged"] = True

    def inline(rels: Iterable[str]) -> None:
        for rel in rels:
            files[rel].pop("staged", None)
            files[rel]["data"] = base64.b64encode(pushes[rel]).decode()

    inline(rel for rel, item in files.items() if not item.get("staged"))
    answer = agent.sync_write(where, name, files, force=force, staging=staging)
    unstaged = answer.get("unstaged") or []
    staged_written = [r for r in answer["written"] if files[r].get("staged")]
    out.transfer = "rsync" if staged_written else (out.transfer or "agent")
    if not unstaged:
        return answer
    if not out.transfer_note:
        out.transfer_note = f"{len(unstaged)} file(s) not whole by rsync"
    files = {rel: files[rel] for rel in unstaged}
    inline(unstaged)
    again = agent.sync_write(where, name, files, force=force)
    for key in ("written", "changed", "open", "backups"):
        answer[key] = [*answer[key], *again[key]]
    return answer


def signature(folder: Path) -> int:
    """A cheap fingerprint of a folder (names, sizes, mtimes): has anything changed?
    What to do is still decided by content, in sync_pair."""
    items = []
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(dirpath, f))
                items.append((dirpath, f, st.st_size, st.st_mtime_ns))
    return hash(tuple(sorted(items)))


def _beside(rel: str, stamp: str, what: str = "remote") -> str:
    head, _, name = rel.rpartition("/")
    stem, dot, ext = name.partition(".")
    other = f"{stem}.{what}-{stamp}{dot}{ext}"
    return f"{head}/{other}" if head else other


def _offer_merge(
    place: Place, folder: Path, rel: str, was: str | None, theirs: bytes, stamp: str, out: Outcome
) -> None:
    """Write nbdime's three-way merge beside the local notebook, never over either side:
    ``NAME.merged-STAMP.ipynb``, or ``NAME.merged-conflicts-STAMP.ipynb`` when some cells
    carry nbdime's conflict markers."""
    base = place.root / "objects" / was if was else None
    if base is None or not base.is_file():
        out.not_merged[rel] = "no common version to merge from (new on both sides)"
        return
    if not merge.available():
        out.not_merged[rel] = merge.MISSING
        return
    try:
        result = merge.merge_notebooks(base.read_bytes(), (folder / rel).read_bytes(), theirs)
    except Exception as exc:  # an optional tool failing must not fail the sync itself
        out.not_merged[rel] = f"nbdime could not merge it: {exc}"
        return
    candidate = _beside(rel, stamp, "merged-conflicts" if result.conflicts else "merged")
    path = folder / candidate
    tmp = path.with_name(f"{path.name}.tether-{os.getpid()}.tmp")
    tmp.write_bytes(result.data)
    os.replace(tmp, path)
    out.merged.append((rel, candidate, result.conflicts))
    if not result.conflicts:  # one with conflict markers is not an answer as it stands
        out.offered[rel] = (digest(result.data), digest(theirs))


def _write_local(folder: Path, rel: str, data: bytes, backups: Path, out: Outcome) -> None:
    """Write atomically; a file it replaces goes to the workstation's backups first."""
    path = folder / rel
    if path.exists():
        out.backups.append(f"here: {back_up(folder, rel, backups)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tether-{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


META = ".tether-backup.json"  # in each pair's backup folder: the folder it came from


def back_up(folder: Path, rel: str, backups: Path) -> Path:
    """Copy ``folder/rel`` into ``backups`` (0600); return the copy's path."""
    if not (backups / META).exists():
        paths.write_private(backups / META, json.dumps({"folder": str(folder)}))
    saved = backups / rel
    saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.write_private(saved, (folder / rel).read_bytes())
    return saved


@dataclass(frozen=True)
class LocalBackup:
    id: str  # STAMP/KEY/PATH
    path: str  # relative to folder
    folder: Path
    size: int
    stamp: str


def local_backups(name: str) -> list[LocalBackup]:
    root = backup_root(name)
    found = []
    for meta in sorted(root.glob(f"*/*/{META}")):
        folder = Path(json.loads(meta.read_text(encoding="utf-8"))["folder"])
        for f in sorted(p for p in meta.parent.rglob("*") if p.is_file() and p != meta):
            rel = f.relative_to(meta.parent).as_posix()
            ident = f"{meta.parent.parent.name}/{meta.parent.name}/{rel}"
            found.append(LocalBackup(ident, rel, folder, f.stat().st_size, meta.parent.parent.name))
    return found


def restore_local(name: str, ident: str) -> tuple[Path, Path | None]:
    """Put backup ``ident`` back; the file there now is backed up first."""
    match = [b for b in local_backups(name) if b.id == ident]
    if not match:
        raise KeyError(ident)
    b = match[0]
    source = backup_root(name) / ident
    target = b.folder / b.path
    kept = None
    if target.exists():
        stamp = time.strftime("%Y%m%dT%H%M%S") + "-restore"
        kept = back_up(b.folder, b.path, backup_root(name) / stamp / ident.split("/")[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tether-{os.getpid()}.tmp")
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)
    return target, kept


def _prune(root: Path) -> None:
    stamps = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for old in stamps[:-BACKUPS_KEPT]:
        for sub in sorted(old.rglob("*"), reverse=True):
            sub.unlink() if not sub.is_dir() else sub.rmdir()
        old.rmdir()
