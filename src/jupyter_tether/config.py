"""Profiles: ``[hosts.NAME]`` tables in a TOML file, resolved against CLI flags.

``tether up X`` where X is no profile means "the ssh destination X, with defaults".
A bad file is an error that names the file, the line where possible, and the key.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_tether import paths
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.schedulers import JobSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APPS = ("lab", "notebook")
TRANSPORTS = ("auto", "socket", "tcp")
SCHEDULERS = ("slurm",)
# What a managed environment gets when the profile names no `jupyter`: jupyter_server
# >= 2.21 fixes a token leak through Referer on 5xx pages (shared notes: jupyter-server).
DEFAULT_JUPYTER = ("jupyterlab", "jupyter_server>=2.21")
# Keys that ask for a managed environment (README: Managed environments); `env`
# (bring your own) wins over them.
PROVISION_KEYS = ("python", "packages", "requirements", "jupyter", "kernels")
# keep_outputs = true asks for one too (it needs packages of its own: provision/spec.py),
# and so do `develop` and autoreload = true: tether installs into and configures only an
# environment it manages (README: Local packages on the server).
DEVELOP_DIR = ".tether-develop"  # under root_dir on the server: one folder per package


@dataclass(frozen=True)
class SyncPair:
    """One ``sync = [{ local = ..., remote = ... }]`` entry (README: Syncing notebooks)."""

    local: str  # a folder on the workstation (~ allowed)
    remote: str  # on the server: relative to root_dir unless absolute
    exclude: tuple[str, ...] = ()  # more patterns, beside the defaults
    max_size_mb: float = 50.0  # larger files are left where they are, and said so


@dataclass(frozen=True)
class Profile:
    """Everything ``up`` needs to know about one server, after merging file and flags."""

    name: str
    ssh: str
    app: str = "lab"
    env: str | None = None
    root_dir: str = "~"
    modules: tuple[str, ...] = ()
    nice: int = 10
    env_vars: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    transport: str = "auto"
    startup_timeout: float = 90.0
    python: str | None = None
    packages: tuple[str, ...] = ()
    requirements: str | None = None
    jupyter: tuple[str, ...] = DEFAULT_JUPYTER
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    offline: bool | str = "auto"
    kernels: tuple[str, ...] = ()
    build_from_source: bool = False
    keep_outputs: bool = False  # outputs written on the server with no browser (README)
    snapshot_every: float = 300.0  # with keep_outputs: seconds between snapshots (README)
    snapshot_keep: int = 20  # with keep_outputs: snapshots kept per notebook
    scheduler: str | None = None  # run as a batch job of this scheduler (README: Clusters)
    job: JobSpec | None = None  # what to ask the scheduler for, with `scheduler`
    sync: tuple[SyncPair, ...] = ()  # folder pairs for `tether sync`
    sync_watch: bool = False  # the supervisor syncs them continuously while connected
    develop: tuple[str, ...] = ()  # local packages synced and installed editable
    # IPython's autoreload in the env's kernels; None: the profile does not say, and
    # the env is left as it is
    autoreload: bool | None = None
    provision: bool = False  # a managed environment was asked for (any PROVISION_KEYS)
    source: str = "defaults"  # where the profile came from, for `tether config`

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["modules"] = list(self.modules)
        d["env_vars"] = dict(self.env_vars)
        for key in ("packages", "jupyter", "extra_index_urls", "kernels", "sync", "develop"):
            d[key] = list(d[key])
        return d


# key -> (accepted python types, human description). Order is the documented order.
_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "ssh": ((str,), "a string (an ssh destination or ~/.ssh/config alias)"),
    "app": ((str,), 'one of "lab", "notebook"'),
    "env": ((str,), "a string (path to a venv or conda prefix on the server)"),
    "root_dir": ((str,), "a string (a directory on the server)"),
    "modules": ((list,), "a list of strings (module names)"),
    "nice": ((int,), "an integer from 0 to 19"),
    "env_vars": ((dict,), "a table of string values named like shell variables (A-Z, 0-9, _)"),
    "port": ((int,), "an integer from 1024 to 65535"),
    "transport": ((str,), 'one of "auto", "socket", "tcp"'),
    "startup_timeout": ((int, float), "a number of seconds"),
    "python": ((str,), 'a string: a version ("3.12"), a path, or "module:NAME"'),
    "packages": ((list,), "a list of strings (pip requirements)"),
    "requirements": ((str,), "a string (a local requirements.txt)"),
    "jupyter": ((str, list), 'a pip requirement or a list of them (e.g. "jupyterlab>=4.2")'),
    "index_url": ((str,), "a string (a package index URL)"),
    "extra_index_urls": ((list,), "a list of strings (package index URLs)"),
    "offline": ((str, bool), 'true, false or "auto"'),
    "kernels": ((list,), "a list of strings (environments on the server with ipykernel)"),
    "build_from_source": ((bool,), "true or false"),
    "keep_outputs": ((bool,), "true or false"),
    "snapshot_every": ((int, float), "a number of seconds"),
    "snapshot_keep": ((int,), "an integer (1 or more)"),
    "scheduler": ((str,), 'one of "slurm"'),
    "slurm": ((dict,), "a table of job settings ([hosts.NAME.slurm])"),
    "sync": (
        (list,),
        'a list of tables like { local = "~/work/proj", remote = "proj" } '
        "(optional: exclude = [patterns], max_size_mb = a number)",
    ),
    "sync_watch": ((bool,), "true or false (needs sync = [...])"),
    "develop": (
        (list,),
        'a list of local package folders with distinct names (e.g. ["~/work/mypkg"])',
    ),
    "autoreload": ((bool,), "true or false"),
}
_SYNC_KEYS = ("local", "remote", "exclude", "max_size_mb")
# [hosts.NAME.slurm]: key -> (types, description); names follow sbatch's options.
_SLURM_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "partition": ((str,), "a partition name"),
    "time": ((str, int), 'a time limit: minutes, or "D-HH:MM:SS", "HH:MM:SS", "MM:SS"'),
    "cpus": ((int,), "a number of CPUs (1 or more)"),
    "mem": ((str,), 'an amount of memory ("4G", "500M")'),
    "gpus": ((str, int), 'a number of GPUs, or "type:count"'),
    "gres": ((str,), 'a generic resource ("gpu:a100:1")'),
    "account": ((str,), "an account name"),
    "qos": ((str,), "a QOS name"),
    "constraint": ((str,), "a node feature expression"),
    "cluster": ((str,), "a cluster name (sbatch -M)"),
    "sbatch_args": ((list,), "a list of strings, passed to sbatch as they are"),
    "warn_minutes": ((int,), "minutes before the end to warn (and signal the job)"),
}
_TIME_RE = re.compile(r"^(\d+|\d+-\d{1,2}(:\d{2}(:\d{2})?)?|(\d+:)?\d{1,2}:\d{2})$")
_WORD_RE = re.compile(r"^[A-Za-z0-9_.:,=+/@%-]+$")
_STR_LISTS = ("modules", "packages", "extra_index_urls", "kernels")

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEVELOP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def load_file(path: Path) -> dict[str, Any]:
    """Parse the config file; a missing file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TetherError(
            f"cannot read config file {path}: {exc.strerror}",
            hint="check the file's permissions, or set JUPYTER_TETHER_CONFIG",
            code=ExitCode.CONFIG,
        ) from exc
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TetherError(
            f"{path}: invalid TOML: {exc}",
            hint="fix the syntax at that line (strings need quotes; tables look like [hosts.NAME])",
            code=ExitCode.CONFIG,
        ) from exc
    _validate(path, text, data)
    return data


