"""The tunnel supervisor: one small background process per connected server.

Started by ``up`` and ``open``, it keeps ``127.0.0.1:PORT`` answering: every second it
asks the server for ``/api/status`` through the forward.  When that stops working it
finds out why and repairs it, with a capped backoff (the network may come back at any
moment, so the cap is half a second):

* the request times out: the link is dead (or the laptop slept).  The ControlMaster is
  ended at once instead of waiting for ServerAlive, and rebuilt (BatchMode: keys and
  agents work unattended; a password or 2FA login cannot, and is reported as such);
* the request is refused at once: the link is fine but Jupyter is gone. The server's
  own watchdog (run.sh) restarts crashes; if nothing runs there any more (a reboot,
  every process killed) the supervisor revives it with the same token and socket, at
  once the first time, then after 2, 10 and 30 s, then it gives up. A server that
  ``tether down`` stopped (from this workstation or another: it leaves word on the
  server) is not revived: the supervisor says who stopped it, and when, and exits;
* the forward is re-added on the same local port, so open browser tabs keep working.

For a server run as a batch job (``batch.py``) the forward goes through the bridge into
the job, rebuilt the same way; instead of reviving, the supervisor asks the scheduler:
a job that has ended is reported as such (and never resubmitted behind the user's back),
and 15 and 5 minutes before the time limit a warning goes to the desktop (notify-send,
osascript) and to the log.

Exactly one supervisor runs per server (a lock file held for its lifetime).  Its state
(connected / reconnecting since T / failed: reason) is in ``supervisors/NAME.json`` for
``tether ls``, and its log in ``supervisors/NAME.log`` for ``tether logs --tunnel``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from jupyter_tether import batch, config, jupyter_api, output, paths, relay, ssh, state
from jupyter_tether import sync as syncing
from jupyter_tether.clients import Agent
from jupyter_tether.errors import TetherError
from jupyter_tether.proc import pid_alive

INTERVAL = 1.0  # seconds between health checks while connected
# A failed attempt costs one ssh that fails at once (no route) or within ConnectTimeout;
# the cap bounds how long after the link returns the next attempt starts (README:
# back "within a second"; a 1.0 s cap gave a worst restore of 1.2 s over 20 cuts,
# benchmarks/README.md).
BACKOFF_MIN, BACKOFF_MAX = 0.2, 0.5
CHECK_TIMEOUT = 2.0  # a /api/status slower than this counts as "no answer"
DEAD_AFTER = 2  # consecutive timeouts before the link is declared dead
REVIVES = (4, 600.0)  # at most 4 revivals of a dead server per 10 minutes,
REVIVE_WAITS = (0.0, 2.0, 10.0, 30.0)  # the first at once, the next ones after these
FAILED_EVERY = 5.0  # seconds between two looks once repairs have failed for good
GIVE_UP = 24 * 3600.0  # a supervisor failing for a whole day stops
RECORD_WAIT = 300.0  # how long a supervisor started by `up` waits for its record
HANDOVER_WAIT = 10.0  # how long a new supervisor waits for the old one to leave
JOB_EVERY = 30.0  # seconds between two looks at a batch job's time left
WARN_BEFORE = (900, 300)  # seconds before a job's end when the user is warned
_BUSY = TetherError("a tether command on this workstation is working on it")
_ANOTHER = TetherError("another supervisor looks after this server")
# The supervisors this process started: `stop` finds them even when their status file
# could not be written (a full disk), so a failed `up` leaves no supervisor behind.
_started: dict[str, subprocess.Popen[bytes]] = {}


def _dir() -> Path:
    d = paths.state_dir() / "supervisors"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def status_path(name: str) -> Path:
    return _dir() / f"{name}.json"


def log_path(name: str) -> Path:
    return _dir() / f"{name}.log"


def _lock_path(name: str) -> Path:
    return _dir() / f"{name}.lock"


def last_word(name: str) -> dict[str, Any] | None:
    """What the supervisor for ``name`` last recorded, whether it still runs or not."""
    try:
        data = json.loads(status_path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(name: str) -> dict[str, Any] | None:
    """The running supervisor's last word, or None if none runs for ``name``."""
    data = last_word(name)
    if data is None or not pid_alive(int(data.get("pid", 0))):
        return None
    return data


