"""Batch-scheduler backends behind a few operations: render, submit, status, cancel.

Each backend turns a :class:`JobSpec` into argv lists and parses the scheduler's
output; running the commands (over ssh) is the caller's job, so backends stay pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

State = Literal["pending", "running", "ending", "done", "unknown"]


@dataclass(frozen=True)
class JobSpec:
    """What to ask the scheduler for; ``None`` leaves the site default."""

    name: str
    partition: str | None = None
    time: str | None = None
    cpus: int | None = None
    mem: str | None = None
    gpus: str | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    cluster: str | None = None
    extra_args: tuple[str, ...] = ()
    warn_seconds: int = 900


@dataclass(frozen=True)
class JobStatus:
    state: State
    reason: str | None = None
    node: str | None = None
    time_left: int | None = None  # seconds; None when unlimited or unknown
    expected_start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class Partition:
    name: str
    time_limit: str
    available: str
    nodes: int
    cpus: str
    memory: str
    default: bool = False


class Scheduler(Protocol):
    def render(self, spec: JobSpec, body: str) -> str: ...
    def submit_argv(self, spec: JobSpec) -> list[str]: ...
    def parse_submit(self, rc: int, stdout: str, stderr: str) -> tuple[str, str | None]: ...
    def status_argv(self, job_id: str, cluster: str | None = None) -> list[str]: ...
    def parse_status(self, rc: int, stdout: str, stderr: str) -> JobStatus: ...
    def cancel_argv(self, job_id: str, cluster: str | None = None) -> list[str]: ...
    def partitions_argv(self, cluster: str | None = None) -> list[str]: ...
    def parse_partitions(self, stdout: str) -> Sequence[Partition]: ...