def _validate(path: Path, text: str, data: Mapping[str, Any]) -> None:
    for top, value in data.items():
        if top not in ("hosts", "defaults"):
            _fail(
                path, text, top, None, f"unknown top-level key {top!r}", "use [hosts.NAME] tables"
            )
        if not isinstance(value, dict):
            _fail(path, text, top, None, f"{top!r} must be a table", f"write it as [{top}]")
    for key, value in data.get("defaults", {}).items():
        _check_key(path, text, "defaults", key, value)
    for name, table in data.get("hosts", {}).items():
        table_name = f"hosts.{name}"
        if not isinstance(table, dict):
            _fail(path, text, name, "hosts", f"[{table_name}] must be a table", None)
        check_name(name, where=f"{path}: [{table_name}]")
        for key, value in table.items():
            _check_key(path, text, table_name, key, value)


def _check_key(path: Path, text: str, table: str, key: str, value: Any) -> None:
    if key not in _KEYS:
        close = [k for k in _KEYS if k.startswith(key[:3])]
        hint = f"did you mean {close[0]!r}? " if close else ""
        _fail(
            path,
            text,
            key,
            table,
            f"unknown key {key!r} in [{table}]",
            f"{hint}known keys: {', '.join(_KEYS)}",
        )
    types, desc = _KEYS[key]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok and key in _STR_LISTS:
        ok = all(isinstance(m, str) and m for m in value)
    if ok and key == "jupyter":
        ok = bool(value) and all(isinstance(m, str) and m for m in _as_list(value))
    if ok and key == "offline":
        ok = isinstance(value, bool) or value == "auto"
    if ok and key in ("python", "requirements", "index_url"):
        ok = bool(value.strip())
    if ok and key == "env_vars":
        # Names reach a shell script on the server (launch.env): identifiers only.
        ok = all(isinstance(v, str) and _ENV_NAME_RE.match(k) for k, v in value.items())
    if ok and key == "app":
        ok = value in APPS
    if ok and key == "transport":
        ok = value in TRANSPORTS
    if ok and key == "nice":
        ok = 0 <= value <= 19
    if ok and key == "port":
        ok = 1024 <= value <= 65535
    if ok and key == "startup_timeout":
        ok = 0 < value <= 3600
    if ok and key == "scheduler":
        ok = value in SCHEDULERS
    if ok and key == "sync":
        ok = all(_sync_entry_ok(entry) for entry in value)
    if ok and key == "develop":
        ok = all(isinstance(d, str) and d.strip() and develop_name(d) for d in value)
        # each is synced to DEVELOP_DIR/<its folder's name>: two of one name would share it
        ok = ok and len({develop_name(d) for d in value}) == len(value)
    if not ok:
        _fail(path, text, key, table, f"[{table}] {key} = {value!r}: must be {desc}", None)
    if key == "slurm":
        for sub, sub_value in value.items():
            _check_slurm_key(path, text, f"{table}.slurm", sub, sub_value)


