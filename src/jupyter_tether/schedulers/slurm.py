"""Slurm: ``sbatch --parsable`` with the script on stdin, ``squeue`` polling, ``scancel``.

Only options present in Slurm 22.05 through 25.x are used (shared Slurm notes).
"""

from __future__ import annotations

import re
import shlex

from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.schedulers import JobSpec, JobStatus, Partition, State

SQUEUE_FORMAT = "%T|%r|%N|%L|%e|%S"
SINFO_FORMAT = "%P|%l|%a|%D|%c|%m"

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"}
_RUNNING = {"RUNNING", "RESIZING", "SIGNALING", "STAGE_OUT"}
_ENDING = {"COMPLETING"}
# Reasons that no amount of waiting clears: the request itself is outside what is allowed.
_HOPELESS = (
    "PartitionTimeLimit",
    "MaxWallDuration",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "PartitionNodeLimit",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
)
_SUBMIT_ERRORS = (
    ("invalid partition name", "Slurm does not know that partition"),
    ("requested time limit is invalid", "the time limit is over the partition's limit"),
    ("invalid account", "Slurm does not know that account (or you may not use it)"),
    ("invalid qos", "Slurm does not know that QOS (or you may not use it)"),
    ("invalid feature specification", "no node has that constraint/feature"),
    ("requested node configuration is not available", "no node can satisfy the request"),
)


def parse_time_left(text: str) -> int | None:
    """Seconds from ``%L``: ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``; None for UNLIMITED etc."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _opt(value: str | None) -> str | None:
    return None if value in (None, "", "N/A", "(null)", "Unknown", "NONE") else value


class Slurm:
    name = "slurm"

    def render(self, spec: JobSpec, body: str) -> str:
        lines = body.splitlines()
        shebang = lines[0] if lines and lines[0].startswith("#!") else "#!/bin/bash"
        rest = lines[1:] if lines and lines[0].startswith("#!") else lines
        directives = [f"#SBATCH {shlex.quote(a)}" for a in self._options(spec)]
        return "\n".join([shebang, *directives, *rest]) + "\n"

    def _options(self, spec: JobSpec) -> list[str]:
        opts = [f"--job-name={spec.name}", f"--signal=B:USR1@{spec.warn_seconds}"]
        for flag, value in (
            ("--partition", spec.partition),
            ("--time", spec.time),
            ("--cpus-per-task", str(spec.cpus) if spec.cpus else None),
            ("--mem", spec.mem),
            ("--gpus", spec.gpus),
            ("--gres", spec.gres),
            ("--account", spec.account),
            ("--qos", spec.qos),
            ("--constraint", spec.constraint),
            ("--clusters", spec.cluster),
        ):
            if value:
                opts.append(f"{flag}={value}")
        return opts

    def submit_argv(self, spec: JobSpec) -> list[str]:
        """sbatch reads the script on stdin; options also go on argv so they win over #SBATCH."""
        return ["sbatch", "--parsable", *self._options(spec), *spec.extra_args]

    def parse_submit(self, rc: int, stdout: str, stderr: str) -> tuple[str, str | None]:
        if rc == 0:
            m = re.search(r"^(\d+)(?:;(\S+))?\s*$", stdout.strip(), re.M)
            if m:
                return m.group(1), m.group(2)
        low = stderr.lower()
        for needle, meaning in _SUBMIT_ERRORS:
            if needle in low:
                raise TetherError(
                    f"sbatch refused the job: {meaning}",
                    details=stderr.strip(),
                    hint="check partition/time/account in the profile or flags; "
                    "`sinfo -s` lists partitions and limits",
                    code=ExitCode.SCHEDULER,
                )
        raise TetherError(
            "sbatch failed", details=(stderr or stdout).strip(), code=ExitCode.SCHEDULER
        )

    def status_argv(self, job_id: str, cluster: str | None = None) -> list[str]:
        argv = ["squeue", "-h", "-j", job_id, "-o", SQUEUE_FORMAT]
        return argv + ([f"--clusters={cluster}"] if cluster else [])

    def parse_status(self, rc: int, stdout: str, stderr: str) -> JobStatus:
        if "invalid job id specified" in stderr.lower():
            return JobStatus(state="done", reason="purged")
        if rc != 0:
            return JobStatus(
                state="unknown",
                reason=stderr.strip().splitlines()[-1:][0]
                if stderr.strip()
                else f"squeue exit {rc}",
            )
        rows = [r for r in stdout.splitlines() if r.count("|") == 5]
        if not rows:  # gone from squeue: ended
            return JobStatus(state="done")
        raw_state, reason, node, left, end, start = rows[0].split("|")
        state = raw_state.strip().split()[0] if raw_state.strip() else ""
        kind: State
        if state in _PENDING:
            kind = "pending"
        elif state in _RUNNING:
            kind = "running"
        elif state in _ENDING:
            kind = "ending"
        else:
            kind = "done"
        return JobStatus(
            state=kind,
            reason=_opt(reason.strip()),
            node=_opt(node.strip()),
            time_left=parse_time_left(left),
            expected_start=_opt(start.strip()) if kind == "pending" else None,
            end=_opt(end.strip()),
        )

    def cancel_argv(self, job_id: str, cluster: str | None = None) -> list[str]:
        return ["scancel", *([f"--clusters={cluster}"] if cluster else []), job_id]

    def partitions_argv(self, cluster: str | None = None) -> list[str]:
        return ["sinfo", "-h", "-o", SINFO_FORMAT, *([f"--clusters={cluster}"] if cluster else [])]

    def parse_partitions(self, stdout: str) -> list[Partition]:
        parts = []
        for row in stdout.splitlines():
            f = row.split("|")
            if len(f) != 6 or not f[3].strip().isdigit():
                continue
            name = f[0].strip()
            parts.append(
                Partition(name.rstrip("*"), f[1], f[2], int(f[3]), f[4], f[5], name.endswith("*"))
            )
        return parts


def hopeless(status: JobStatus) -> bool:
    """A pending reason that can never clear: the request is outside what is allowed.

    ReqNodeNotAvail is not one: drained or down nodes come back when an administrator
    resumes them, and the job then starts.
    """
    reason = status.reason or ""
    return status.state == "pending" and any(h in reason for h in _HOPELESS)


def hopeless_error(status: JobStatus, partitions: list[Partition]) -> TetherError:
    table = "\n".join(
        f"{p.name}{' (default)' if p.default else ''}: time limit {p.time_limit}, "
        f"{p.available}, {p.nodes} nodes, {p.cpus} cpus, {p.memory} MB"
        for p in partitions
    )
    return TetherError(
        f"the job can never start: Slurm says {status.reason}",
        details=f"partitions:\n{table}" if table else None,
        hint="pick a partition and time within these limits (--partition, --time)",
        code=ExitCode.SCHEDULER,
    )
