"""`tether mount` / `tether umount`: the server's folder at a local directory, with sshfs
over the same ssh master (README: Mount)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from jupyter_tether import mount as mounts
from jupyter_tether import output, proc, ssh, state
from jupyter_tether.commands._common import release_master, target_for
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode, TetherError


def one_copy_note(name: str) -> str:
    return (
        "note: a mount is one copy of the server's files, not a backup: what you change or "
        f"delete here changes or deletes it on the server. `tether sync {name}` keeps a "
        "copy on this workstation."
    )


def _target(name: str, ssh_config: Path | None) -> ssh.Target:
    rec = state.load(name)
    if rec is not None:
        return target_for(rec, ssh_config)
    return ssh.make_target(resolve(name).ssh, config_file=ssh_config)


def mount(
    name: str,
    directory: Path,
    *,
    remote: str | None = None,
    ssh_config: Path | None = None,
    verbose: bool = False,
) -> int:
    check_name(name)
    sshfs = mounts.check_tools()
    profile = resolve(name)
    expr = mounts.remote_dir_expr(profile.root_dir, remote)  # a bad PATH fails before ssh
    progress = output.Progress(verbose=verbose)
    with state.lock(name):
        local = Path(directory).expanduser().absolute()
        existed = local.exists()
        local = mounts.check_mountpoint(local)
        try:
            target = _target(name, ssh_config)
            with progress.phase("connect", target.destination):
                ssh.ensure_master(target)
            where = _remote_dir(target, expr)
            with progress.phase("mount", f"{target.destination}:{where} at {local}"):
                _sshfs(sshfs, target, where, local)
        except BaseException:
            if not existed:
                with contextlib.suppress(OSError):
                    local.rmdir()
            raise
        mounts.remember(name, mounts.new_record(local, where, target))
    print(f"mounted {target.destination}:{where} at {local}")
    print(one_copy_note(name))
    print(f"unmount with `tether umount {name} {local}` (`tether down {name}` does it too)")
    return ExitCode.OK


def _remote_dir(target: ssh.Target, expr: str) -> str:
    res = ssh.run_script(target, mounts.resolve_remote_script(expr), timeout=30)
    where = res.stdout.strip()
    if res.returncode == 3:
        raise TetherError(
            f"there is no directory {expr} on {target.destination}",
            hint="create it there, or give another one with --remote PATH "
            "(relative to the profile's root_dir unless absolute)",
            code=ExitCode.REMOTE_ENV,
        )
    if not res.ok or not where.startswith("/"):
        raise TetherError(
            f"could not find the directory {expr} on {target.destination}",
            details=res.stderr,
            hint="rerun with --verbose",
            code=ExitCode.ERROR,
        )
    return where


def _sshfs(sshfs: str, target: ssh.Target, where: str, local: Path) -> None:
    res = proc.run(
        mounts.sshfs_argv(sshfs, target, where, local),
        timeout=target.connect_timeout + 40,
        stdin_devnull=True,
    )
    if not res.ok or mounts.mounted_at(local) != "fuse.sshfs":
        raise TetherError(
            f"sshfs could not mount {target.destination}:{where} at {local}",
            details="\n".join(res.stderr.strip().splitlines()[-5:]) or f"exit {res.returncode}",
            hint="the lines above are from sshfs and its ssh; rerun with --verbose",
            code=ExitCode.ERROR,
        )


def umount(name: str, directory: Path | None = None) -> int:
    """Unmount ``directory``, or every mount tether made for ``name``."""
    check_name(name)
    with state.lock(name):
        made = mounts.records(name)
        if directory is None:
            chosen = [Path(m.dir) for m in made]
            if not chosen:
                print(f"no mounts of {name} are known here")
                return ExitCode.OK
        else:
            local = Path(directory).expanduser().absolute()
            if mounts.mounted_at(local) is None:
                mounts.forget(name, local)
                raise TetherError(
                    f"nothing is mounted at {local}",
                    hint=f"`tether umount {name}` unmounts every mount of {name} made here",
                    code=ExitCode.NOT_FOUND,
                )
            chosen = [local]
        for local in chosen:
            unmount_one(name, local)
        ways = {(m.ssh, m.ssh_config) for m in made}
    for destination, cfg in ways:
        release_master(ssh.make_target(destination, config_file=Path(cfg) if cfg else None))
    return ExitCode.OK


def unmount_one(name: str, local: Path) -> None:
    how = Path(mounts.fusermount()).name
    mounts.unmount(local)
    mounts.forget(name, local)
    print(f"unmounted {local} ({how} -u)")


def unmount_all(name: str) -> None:
    """For `tether down`: each mount of ``name`` goes; one that is busy is said, not fatal."""
    for m in mounts.records(name):
        try:
            unmount_one(name, Path(m.dir))
        except TetherError as exc:
            print(f"warning: {exc.message}; {exc.hint}")
