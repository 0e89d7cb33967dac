"""The agent's batch jobs: prepare a session, submit ``job.sh``, report, cancel.

The scheduler's own commands come from the workstation as argv
(``jupyter_tether/schedulers``) and their raw output goes back to it, so that what a
scheduler prints is read in one place. This module only keeps the session directory
(``core.JobPaths``) and runs those commands on the login node.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from typing import Dict, List, Optional

from . import core, launching, planning, servers
from .core import JobPaths, Json, RemoteError


def job_lock(p: JobPaths, timeout: float) -> core.Lock:
    return core.busy_lock(p.lock, timeout, "this job")


def run_argv(
    argv: List[str], path: str, stdin: str = "", env: Optional[Dict[str, str]] = None
) -> Json:
    """Run a scheduler command; its rc, stdout and stderr as they are (rc 127: not found)."""
    full = dict(os.environ, PATH=path, **(env or {}))
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        return {"rc": 127, "stdout": "", "stderr": "%s: command not found" % argv[0]}
    try:
        cp = subprocess.run(
            [exe, *argv[1:]],
            input=stdin.encode(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"rc": 124, "stdout": "", "stderr": "%s did not answer within 60 s" % argv[0]}
    return {
        "rc": cp.returncode,
        "stdout": cp.stdout.decode(errors="replace"),
        "stderr": cp.stderr.decode(errors="replace"),
    }


def _job_env(req: Json, p: JobPaths, argv: List[str], facts: Json) -> str:
    from shlex import quote as q

    lines = [
        "# written by jupyter-tether; sourced by job.sh (no secrets in here)",
        "TETHER_NAME=%s" % q(p.name),
        "TETHER_MODULES=%s" % q(" ".join(req.get("modules") or [])),
        "TETHER_MODULE_INIT=%s" % q(req.get("module_init") or ""),
        "TETHER_STARTUP=%d" % int(10 * float(req.get("startup_timeout") or 90)),
        "TETHER_TRANSPORT=%s" % ("tcp" if req.get("transport") == "tcp" else "socket"),
        "PATH=%s" % q(facts["path"]),
        "export PATH",
    ]
    for key, value in sorted((req.get("env_vars") or {}).items()):
        lines.append("%s=%s; export %s" % (key, q(str(value)), key))
    if req.get("snapshots"):
        lines.append(planning.snapshot_config_line(p.snapshot_config))
    lines.append("set -- " + " ".join(q(a) for a in argv))
    return "\n".join(lines) + "\n"


def _bridge_keys(p: JobPaths, client_key: str, path: str) -> Optional[str]:
    """A host key for the job's own sshd (the stdio bridge) and the one client key it
    lets in, limited to forwarding. Returns the host's public key, or None without
    ssh-keygen."""
    keygen = shutil.which("ssh-keygen", path=path)
    if keygen is None or not client_key:
        return None
    core.remove_quietly(p.host_key)
    core.remove_quietly(p.host_key + ".pub")
    null = subprocess.DEVNULL
    argv = [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "tether-job", "-f", p.host_key]
    if subprocess.run(argv, stdin=null, stdout=null, stderr=null, check=False).returncode:
        return None
    core.write_private(p.bridge_keys, "restrict,port-forwarding %s\n" % client_key.strip())
    return core.read_text(p.host_key + ".pub")


def op_job_submit(req: Json) -> Json:
    """A fresh session for ``name``, then ``submit_argv`` with job.sh on its stdin."""
    p = JobPaths(req["name"])
    core.private_tree(os.path.dirname(p.session))
    with job_lock(p, 60):
        core.remove_quietly(p.session)
        core.private_dir(p.session)
        argv, config, facts = planning.plan_jupyter(req, p.config)
        if not facts["sock_ok"]:
            raise RemoteError(
                "jupyter_too_old",
                "this Jupyter cannot listen on a Unix socket, which a batch job needs",
                "use jupyter_server >= 1.9 (the default managed environment has it)",
            )
        core.write_private(p.config, json.dumps(config))
        launching.write_snapshot_config(p.snapshot_config, req.get("snapshots"))
        core.write_private(p.job_env, _job_env(req, p, argv, facts))
        host_key = _bridge_keys(p, req.get("bridge_client_key") or "", facts["path"])
        submit = [*req["submit_argv"], "--output=" + p.output, "--chdir=" + os.path.expanduser("~")]
        env = {"TETHER_SESSION": p.session}
        done = run_argv(submit, facts["path"], req["script"], env)
        record = {
            "name": p.name,
            "submitted": time.time(),
            "login_host": socket.gethostname(),
            "stdout": done["stdout"].strip(),
            "cluster": req.get("cluster"),
        }
        if done["rc"] == 0:
            core.write_private(p.job, json.dumps(record))
        else:
            core.remove_quietly(p.session)
        return dict(done, session=p.session, host_key=host_key, versions=facts["versions"])


def op_job_status(req: Json) -> Json:
    """The scheduler's answer (``status_argv``) and what the job wrote in its session."""
    p = JobPaths(req["name"])
    out: Json = {"session": p.session, "exists": os.path.isdir(p.session)}
    if req.get("status_argv"):
        out["squeue"] = run_argv(req["status_argv"], req.get("path") or os.environ["PATH"])
    out["job"] = core.read_json(p.job)
    out["ready"] = core.read_json(p.ready)
    out["ended"] = core.read_json(p.ended)
    warned = core.read_text(p.warned)
    out["warned"] = float(warned) if warned.isdigit() else None
    if req.get("output_lines"):
        out["output"] = core.log_tail(p.output, int(req["output_lines"]))
    out["host_key"] = core.read_text(p.host_key + ".pub") or None
    if out["job"] is not None and os.path.exists(p.config):
        out["token"] = servers.read_token_file(p.config)
    return out


def op_job_cancel(req: Json) -> Json:
    """``cancel_argv``, then remove the session (with ``forget``)."""
    p = JobPaths(req["name"])
    with job_lock(p, 60):
        done = (
            run_argv(req["cancel_argv"], req.get("path") or os.environ["PATH"])
            if req.get("cancel_argv")
            else None
        )
        if req.get("forget"):
            core.remove_quietly(p.session)
        return {"cancel": done, "session": p.session}
