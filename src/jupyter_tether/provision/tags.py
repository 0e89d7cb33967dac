"""Wheel platform tags: which uv wheel runs on the server, and which tags its pip accepts."""

from __future__ import annotations

import re
from collections.abc import Sequence


def _glibc_of_tag(tag: str) -> tuple[int, int] | None:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    for prefix, version in legacy.items():
        if tag.startswith(prefix + "_"):
            return version
    m = re.match(r"^manylinux_(\d+)_(\d+)_", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _tag_arch(tag: str) -> str:
    m = re.match(r"^(?:many|musl)linux(?:1|2010|2014|_\d+_\d+)_(.+)$", tag)
    return m.group(1) if m else tag.removeprefix("linux_")


def arch_tag(machine: str) -> str:
    """``uname -m`` as wheel tags spell it."""
    return {"i386": "i686", "i586": "i686", "amd64": "x86_64", "arm64": "aarch64"}.get(
        machine, machine
    )


def choose_uv_wheel(filenames: Sequence[str], machine: str, glibc: str | None) -> str | None:
    """The uv wheel that runs on a Linux ``machine`` with ``glibc`` (None: musl or unknown).

    A musllinux wheel holds a static binary that runs on any Linux: it wins. Otherwise
    the manylinux wheel with the newest glibc the server has (shared notes: provisioning).
    """
    arch = arch_tag(machine)
    have = tuple(int(x) for x in glibc.split(".")[:2]) if glibc else None
    static: list[str] = []
    dynamic: list[tuple[tuple[int, int], str]] = []
    for name in filenames:
        if not name.endswith(".whl"):
            continue
        tags = name[:-4].split("-")[-1].split(".")
        tags = [t for t in tags if _tag_arch(t) == arch]
        if any(t.startswith("musllinux_") for t in tags):
            static.append(name)
            continue
        needs = [g for g in (_glibc_of_tag(t) for t in tags) if g is not None]
        if needs and have is not None and min(needs) <= have:
            dynamic.append((min(needs), name))
    if static:
        return sorted(static)[0]
    if dynamic:
        return max(dynamic)[1]
    return None


def manylinux_platforms(machine: str, glibc: str | None) -> list[str]:
    """Every platform tag a server with this glibc accepts, newest first (pip download
    needs them all, or it settles for older pins: shared notes, provisioning)."""
    arch = arch_tag(machine)
    if not glibc:
        return [f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}"]
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for m, name in legacy.items():
        if m <= minor:
            tags.append(f"{name}_{arch}")
    return tags
