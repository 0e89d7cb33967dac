"""A batch job as the workstation records it, the scheduler backends, and the
workstation's own files for a job (the bridge's key and ssh configs)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import paths
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.schedulers import JobSpec
from jupyter_tether.schedulers.slurm import Slurm


@dataclass(frozen=True)
class Job:
    """A submitted job: what the workstation records of it (``state.Record.job``)."""

    id: str
    cluster: str | None
    scheduler: str = "slurm"
    node: str | None = None
    session: str | None = None
    method: str | None = None  # how the workstation reaches the node: bridge
    path: str | None = None  # the login node's PATH, where the scheduler's commands are

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})  # type: ignore[arg-type]


def backend(profile: Profile) -> Slurm:
    return scheduler(profile.scheduler or "")


def scheduler(name: str) -> Slurm:
    if name != "slurm":
        raise TetherError(f"unknown scheduler {name!r}", code=ExitCode.CONFIG)
    return Slurm()


def spec_of(profile: Profile) -> JobSpec:
    return profile.job or JobSpec(name=f"tether-{profile.name}")


# --- the workstation's files for a job --------------------------------------------------


def job_dir(name: str) -> Path:
    paths.ensure_private_dir(paths.state_dir() / "jobs")
    return paths.ensure_private_dir(paths.state_dir() / "jobs" / name)


def forget(name: str) -> None:
    """Remove the workstation's files for the job of ``name`` (the bridge key too)."""
    shutil.rmtree(paths.state_dir() / "jobs" / name, ignore_errors=True)


def client_key(name: str) -> str:
    """The public half of the key the bridge's sshd lets in (made once per server)."""
    key = job_dir(name) / "bridge_key"
    if not key.exists():
        done = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tether-{name}", "-f", key],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise TetherError(
                f"ssh-keygen could not make the bridge key: {done.stderr.strip()}",
                code=ExitCode.ERROR,
            )
    return Path(f"{key}.pub").read_text().strip()