def _sync_entry_ok(entry: Any) -> bool:
    if not isinstance(entry, dict) or set(entry) - set(_SYNC_KEYS):
        return False
    local, remote = entry.get("local"), entry.get("remote")
    if not (isinstance(local, str) and local.strip() and isinstance(remote, str) and remote):
        return False
    exclude = entry.get("exclude", [])
    if not (isinstance(exclude, list) and all(isinstance(e, str) and e for e in exclude)):
        return False
    size = entry.get("max_size_mb", 50.0)
    return isinstance(size, int | float) and not isinstance(size, bool) and size > 0


def develop_name(folder: str) -> str:
    """The name a ``develop`` folder has on the server: its last component."""
    name = Path(folder.rstrip("/")).name
    return name if _DEVELOP_NAME_RE.match(name) else ""


def develop_pairs(profile: Profile) -> tuple[SyncPair, ...]:
    """The ``develop`` folders as sync pairs (README: Local packages on the server).
    Build output and the metadata an editable install writes stay on their side."""
    return tuple(
        SyncPair(
            local=folder,
            remote=f"{DEVELOP_DIR}/{develop_name(folder)}",
            exclude=("*.egg-info/", "build/", "dist/", ".venv/", ".tox/"),
        )
        for folder in profile.develop
    )


def _check_slurm_key(path: Path, text: str, table: str, key: str, value: Any) -> None:
    if key not in _SLURM_KEYS:
        _fail(
            path,
            text,
            key,
            table,
            f"unknown key {key!r} in [{table}]",
            f"known keys: {', '.join(_SLURM_KEYS)}",
        )
    types, desc = _SLURM_KEYS[key]
    if not slurm_value_ok(key, value, types):
        _fail(path, text, key, table, f"[{table}] {key} = {value!r}: must be {desc}", None)


def slurm_value_ok(key: str, value: Any, types: tuple[type, ...] | None = None) -> bool:
    """Whether ``value`` is a usable ``[hosts.NAME.slurm]`` ``key`` (also for flags)."""
    types = types or _SLURM_KEYS[key][0]
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    v: Any = value  # narrowed to `object` by the isinstance with a tuple of types
    if key == "sbatch_args":
        return all(isinstance(a, str) and a for a in v)
    if key in ("cpus", "warn_minutes"):
        return int(v) >= 1
    if key == "time":
        return bool(_TIME_RE.match(str(v)))
    if key == "gpus" and isinstance(v, int):
        return v >= 1
    # Everything else becomes one sbatch option value: no spaces or shell characters.
    return bool(_WORD_RE.match(str(v)))


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _fail(
    path: Path, text: str, key: str, table: str | None, message: str, hint: str | None
) -> None:
    line = _find_line(text, key, table)
    where = f"{path}:{line}" if line else str(path)
    raise TetherError(
        f"{where}: {message}", hint=hint or "see `tether config --help`", code=ExitCode.CONFIG
    )


def _find_line(text: str, key: str, table: str | None) -> int | None:
    """Best-effort line number of ``key`` inside ``[table]`` (TOML parsers don't report it)."""
    current: str | None = None
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[+\s*([^\]]+?)\s*\]+", line)
        if header:
            current = header.group(1).replace('"', "").replace("'", "")
            if table is None and current.split(".")[0] == key:
                return number
            if table is not None and current == f"{table}.{key}":
                return number
            continue
        if current == table and key_re.match(line):
            return number
        if table is None and current is None and key_re.match(line):
            return number
    return None


