"""Offline servers: wheels for the server's exact platform, downloaded here with pip
(pure-Python sdists built here where no wheel exists) and the missing ones copied over."""

from __future__ import annotations

import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from jupyter_tether import output, paths, proc, ssh
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.provision.copy import push
from jupyter_tether.provision.index import say_rate
from jupyter_tether.provision.spec import Spec
from jupyter_tether.provision.tags import arch_tag, manylinux_platforms

MAX_SDIST_BUILDS = 10  # offline: pure-Python sdists built into wheels here, per download


def download_wheels(
    spec: Spec, found: Probe, python_version: str, progress: output.Progress
) -> Path:
    """Wheels for the server's exact platform and Python, downloaded here with pip."""
    major, minor = python_version.split(".")[:2]
    key = f"{arch_tag(found.arch)}-glibc{found.glibc or 'musl'}-cp{python_version}"
    dest = paths.cache_dir() / "wheels" / key / spec.digest()
    dest.mkdir(parents=True, exist_ok=True)
    reqfile = dest.parent / f"{spec.digest()}.txt"
    reqfile.write_text("\n".join(spec.requirements) + "\n")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--dest", str(dest), "--python-version", python_version]
    argv += ["--implementation", "cp", "--abi", f"cp{major}{minor}", "--abi", "abi3"]
    argv += ["--abi", "none"]
    for tag in manylinux_platforms(found.arch, found.glibc):
        argv += ["--platform", tag]
    argv += _pip_index_args(spec)
    start = time.monotonic()

    def on_disk() -> int:
        return sum(f.stat().st_size for f in dest.iterdir() if f.is_file())

    cached = on_disk()

    def downloaded() -> int:
        return on_disk() - cached

    argv += ["--find-links", str(dest)]  # with the wheels built here from sdists
    built: list[str] = []
    for _ in range(MAX_SDIST_BUILDS + 1):
        with progress.meter("downloading wheels", watch=downloaded):
            res = proc.run([*argv, "-r", str(reqfile)], timeout=1800, stdin_devnull=True)
        if res.ok:
            break
        m = re.search(r"No matching distribution found for (\S+)", res.stderr)
        what = m.group(1) if m else "a requirement"
        if m is None or len(built) == MAX_SDIST_BUILDS or what in built:
            raise _no_wheel(what, python_version, found, res.stderr)
        # No wheel for the server: a pure-Python sdist built here serves it as well.
        with progress.meter(f"building {what} from its sdist"):
            _pure_wheel_from_sdist(what, spec, dest, python_version, found)
        progress.say(f"  built {what} here from its sdist (pure Python)")
        built.append(what)
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    count = len(list(dest.glob("*.whl")))
    say_rate(progress, f"{count} wheels for {key}", size, time.monotonic() - start)
    return dest


def _pip_index_args(spec: Spec) -> list[str]:
    argv = ["--index-url", spec.index_url] if spec.index_url else []
    for url in spec.extra_index_urls:
        argv += ["--extra-index-url", url]
    return argv


def _no_wheel(
    what: str,
    python_version: str,
    found: Probe,
    stderr: str = "",
    *,
    why: str = ": the server cannot reach the package index, so it can only install "
    "wheels sent from here",
) -> TetherError:
    return TetherError(
        f"no wheel of {what} for the server's platform (CPython {python_version}, "
        f"{found.arch}, glibc {found.glibc or 'none'}){why}",
        hint="pick a version that publishes wheels for that platform, or let the "
        "server reach the index (offline = false)",
        code=ExitCode.PROVISION,
        details=stderr.strip()[-1500:] or None,
    )


def _pure_wheel_from_sdist(
    what: str, spec: Spec, dest: Path, python_version: str, found: Probe
) -> None:
    """Build ``what`` from its sdist here into ``dest``, if the result is pure Python (a
    ``none-any`` wheel installs on any server); else the no-wheel error."""
    with tempfile.TemporaryDirectory(prefix="tether-sdist-") as tmp:
        argv = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check"]
        argv += ["--no-deps", "--no-binary", ":all:", "--wheel-dir", tmp, *_pip_index_args(spec)]
        res = proc.run([*argv, what], timeout=1800, stdin_devnull=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if not res.ok or len(wheels) != 1:
            raise _no_wheel(what, python_version, found, res.stderr)
        (wheel,) = wheels
        if not wheel.name.endswith("-none-any.whl"):
            compiled = f", and its sdist builds compiled code ({wheel.name}), which only the"
            raise _no_wheel(what, python_version, found, why=f"{compiled} server could build")
        wheel.replace(dest / wheel.name)


def push_wheels(
    target: ssh.Target, wheels: Path, have: Sequence[str], progress: output.Progress
) -> int:
    """Copy the wheels the server lacks; returns how many were sent."""
    missing = sorted(f for f in wheels.glob("*.whl") if f.name not in set(have))
    if not missing:
        progress.say("  the server has every wheel already")
        return 0
    with tempfile.NamedTemporaryFile(dir=paths.cache_dir(), suffix=".tar") as tmp:
        with tarfile.open(tmp.name, mode="w") as tf:
            for f in missing:
                tf.add(f, arcname=f.name)
        start = time.monotonic()
        sent = Path(tmp.name).stat().st_size
        with progress.meter(f"copying {len(missing)} wheels", sent) as meter:
            push(target, Path(tmp.name), "wheels", gz=False, meter=meter)
        size = sum(f.stat().st_size for f in missing)
        progress.bytes_copied += sent
        say_rate(progress, f"copied {len(missing)} wheels", size, time.monotonic() - start)
    return len(missing)