def start(name: str, listener: socket.socket | None = None) -> int:
    """Start the supervisor for ``name`` unless one runs; return its pid.

    ``listener`` (a socket listening on the server's local port) is handed over to it
    for its relay; without one it binds the recorded port itself."""
    current = read_status(name)
    if current is not None:
        return int(current["pid"])
    argv = [sys.executable, "-m", "jupyter_tether.supervisor", name]
    if listener is not None:
        argv.append(f"--listen-fd={listener.fileno()}")
    log = os.open(log_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the terminal closing
            close_fds=True,
            pass_fds=(listener.fileno(),) if listener is not None else (),
        )
    finally:
        os.close(log)
    _started[name] = proc
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = read_status(name)
        if current is not None:
            return int(current["pid"])
        if proc.poll() is not None:
            break  # lost the race to another supervisor, or failed: look once more
        time.sleep(0.05)
    current = read_status(name)
    return int(current["pid"]) if current else proc.pid


def stop(name: str) -> bool:
    """Stop the supervisor for ``name`` (SIGTERM, then SIGKILL); True if one ran."""
    current = read_status(name)
    ours = _started.pop(name, None)
    if current is not None:
        pid = int(current["pid"])
    elif ours is not None and ours.poll() is None:
        pid = ours.pid
    else:
        return False
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pid_alive(pid):
            break
    status_path(name).unlink(missing_ok=True)
    return True


