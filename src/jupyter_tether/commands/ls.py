"""`tether ls`: every server this workstation knows, with its live state."""

from __future__ import annotations

import time
from typing import Any

from jupyter_tether import batch, jupyter_api, output, ssh, state, supervisor
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import target_for
from jupyter_tether.errors import TetherError
from jupyter_tether.proc import pid_alive


def ls(*, names: list[str] | None = None, as_json: bool = False) -> int:
    records = [r for r in state.all_records() if not names or r.name in names]
    rows = [_row(rec) for rec in records]
    if as_json:
        output.emit_json(rows)
    elif rows:
        print(
            output.table(
                [_text(r) for r in rows],
                ["name", "host", "state", "tunnel", "pid", "uptime", "kernels", "activity", "url"],
            )
        )
        for row in rows:
            if row.get("log_tail"):
                detail = f": {row['detail']}" if row.get("detail") else ""
                print(f"\n{row['name']}: {row['state']}{detail}; last lines of its log:")
                print("  " + row["log_tail"].replace("\n", "\n  "))
    else:
        print("no servers; start one with `tether up HOST`")
    return 0


def _row(rec: state.Record) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": rec.name,
        "profile": rec.name,
        "host": rec.ssh,
        "hostname": rec.hostname,
        "pid": rec.pid,
        "local_port": rec.local_port,
        "url": f"{rec.base_url}/",
        "transport": rec.transport,
        "started": rec.started,
        "uptime": max(0.0, time.time() - rec.started) if rec.started else None,
        "kernels": None,
        "connections": None,
        "last_activity": None,
        "forwarded": False,
        "tunnel": _tunnel(rec.name),
    }
    api = jupyter_api.status(rec.local_port, rec.token, timeout=3)
    if rec.job:
        row["job"] = _job(rec)
    if api is not None:
        row["forwarded"] = True
        row["state"] = "running"
    elif rec.job:
        job = row["job"]
        row["state"] = "disconnected" if job["state"] in ("running", "pending") else job["state"]
        if job.get("ending"):
            row["state"] += f" ({job['ending']})"
        row["detail"] = job.get("detail")
        if job.get("output"):
            row["log_tail"] = "\n".join(str(job["output"]).splitlines()[-10:])
    else:
        try:
            target = target_for(rec)
            if not ssh.master_alive(target):
                row["state"] = "disconnected"
                if row["tunnel"]["state"] == "stopped":  # the supervisor's last word
                    row["state"], row["detail"] = "stopped", row["tunnel"]["detail"]
                return row
            recorded, answer = Agent(target, rec.python).health(rec.name)
        except TetherError as exc:
            row["state"] = "unreachable"
            row["detail"] = exc.message
            return row
        if recorded is None:
            marker = (answer.get("stopped") or {}).get(rec.name)
            row["state"] = "stopped"
            row["detail"] = (
                output.stopped_by(marker)
                if marker
                else f"not recorded on the server any more; `tether up {rec.name}` starts it"
            )
            return row
        health = recorded["health"]
        row["state"] = (
            "running (not forwarded)"
            if health.get("state") == "running"
            else str(health.get("state"))
        )
        row["detail"] = health.get("detail")
        if health.get("log_tail"):
            row["log_tail"] = health["log_tail"]
        if health.get("pid"):
            row["pid"] = health["pid"]
        api = health.get("api")
    if api:
        row["kernels"] = api.get("kernels")
        row["connections"] = api.get("connections")
        row["last_activity"] = api.get("last_activity")
    return row


def _job(rec: state.Record) -> dict[str, Any]:
    """The batch job behind ``rec``: the scheduler's word when the login node answers,
    else the supervisor's last one."""
    assert rec.job is not None
    job = batch.Job.from_dict(rec.job)
    out: dict[str, Any] = {
        "id": job.id,
        "node": job.node,
        "cluster": job.cluster,
        "scheduler": job.scheduler,
        "state": "unknown",
        "time_left": None,
    }
    last = supervisor.read_status(rec.name) or {}
    out["state"] = last.get("job_state") or out["state"]
    out["time_left"] = last.get("time_left")
    try:
        target = target_for(rec)
        if not ssh.master_alive(target):
            return out
        status, answer = batch.look_at(
            Agent(target, rec.python), rec.name, job, job.path, output_lines=batch.OUTPUT_LINES
        )
    except TetherError as exc:
        out["detail"] = exc.message
        return out
    out.update(state=status.state, time_left=status.time_left, node=status.node or job.node)
    if status.state == "unknown":
        out["detail"] = status.reason
    if status.state == "done":
        ended = answer.get("ended")
        out["ending"] = batch.ending(answer) or (ended["how"] if ended else None)
        out["output"] = (answer.get("output") or "").strip() or None
    return out


def _tunnel(name: str) -> dict[str, Any]:
    """The supervisor's view: connected / reconnecting since T / failed: reason."""
    st = supervisor.read_status(name)
    last = supervisor.last_word(name) if st is None else None
    if last is not None and last.get("state") == "stopped":
        # It ended on purpose: the server was stopped with `tether down` (maybe elsewhere).
        return {"state": "stopped", "detail": last.get("detail"), "since": last.get("since")}
    if st is None:
        return {"state": "none", "detail": f"no supervisor; `tether open {name}` starts one"}
    pid = st.get("pid")
    live = ("connecting", "connected", "reconnecting")
    if st.get("state") in live and isinstance(pid, int) and not pid_alive(pid):
        # Killed (SIGKILL, a reboot) without a word: its last record says it still works.
        return {
            "state": "none",
            "detail": f"the supervisor (pid {pid}) is gone; `tether open {name}` starts one",
        }
    keys = ("state", "since", "detail", "reconnects", "revives", "pid", "sync")
    return {k: st.get(k) for k in keys if k != "sync" or st.get(k)}


def _tunnel_text(t: dict[str, Any]) -> str:
    # sync_watch's word: "sync: conflict in PATH" stays in view until it is settled
    sync = f"; sync: {t['sync']}" if t.get("sync") else ""
    return _tunnel_state(t) + sync


def _tunnel_state(t: dict[str, Any]) -> str:
    if t["state"] == "reconnecting" and t.get("since"):
        return f"reconnecting ({output.ago(time.time() - float(t['since']))})"
    if t["state"] in ("failed", "stopped"):
        return f"{t['state']}: {t.get('detail')}"
    return str(t["state"])


def _text(row: dict[str, Any]) -> dict[str, str]:
    return {
        "name": row["name"],
        "host": row["host"],
        "state": row["state"] + _left(row.get("job")),
        "tunnel": _tunnel_text(row["tunnel"]),
        "pid": str(row["pid"]) + (f" (job {row['job']['id']})" if row.get("job") else ""),
        "uptime": output.ago(row["uptime"]) if row["uptime"] is not None else "-",
        "kernels": "-" if row["kernels"] is None else str(row["kernels"]),
        "activity": _activity(row["last_activity"]),
        "url": row["url"],
    }


def _left(job: dict[str, Any] | None) -> str:
    if not job or job.get("time_left") is None:
        return ""
    return f", {output.ago(float(job['time_left']))} left"


def _activity(stamp: str | None) -> str:
    if not stamp:
        return "-"
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return output.ago((datetime.now(timezone.utc) - when).total_seconds()) + " ago"
