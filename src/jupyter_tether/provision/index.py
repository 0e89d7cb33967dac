"""The package index, from the workstation: listings (PEP 503/691) and the uv wheel."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from jupyter_tether import output, paths
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.provision.tags import choose_uv_wheel

UV_VERSION = "0.13.9"
DEFAULT_INDEX = "https://pypi.org/simple"


def _http_get(
    url: str, accept: str | None = None, timeout: float = 60, meter: output.Meter | None = None
) -> tuple[bytes, str]:
    if not url.startswith(("https://", "http://", "file://")):
        raise TetherError(f"{url}: not an http(s) or file URL", code=ExitCode.CONFIG)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, headers={"Accept": accept} if accept else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            if meter is None:
                data: bytes = resp.read()
            else:
                meter.total = int(resp.headers.get("Content-Length") or 0) or None
                chunks = []
                while chunk := resp.read(1 << 18):
                    chunks.append(chunk)
                    meter.add(len(chunk))
                data = b"".join(chunks)
            return data, str(resp.headers.get("Content-Type", ""))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise TetherError(
            f"cannot fetch {url}: {getattr(exc, 'reason', exc)}",
            hint="this workstation needs to reach the package index (index_url in the profile)",
            code=ExitCode.PROVISION,
        ) from exc


def index_files(index_url: str, project: str) -> dict[str, tuple[str, str | None]]:
    """filename -> (url, sha256) from a PEP 503/691 simple index."""
    page = index_url.rstrip("/") + f"/{project}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    body, ctype = _http_get(page, accept)
    files: dict[str, tuple[str, str | None]] = {}
    if "json" in ctype:
        for f in json.loads(body).get("files", []):
            files[f["filename"]] = (
                urllib.parse.urljoin(page, f["url"]),
                f.get("hashes", {}).get("sha256"),
            )
        return files
    for href, name in re.findall(r'<a[^>]+href="([^"]+)"[^>]*>\s*([^<]+?)\s*</a>', body.decode()):
        url, _, frag = urllib.parse.urljoin(page, href).partition("#")
        files[name] = (url, frag.removeprefix("sha256=") if frag.startswith("sha256=") else None)
    return files


def uv_wheel(found: Probe, index_url: str | None, progress: output.Progress) -> Path:
    """The uv wheel for the server's platform, from the local cache or the index."""
    cache = paths.cache_dir() / "uv" / UV_VERSION
    for cached in sorted(cache.glob("*.whl")) if cache.is_dir() else []:
        if choose_uv_wheel([cached.name], found.arch, found.glibc):
            return cached
    listing = index_files(index_url or DEFAULT_INDEX, "uv")
    files = {k: v for k, v in listing.items() if k.startswith(f"uv-{UV_VERSION}-")}
    wheel = choose_uv_wheel(list(files), found.arch, found.glibc)
    if wheel is None:
        raise TetherError(
            f"no uv {UV_VERSION} build for {found.arch} with glibc {found.glibc or 'none'}",
            hint="set `env` to an existing environment with Jupyter instead",
            code=ExitCode.PROVISION,
        )
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / wheel
    url, sha = files[wheel]
    start = time.monotonic()
    with progress.meter(f"fetching {wheel}") as meter:
        data, _ = _http_get(url, timeout=300, meter=meter)
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise TetherError(f"{wheel}: checksum mismatch", code=ExitCode.PROVISION)
    say_rate(progress, f"fetched {wheel}", len(data), time.monotonic() - start)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def say_rate(progress: output.Progress, what: str, size: int, seconds: float) -> None:
    """One line for a transfer: what, how much, how fast."""
    mb = size / 1e6
    progress.say(f"  {what}: {mb:.1f} MB in {seconds:.1f} s ({mb / max(seconds, 1e-3):.1f} MB/s)")