class _Supervisor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.status: dict[str, Any] = {
            "pid": os.getpid(),
            "state": "connecting",
            "since": time.time(),
            "detail": "",
            "reconnects": 0,
            "revives": 0,
        }
        self.revived: deque[float] = deque()
        self.revive_due = 0.0  # monotonic time before which no revival starts
        self.done = False  # the server was stopped on purpose: nothing left to do
        self.timeouts = 0
        self.job_checked = 0.0
        self.warned: set[int] = set()
        self.job_ended = False
        self.job_id: str | None = None
        self.saving = threading.Lock()  # the sync thread records its word too

    def say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(OSError):  # a full disk must not end the tunnel
            print(f"{stamp} {self.name}: {text}", flush=True)

    def set(self, state_: str, detail: str = "") -> None:
        if state_ != self.status["state"]:
            self.status["since"] = time.time()
            self.say(f"{state_}" + (f": {detail}" if detail else ""))
        self.status["state"] = state_
        self.status["detail"] = detail
        self.status["checked"] = time.time()
        self.save()

    def save(self) -> None:
        # On a full disk the old record stays (atomic write); the tunnel matters more.
        with self.saving, contextlib.suppress(TetherError):
            paths.write_private(status_path(self.name), json.dumps(self.status))

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def check(self, rec: state.Record) -> str:
        """ "ok", "timeout" (no answer: the link), or "refused" (answered badly: the server)."""
        try:
            code, _ = jupyter_api.request(
                rec.local_port,
                "GET",
                "/api/status?no_track_activity=1",
                rec.token,
                timeout=CHECK_TIMEOUT,
            )
        except jupyter_api.Unreachable as exc:
            return "timeout" if "timed out" in str(exc).lower() else "refused"
        return "ok" if code == 200 else "refused"

    def run(self) -> int:
        backoff = BACKOFF_MIN
        failing_since: float | None = None
        while not self.stopping:
            rec = state.load(self.name)
            if rec is None:
                self.say("the server was taken down; exiting")
                return 0
            if rec.job and rec.job.get("id") != self.job_id:
                # `up` submitted a new job after the last one ended: start afresh.
                self.job_id, self.job_ended, self.warned = rec.job.get("id"), False, set()
                self.job_checked = 0.0
            result = self.check(rec)
            if result == "ok":
                if self.status["state"] != "connected":
                    if self.status["state"] == "reconnecting":
                        self.status["reconnects"] += 1
                    self.set("connected")
                else:
                    self.status["checked"] = time.time()
                backoff, failing_since, self.timeouts = BACKOFF_MIN, None, 0
                if rec.job and time.monotonic() - self.job_checked > JOB_EVERY:
                    with contextlib.suppress(TetherError):
                        self.watch_job(rec)
                self.sleep(INTERVAL)
                continue
            if self.job_ended:
                # Nothing to repair: wait for `up` (a new job) or `down`.
                self.sleep(2.0)
                if time.monotonic() - self.job_checked > JOB_EVERY:
                    with contextlib.suppress(TetherError):
                        self.job_side(rec)
                continue
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > GIVE_UP:
                self.set("failed", "could not reconnect for a day; giving up")
                return 1
            try:
                # `up`, `open` and `down` hold this lock while they work on the server:
                # their own restart or re-forward is not a fault to repair meanwhile.
                with state.lock(self.name, timeout=0, busy=_BUSY):
                    self.repair(rec, result)
            except TetherError as exc:
                if self.status["state"] != "failed":
                    self.set("reconnecting", exc.message)
            if self.done:
                return 0
            self.sleep(FAILED_EVERY if self.status["state"] == "failed" else backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        return 0

    def login(self, rec: state.Record) -> ssh.Target:
        return dataclasses.replace(
            ssh.make_target(rec.ssh, config_file=Path(rec.ssh_config) if rec.ssh_config else None),
            connect_timeout=5,
        )

    def repair(self, rec: state.Record, result: str) -> None:
        target = self.login(rec)
        # The forward goes through the bridge into a batch job, or straight to the server.
        via = batch.via(rec.name, batch.Job.from_dict(rec.job), target) if rec.job else target
        if self.status["state"] == "connected":
            self.set("reconnecting", "the server stopped answering")
        if result == "timeout":
            self.timeouts += 1
            if self.timeouts < DEAD_AFTER:
                return  # one slow answer is not a dead link yet
            if ssh.master_alive(via) or ssh.master_alive(target):
                # No answer at all: the link is dead, even if ServerAlive hasn't said so.
                self.say("no answer through the link; dropping the ssh connection")
                ssh.exit_master(via)
                ssh.exit_master(target)
        if not ssh.master_alive(target):
            ssh.ensure_master(target, batch=True)
            self.say("ssh connection re-established")
        if via is not target and not ssh.master_alive(via):
            try:
                ssh.ensure_master(via, batch=True)
            except TetherError:
                self.job_side(rec)  # the job may have ended: say so rather than retry
                raise
            self.say("bridge into the job re-established")
        self.timeouts = 0
        res = ssh.add_forward(via, relay.socket_path(rec.name), rec.remote)
        if not res.ok:
            raise TetherError(
                f"cannot forward 127.0.0.1:{rec.local_port} again: "
                f"{ssh.first_meaningful_line(res.stderr)}"
            )
        if self.check(rec) == "ok":
            return
        if rec.job:
            self.job_side(rec)
        else:
            self.server_side(target, rec)

    def job_side(self, rec: state.Record) -> None:
        """Ask the scheduler about the job: ended (say how, once), or not (keep trying)."""
        assert rec.job is not None
        self.job_checked = time.monotonic()
        job = batch.Job.from_dict(rec.job)
        agent = Agent(self.login(rec), rec.python)
        status, answer = batch.look_at(
            agent, rec.name, job, job.path, output_lines=batch.OUTPUT_LINES
        )
        self.status.update(job_state=status.state, time_left=status.time_left)
        if status.state == "done":
            ended = answer.get("ended")
            how = batch.ending(answer) or (ended["how"] if ended else "it left the queue")
            self.job_ended = True
            self.set(
                "failed", f"job {job.id} has ended: {how}; `tether up {rec.name}` submits a new one"
            )
        elif status.state == "unknown":
            self.set("reconnecting", f"the scheduler does not answer ({status.reason})")
        else:
            self.job_ended = False
            self.set("reconnecting", f"job {job.id} is {status.state}; rebuilding the link")

    def watch_job(self, rec: state.Record) -> None:
        """Time left, and the warnings before the end."""
        assert rec.job is not None
        self.job_checked = time.monotonic()
        job = batch.Job.from_dict(rec.job)
        status, answer = batch.look_at(Agent(self.login(rec), rec.python), rec.name, job, job.path)
        self.status.update(job_state=status.state, time_left=status.time_left)
        self.save()
        left = status.time_left
        due = [w for w in WARN_BEFORE if left is not None and left <= w and w not in self.warned]
        if due or (answer.get("warned") and WARN_BEFORE[0] not in self.warned):
            self.warned.update(w for w in WARN_BEFORE if left is None or left <= w)
            self.warned.add(WARN_BEFORE[0])
            minutes = max(1, round((left or 0) / 60))
            text = f"job {job.id} of {rec.name} ends in about {minutes} min: save your work"
            self.say(text)
            notify("jupyter-tether", text)

    def server_side(self, target: ssh.Target, rec: state.Record) -> None:
        """The link works but Jupyter does not answer: ask the server what happened."""
        agent = Agent(target, rec.python)
        recorded, answer = agent.health(rec.name, timeout=20)
        if recorded is None:
            marker = (answer.get("stopped") or {}).get(rec.name)
            if marker:
                self.set("stopped", output.stopped_by(marker))
                self.done = True
            else:
                # Neither running nor stopped: its record is gone (an account reset).
                self.set(
                    "failed",
                    f"{rec.hostname} has no record of {rec.name} any more (was the account "
                    f"reset?); `tether up {rec.name}` starts it again",
                )
            return
        health = recorded["health"]
        what = health["state"]
        if what == "orphaned":
            self.set("failed", f"{health.get('detail')}; `tether up {rec.name}` does that")
            return
        if what in ("running", "restarting", "unresponsive"):
            self.set("reconnecting", f"server {what}")
            return
        if what == "failed":
            self.set("failed", str(health.get("detail") or "the server failed"))
            return
        if what == "elsewhere":
            # The alias now lands on another login node (round-robin DNS) than the one
            # the server runs on: its socket is not reachable from this node.
            self.set(
                "failed",
                f"{rec.ssh} now reaches node {answer.get('hostname')}, but the server runs "
                f"on {rec.hostname}; point the profile's ssh at that node (or add HostName "
                "for it to ~/.ssh/config) and `tether open` again",
            )
            return
        self.revive(agent, rec, what)

    def revive(self, agent: Agent, rec: state.Record, what: str) -> None:
        """Start the dead server again, backing off between attempts (REVIVE_WAITS)."""
        now = time.monotonic()
        while self.revived and now - self.revived[0] > REVIVES[1]:
            self.revived.popleft()
        if len(self.revived) >= REVIVES[0]:
            self.set("failed", f"the server died {REVIVES[0]} times in {REVIVES[1]:.0f} s")
            return
        if now < self.revive_due:
            wait = math.ceil(self.revive_due - now)
            self.set("reconnecting", f"the server is {what}: starting it again in {wait} s")
            return
        self.say(f"the server is {what}: starting it again with the same token")
        try:
            revived = agent.revive(rec.name, timeout=180)
        except TetherError:
            self.count_revival(now)
            raise
        if revived.get("reused"):
            # Another start (`up` on another workstation) got there first: not a crash.
            self.say("it was started meanwhile by another tether command")
        else:
            self.count_revival(now)
            self.status["revives"] += 1
        remote = str(revived.get("sock") or f"127.0.0.1:{revived.get('port')}")
        if remote != rec.remote or revived.get("pid") != rec.pid:
            state.save(state.Record(**{**rec.__dict__, "remote": remote, "pid": revived["pid"]}))

    def count_revival(self, now: float) -> None:
        self.revived.append(now)
        self.revive_due = now + REVIVE_WAITS[min(len(self.revived), len(REVIVE_WAITS) - 1)]


SYNC_LOOK = 0.5  # seconds between two looks at the local folders (as `sync --watch`)
SYNC_POLL = 5.0  # seconds between two syncs when nothing changed here (the server's side)


def watch_sync(sup: _Supervisor, profile: config.Profile) -> None:
    """``sync_watch = true``: the profile's folders synced as ``tether sync --watch`` does,
    while the link is up; paused while it is down, and synced once as soon as it is back.
    One thread; a conflict is recorded (log, ``tether ls``), never the supervisor's end."""
    seen: tuple[int, ...] | None = None
    last, behind, paused = 0.0, True, False
    reported: dict[str, tuple[str, str]] = {}  # conflicts already written beside their file
    folders = [Path(pair.local).expanduser() for pair in profile.sync]
    while not sup.stopping:
        rec = state.load(sup.name)
        if rec is None or sup.status["state"] != "connected":
            if not behind:
                sup.say("sync paused until the link is back")
            behind, paused = True, True
            sup.sleep(SYNC_LOOK)
            continue
        now_seen = tuple(syncing.signature(f) for f in folders)
        if behind or now_seen != seen or time.monotonic() - last >= SYNC_POLL:
            last = time.monotonic()
            try:
                conflicts = sync_once(sup, profile, rec, reported)
            except (TetherError, OSError) as exc:  # the link went, or a local file did
                sup.say(f"sync failed: {getattr(exc, 'message', exc)}; trying again")
                behind = True
            except Exception:  # a bug in one sync must not end the syncing for good
                sup.say(f"sync failed:\n{traceback.format_exc()}trying again in {SYNC_POLL} s")
                behind = True
                sup.sleep(SYNC_POLL)
            else:
                if paused:
                    sup.say("sync caught up after the reconnect")
                behind, paused, seen = False, False, now_seen
                word = f"conflict in {', '.join(conflicts)}" if conflicts else "in sync"
                if sup.status.get("sync") != word:
                    sup.status["sync"] = word
                    sup.save()
        sup.sleep(SYNC_LOOK)


def sync_once(
    sup: _Supervisor,
    profile: config.Profile,
    rec: state.Record,
    reported: dict[str, tuple[str, str]],
) -> list[str]:
    """One sync of every pair; the paths in conflict."""
    agent = Agent(sup.login(rec), rec.python)
    conflicts: list[str] = []
    for pair in profile.sync:
        # No merged candidate here: nbdime is too big for a small background process;
        # `tether sync NAME` offers one (README: Syncing notebooks).
        o = syncing.sync_pair(
            agent, sup.name, pair, profile.root_dir, offer_merge=False, reported=reported
        )
        for path in o.pushed:
            sup.say(f"sync: pushed {path} to {pair.remote}")
        for path in o.pulled:
            sup.say(f"sync: pulled {path} into {pair.local}")
        for path, beside in o.conflicts:
            sup.say(f"sync: conflict in {path}; the server's version is {beside}")
        for path, why in o.refused.items():
            sup.say(f"sync: not synced: {path}: {why}")
        reported.update(o.conflicted)
        conflicts += sorted(o.conflicted)
    return conflicts


def notify(title: str, text: str) -> bool:
    """A desktop notification where the workstation has a way to show one."""
    if shutil.which("notify-send"):
        argv = ["notify-send", "-a", "jupyter-tether", title, text]
    elif sys.platform == "darwin" and shutil.which("osascript"):
        script = f"display notification {json.dumps(text)} with title {json.dumps(title)}"
        argv = ["osascript", "-e", script]
    else:
        return False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        return done.returncode == 0
    return False


def _listener(sup: _Supervisor, argv: list[str]) -> socket.socket | None:
    """The relay's listening socket: handed over by `up`/`open`, or the recorded port."""
    if len(argv) == 3 and argv[2].startswith("--listen-fd="):
        return socket.socket(fileno=int(argv[2].split("=", 1)[1]))
    rec = state.load(sup.name)
    if rec is None:
        return None
    try:
        return relay.listen(rec.local_port)
    except OSError as exc:
        sup.set("failed", f"cannot listen on 127.0.0.1:{rec.local_port}: {exc.strerror}")
        return None


def _await_record(sup: _Supervisor) -> bool:
    """Started by `up` before its record is saved: wait until `up` saves it or gives up
    (it holds the server's lock until then)."""
    deadline = time.monotonic() + RECORD_WAIT
    while not sup.stopping and time.monotonic() < deadline:
        if state.load(sup.name) is not None:
            return True
        with contextlib.suppress(TetherError), state.lock(sup.name, timeout=0, busy=_BUSY):
            return state.load(sup.name) is not None
        sup.sleep(0.05)
    return False


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m jupyter_tether.supervisor NAME [--listen-fd=FD]", file=sys.stderr)
        return 2
    name = argv[1]
    # Handed a listener, this one was asked for in place of any other: one that is
    # still on its way out (stopped, or giving up after a failed `up`) gets a moment.
    wait = HANDOVER_WAIT if len(argv) == 3 else 0.0
    try:
        with paths.hold_lock(_lock_path(name), timeout=wait, busy=_ANOTHER):
            return _serve(name, argv)
    except TetherError as exc:
        if exc is _ANOTHER:
            return 0  # another supervisor already looks after this server
        raise


def _serve(name: str, argv: list[str]) -> int:
    """The supervisor's life, with its lock held."""
    sup = _Supervisor(name)

    def _stop(_signum: int, _frame: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    listener = _listener(sup, argv)
    if listener is None:
        return 1
    # Listening before the status says so: `start` returns once the port answers.
    relay.serve(listener, relay.socket_path(name))
    sup.status["port"] = listener.getsockname()[1]
    sup.set("connecting")
    try:
        if not _await_record(sup):
            sup.say("no server was recorded; exiting")
            return 0
        profile = None
        with contextlib.suppress(TetherError):  # a profile broken since `up`: no sync
            profile = config.resolve(name)
        if profile is not None and profile.sync_watch and profile.sync:
            sup.status["sync"] = "starting"
            threading.Thread(target=watch_sync, args=(sup, profile), daemon=True).start()
        return sup.run()
    finally:
        if sup.stopping:
            status_path(name).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
