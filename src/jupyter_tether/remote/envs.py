"""The builder's environments: build one beside the others, check it, swap it in, and
collect the old ones; add packages to one; describe one."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import List, Optional

from . import core
from .core import Json, RemoteError, place
from .runner import base_env, disk_full, free_mb, run, tail, tree_mb, with_modules

MARKER = ".tether-env.json"


def env_dir(name: str) -> str:
    return place("envs", name)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def build_lock(timeout: float) -> core.Lock:
    """Builds of one account never overlap."""
    return core.Lock(
        place("envs", ".lock"),
        timeout,
        "another tether command has been building an environment here for %d s" % timeout,
        "wait for it to finish, then run the command again",
    )


def complete_envs() -> List[Json]:
    """The markers of the complete environments, each with its ``dir``."""
    root = place("envs")
    out = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        marker = core.read_json(os.path.join(root, entry, MARKER))
        if marker is not None:
            marker["dir"] = os.path.join(root, entry)
            out.append(marker)
    return out


def clean_incoming() -> List[str]:
    """Remove what interrupted builds left; callers hold the lock, so none is running."""
    incoming = place("envs", ".incoming")
    removed = []
    for entry in os.listdir(incoming) if os.path.isdir(incoming) else []:
        remove_tree(os.path.join(incoming, entry))
        removed.append(entry)
    return removed


def in_use() -> List[str]:
    """Environments a live server runs from (by the agent's state files)."""
    root = core.servers_root()
    used = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        st = core.read_json(core.Paths(name).state) or {}
        pid = st.get("pid")
        if isinstance(pid, int) and core.pid_alive(pid) and st.get("jupyter"):
            used.append(os.path.dirname(os.path.dirname(str(st["jupyter"]))))
    return used


def collect_garbage(profile: str, keep: str) -> List[str]:
    """Old environments of ``profile``: keep the new one, the last good one before it,
    and any a running server uses; remove the rest."""
    mine = [m for m in complete_envs() if m.get("profile") == profile and m["dir"] != keep]
    mine.sort(key=lambda m: float(m.get("created") or 0), reverse=True)
    used = set(in_use())
    removed = []
    for marker in mine[1:]:
        if marker["dir"] in used:
            continue
        remove_tree(marker["dir"])
        removed.append(os.path.basename(marker["dir"]))
    return removed


def uv_install_argv(req: Json, python: str, reqfile: str) -> List[str]:
    argv = [place("bin", "uv"), "pip", "install", "--python", python, "-r", reqfile]
    if req.get("offline"):
        argv += ["--offline", "--no-index", "--find-links", place("wheels")]
    else:
        if req.get("index_url"):
            argv += ["--index-url", req["index_url"]]
        for url in req.get("extra_index_urls") or []:
            argv += ["--extra-index-url", url]
    return argv


def install(req: Json, python: str, requirements: List[str], workdir: str) -> List[str]:
    reqfile = os.path.join(workdir, ".tether-requirements.txt")
    with open(reqfile, "w") as f:
        f.write("\n".join(requirements) + "\n")
    argv = uv_install_argv(req, python, reqfile)
    if req.get("left_out"):
        # uv's documented way to drop a dependency: override it with a marker that is
        # never true.
        overrides = os.path.join(workdir, ".tether-overrides.txt")
        with open(overrides, "w") as f:
            for name in req["left_out"]:
                f.write("%s ; sys_platform == 'never'\n" % name)
        argv += ["--override", overrides]
    argv = with_modules(argv, req)
    rc, out = run(argv, base_env(req), float(req.get("timeout") or 1800))
    if rc != 0:
        raise install_error(out, req)
    return [ln for ln in out.splitlines() if re.match(r"^(Resolved|Prepared|Installed) ", ln)]


def install_error(out: str, req: Json) -> RemoteError:
    """What uv's output says went wrong, as an error with a kind and a hint."""
    if disk_full(out):
        return RemoteError(
            "disk_full",
            "the disk is full (or over quota) in %s: %d MB free now"
            % (place("envs"), free_mb(place("envs"))),
            "free some space or raise the quota; the previous environment is untouched",
            output=tail(out),
        )
    missing = re.search(r"[Bb]ecause (\S+) was not found in the (?:package registry|provided)", out)
    if req.get("offline") and missing:
        return RemoteError(
            "no_wheel",
            "no wheel of %s for the server's platform in the offline wheel set" % missing.group(1),
            "the workstation could not fetch a wheel for it; choose another version",
            output=tail(out),
            missing=missing.group(1),  # a build's own requirement: the caller may fetch it
        )
    if missing:
        return RemoteError(
            "no_package",
            "no package named %s on the package index (%s)"
            % (missing.group(1), ", ".join(req.get("index_urls") or []) or "uv's default"),
            "check its spelling in `packages` or `requirements` (the name pip installs, "
            "e.g. scikit-learn), or set index_url to the index that has it",
            output=tail(out),
        )
    # uv explains an unsatisfiable set in sentences from "Because" to "unsatisfiable".
    conflict = re.search(r"Because (.+?) unsatisfiable", " ".join(out.split()))
    if conflict:
        return RemoteError(
            "conflict",
            "the requirements conflict: because %s unsatisfiable" % conflict.group(1)[:600],
            "relax or drop one of these pins in `packages` or `requirements`; tether adds "
            "ipykernel and the `jupyter` requirements (by default jupyterlab and "
            "jupyter_server>=2.21)",
            output=tail(out),
        )
    return RemoteError(
        "install_failed",
        "uv pip install failed: %s" % (tail(out, 1) or "no output"),
        "the output above says why; check the package names and the index",
        output=tail(out),
    )


def import_check(python: str, names: List[str], req: Json) -> List[str]:
    argv = with_modules([python, "-c", core.snippet("import_check.py"), json.dumps(names)], req)
    rc, out = run(argv, base_env(req), 300)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError(
            "import_failed", "the import check did not run: %s" % tail(out, 3)
        ) from None
    if rc != 0 or result["failed"]:
        failed = ", ".join("%s (%s)" % kv for kv in sorted(result["failed"].items()))
        raise RemoteError(
            "import_failed",
            "the new environment cannot import: %s" % failed,
            "a package may need a system library or a module; the old environment stays",
        )
    return list(result["checked"])


def register_kernels(prefix: str, kernels: List[str]) -> List[str]:
    """Kernelspecs for other environments, inside the new env's data dir, so that this
    Jupyter's launcher shows them. The env's own python3 kernel comes with ipykernel."""
    done = []
    for raw in kernels:
        env = os.path.expanduser(raw).rstrip("/")
        python = os.path.join(env, "bin", "python")
        if not os.access(python, os.X_OK):
            raise RemoteError(
                "bad_kernel",
                "kernels: %s has no bin/python" % raw,
                "list environments that have ipykernel installed",
            )
        name = re.sub(r"[^A-Za-z0-9._-]", "-", os.path.basename(env) or "env").lower()
        kernel_dir = os.path.join(prefix, "share", "jupyter", "kernels", "tether-" + name)
        spec = {
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (%s)" % raw,
            "language": "python",
        }
        with open(os.path.join(core.mkdirs(kernel_dir), "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        done.append("tether-" + name)
    return done


def check_space(path: str, need_mb: int) -> int:
    have = free_mb(path)
    if have < need_mb:
        raise RemoteError(
            "disk_full",
            "not enough disk space in %s: %d MB free, at least %d MB needed"
            % (path, have, need_mb),
            "free some space or raise the quota; the previous environment is untouched",
            free_mb=have,
            need_mb=need_mb,
        )
    return have


def _create(req: Json, work: str) -> Json:
    """Build the environment in ``work``: venv, install, import check, kernels, marker."""
    python = req["python"]
    t0 = time.monotonic()
    # --relocatable: scripts find their interpreter relative to themselves, so the
    # environment still works after the rename out of .incoming.
    argv = [place("bin", "uv"), "venv", "--quiet", "--relocatable", "--python", python]
    rc, out = run(with_modules([*argv, work], req), base_env(req), 300)
    if rc != 0:
        if disk_full(out):
            raise install_error(out, req)
        raise RemoteError("venv_failed", "uv venv failed: %s" % tail(out, 3))
    t1 = time.monotonic()
    lines = install(req, os.path.join(work, "bin", "python"), req["requirements"], work)
    t2 = time.monotonic()
    checked = import_check(os.path.join(work, "bin", "python"), req["import_names"], req)
    kernels = register_kernels(work, req.get("kernels") or [])
    marker = dict(req.get("marker") or {})
    marker.update(
        {
            "profile": req["profile"],
            "python": python,
            "python_version": req.get("python_version"),
            "created": time.time(),
            "requirements": req["requirements"],
            "left_out": req.get("left_out") or [],
            "offline": bool(req.get("offline")),
            "kernels": kernels,
            "added": [],
        }
    )
    with open(os.path.join(work, MARKER), "w") as f:
        json.dump(marker, f)
    timings = {"venv": t1 - t0, "install": t2 - t1, "check": time.monotonic() - t2}
    return {"checked": checked, "uv_lines": lines, "timings": timings}


def op_build(req: Json) -> Json:
    final = env_dir(req["env_name"])
    with build_lock(float(req.get("lock_timeout") or 900)):
        cleaned = clean_incoming()
        if os.path.isfile(os.path.join(final, MARKER)) and not req.get("force"):
            return {"env": final, "built": False, "cleaned": cleaned}
        incoming = core.mkdirs(place("envs", ".incoming"))
        check_space(incoming, int(req.get("min_free_mb") or 0))
        work = os.path.join(incoming, "%s.%d" % (req["env_name"], os.getpid()))
        try:
            made = _create(req, work)
            old = None
            if os.path.isdir(final):  # --rebuild: swap, then drop the old copy
                old = os.path.join(incoming, "%s.old.%d" % (req["env_name"], os.getpid()))
                os.rename(final, old)
            os.rename(work, final)
            if old:
                remove_tree(old)
        except BaseException:
            remove_tree(work)
            raise
        removed = collect_garbage(req["profile"], final)
        return dict(
            made,
            env=final,
            built=True,
            cleaned=cleaned,
            removed=removed,
            size_mb=tree_mb(final),
        )


def op_install(req: Json) -> Json:
    """Add packages to an existing environment (``tether install``)."""
    prefix = os.path.expanduser(req["env"])
    python = os.path.join(prefix, "bin", "python")
    if not os.access(python, os.X_OK):
        raise RemoteError("no_env", "%s is not an environment (no bin/python)" % req["env"])
    marker: Optional[Json] = None
    with build_lock(float(req.get("lock_timeout") or 900)):
        check_space(prefix, int(req.get("min_free_mb") or 0))
        lines = install(req, python, req["requirements"], core.mkdirs(place("tmp")))
        checked = import_check(python, req["import_names"], req)
        marker_path = os.path.join(prefix, MARKER)
        marker = core.read_json(marker_path)
        if marker is not None:
            added = list(marker.get("added") or [])
            added += [r for r in req["requirements"] if r not in added]
            marker["added"] = added
            tmp = marker_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(marker, f)
            os.replace(tmp, marker_path)
    return {"env": prefix, "checked": checked, "uv_lines": lines, "managed": marker is not None}


def op_describe(req: Json) -> Json:
    prefix = os.path.expanduser(req["env"])
    python = os.path.join(prefix, "bin", "python")
    if not os.access(python, os.X_OK):
        return {"exists": False, "env": prefix}
    rc, out = run([python, "-c", core.snippet("list_packages.py")], base_env(req), 60)
    try:
        listing = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    except (ValueError, IndexError):
        listing = {}
    return {
        "exists": True,
        "env": prefix,
        "marker": core.read_json(os.path.join(prefix, MARKER)),
        "python": listing.get("python"),
        "packages": listing.get("packages", []),
        "size_mb": tree_mb(prefix),
        "others": [os.path.basename(m["dir"]) for m in complete_envs()],
    }


# IPython reads ``ipython_kernel_config.py`` from ``sys.prefix/etc/ipython`` too
# (IPython.core.application.ENV_CONFIG_DIRS), so a file there reaches every kernel the
# environment starts and nothing else: not the account's ~/.ipython, not other envs.
AUTORELOAD_FILE = os.path.join("etc", "ipython", "ipython_kernel_config.py")
AUTORELOAD_MARK = "# Written by jupyter-tether for autoreload = true"
AUTORELOAD_CONFIG = AUTORELOAD_MARK + (
    " (README: Local packages on the server).\n"
    "# A module changed on disk is reloaded before each cell runs; appending keeps what\n"
    "# other config files list.\n"
    'c.InteractiveShellApp.extensions.append("autoreload")  # noqa: F821\n'
    'c.InteractiveShellApp.exec_lines.append("%autoreload 2")  # noqa: F821\n'
)


def set_autoreload(prefix: str, on: bool) -> bool:
    """Write (or remove) the environment's autoreload config; a file of that name that
    tether did not write is left alone. Whether autoreload is on afterwards."""
    path = os.path.join(prefix, AUTORELOAD_FILE)
    try:
        with open(path) as f:
            current: Optional[str] = f.read()
    except OSError:
        current = None
    if current is not None and not current.startswith(AUTORELOAD_MARK):
        return "autoreload" in current  # the user's own: theirs to change
    if on and current != AUTORELOAD_CONFIG:
        core.mkdirs(os.path.dirname(path))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(AUTORELOAD_CONFIG)
        os.replace(tmp, path)
    elif not on and current is not None:
        os.unlink(path)
    return on


def op_develop(req: Json) -> Json:
    """Install the synced ``develop`` folders editable into ``env`` and set autoreload.

    An editable install points the environment at the folder (a .pth file or an import
    hook), so a changed .py file needs no reinstall; only a changed dependency list or
    entry points do, and every ``up`` installs again for that."""
    prefix = os.path.expanduser(req["env"])
    python = os.path.join(prefix, "bin", "python")
    if not os.access(python, os.X_OK):
        raise RemoteError("no_env", "%s is not an environment (no bin/python)" % req["env"])
    root = os.path.expanduser(req.get("root_dir") or "~")
    folders = [os.path.join(root, rel) for rel in req.get("folders") or []]
    for folder in folders:
        if not (
            os.path.isfile(os.path.join(folder, "pyproject.toml"))
            or os.path.isfile(os.path.join(folder, "setup.py"))
        ):
            raise RemoteError(
                "not_a_package",
                "develop: %s has no pyproject.toml or setup.py after the sync" % folder,
                "list the folder that holds the package's pyproject.toml",
            )
    lines: List[str] = []
    with build_lock(float(req.get("lock_timeout") or 900)):
        if folders:
            check_space(prefix, int(req.get("min_free_mb") or 0))
            lines = install(req, python, ["-e " + f for f in folders], core.mkdirs(place("tmp")))
        autoreload = set_autoreload(prefix, bool(req.get("autoreload")))
    return {"env": prefix, "installed": folders, "uv_lines": lines, "autoreload": autoreload}