def check_name(name: str, *, where: str = "profile name") -> str:
    """Profile and host names become file names locally and on the server: keep them plain."""
    if not _NAME_RE.match(name):
        raise TetherError(
            f"{where}: {name!r} is not a usable name",
            hint="use letters, digits, '.', '_', '-' or '@' (at most 64), starting with a "
            "letter or digit; put the real ssh destination in the profile's `ssh` key",
            code=ExitCode.CONFIG,
        )
    return name


def resolve(
    name: str,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Profile:
    """The profile ``name``: built-in defaults < [defaults] < [hosts.NAME] < CLI flags."""
    check_name(name)
    path = config_path or paths.config_file()
    data = load_file(path)
    merged: dict[str, Any] = dict(data.get("defaults", {}))
    hosts = data.get("hosts", {})
    source = "defaults"
    if name in hosts:
        merged.update(hosts[name])
        source = f"{path} [hosts.{name}]"
    slurm: dict[str, Any] = dict(merged.get("slurm", {}))
    for key, value in (overrides or {}).items():
        if key == "slurm":
            slurm.update({k: v for k, v in value.items() if v is not None})
        elif value is not None:
            merged[key] = value
    for key, value in slurm.items():
        if not slurm_value_ok(key, value):
            raise TetherError(
                f"--{key.replace('_', '-')} {value!r}: must be {_SLURM_KEYS[key][1]}",
                code=ExitCode.USAGE,
            )
    scheduler = merged.get("scheduler") or None
    job_flags = any(v is not None for v in (overrides or {}).get("slurm", {}).values())
    if scheduler is None and job_flags:
        scheduler = "slurm"  # job flags on the command line mean "as a job"
    return Profile(
        name=name,
        ssh=merged.get("ssh", name),
        app=merged.get("app", "lab"),
        env=merged.get("env"),
        root_dir=merged.get("root_dir", "~"),
        modules=tuple(merged.get("modules", ())),
        nice=int(merged.get("nice", 10)),
        env_vars=tuple(sorted(merged.get("env_vars", {}).items())),
        port=merged.get("port"),
        transport=merged.get("transport", "auto"),
        startup_timeout=float(merged.get("startup_timeout", 90.0)),
        python=merged.get("python"),
        packages=tuple(merged.get("packages", ())),
        requirements=merged.get("requirements"),
        jupyter=tuple(_as_list(merged["jupyter"])) if "jupyter" in merged else DEFAULT_JUPYTER,
        index_url=merged.get("index_url"),
        extra_index_urls=tuple(merged.get("extra_index_urls", ())),
        offline=merged.get("offline", "auto"),
        kernels=tuple(merged.get("kernels", ())),
        build_from_source=bool(merged.get("build_from_source", False)),
        keep_outputs=bool(merged.get("keep_outputs", False)),
        snapshot_every=float(merged.get("snapshot_every", 300.0)),
        snapshot_keep=max(1, int(merged.get("snapshot_keep", 20))),
        scheduler=scheduler,
        job=_job(name, slurm) if scheduler else None,
        sync=tuple(
            SyncPair(
                local=e["local"],
                remote=e["remote"],
                exclude=tuple(e.get("exclude", ())),
                max_size_mb=float(e.get("max_size_mb", 50.0)),
            )
            for e in merged.get("sync", ())
        ),
        sync_watch=bool(merged.get("sync_watch", False)),
        develop=tuple(merged.get("develop", ())),
        autoreload=merged.get("autoreload"),
        provision=any(key in merged for key in PROVISION_KEYS)
        or merged.get("keep_outputs") is True
        or bool(merged.get("develop"))
        or merged.get("autoreload") is True,
        source=source,
    )


def _job(name: str, table: Mapping[str, Any]) -> JobSpec:
    gpus = table.get("gpus")
    return JobSpec(
        name=f"tether-{name}",
        partition=table.get("partition"),
        time=str(table["time"]) if "time" in table else None,
        cpus=table.get("cpus"),
        mem=table.get("mem"),
        gpus=str(gpus) if gpus is not None else None,
        gres=table.get("gres"),
        account=table.get("account"),
        qos=table.get("qos"),
        constraint=table.get("constraint"),
        cluster=table.get("cluster"),
        extra_args=tuple(table.get("sbatch_args", ())),
        warn_seconds=60 * int(table.get("warn_minutes", 15)),
    )


def profile_names(config_path: Path | None = None) -> list[str]:
    data = load_file(config_path or paths.config_file())
    return sorted(data.get("hosts", {}))
