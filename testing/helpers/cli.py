"""Running the CLI in this process, and writing the profiles it reads."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import cli


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str


class Tether:
    """``tether(*argv)`` runs the CLI in this process and captures what it prints."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.profiles: dict[str, dict[str, object]] = {}

    def __call__(self, *argv: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
        return Run(rc, out.getvalue(), err.getvalue())

    def profile(self, name: str, **keys: object) -> None:
        self.profiles[name] = keys
        self.write()

    def write(self) -> None:
        write_profiles(self.config_path, self.profiles)


def write_profiles(path: Path, profiles: Mapping[str, Mapping[str, object]]) -> None:
    """Write ``profiles`` (host name -> keys) as the tool's config file at ``path``."""
    lines = []
    for name, keys in profiles.items():
        lines.append(f'[hosts."{name}"]')
        lines.extend(f"{k} = {toml_value(v)}" for k, v in keys.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def toml_value(value: object) -> str:
    """Enough TOML for profiles: strings, numbers, booleans, lists, inline tables."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)
