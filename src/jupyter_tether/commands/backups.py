"""`tether backups`: the files `tether sync` replaced, on both sides; restore one."""

from __future__ import annotations

from pathlib import Path

from jupyter_tether import output
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import agent_for
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.sync import local_backups, restore_local


def backups(
    name: str,
    *,
    restore: str | None = None,
    ssh_config: Path | None = None,
    as_json: bool = False,
) -> int:
    check_name(name)
    if restore and restore.startswith("here:"):
        try:
            target, kept = restore_local(name, restore[len("here:") :])
        except KeyError:
            raise _unknown(name, restore) from None
        _say_restored(str(target), str(kept) if kept else None, as_json)
        return ExitCode.OK
    with agent_for(resolve(name), ssh_config) as agent:
        return _server_side(agent, name, restore, as_json)


def _server_side(agent: Agent, name: str, restore: str | None, as_json: bool) -> int:
    if restore:
        side, _, ident = restore.partition(":")
        stamp, _, path = ident.partition("/")
        if side != "server" or not path:
            raise _unknown(name, restore)
        answer = agent.backup_restore(name, stamp, path)
        _say_restored(answer["restored"], answer["kept"], as_json)
        return ExitCode.OK
    rows = [
        {"id": f"here:{b.id}", "side": "here", "path": str(b.folder / b.path), "size": b.size}
        for b in local_backups(name)
    ]
    rows += [
        {
            "id": f"server:{b['stamp']}/{b['path']}",
            "side": "server",
            "path": f"{b['folder']}/{b['path']}",
            "size": b["size"],
        }
        for b in agent.backups(name)["backups"]
    ]
    if as_json:
        output.emit_json(rows)
    elif rows:
        text = [{k: str(v) for k, v in r.items()} for r in rows]
        print(output.table(text, ["id", "path", "size"]))
        print(f"\n`tether backups {name} --restore ID` puts one back (the file there is kept)")
    else:
        print(f"no backups of {name}: `tether sync` makes one before it replaces a file")
    return ExitCode.OK


def _unknown(name: str, ident: str) -> TetherError:
    return TetherError(
        f"no backup {ident!r} of {name}",
        hint=f"`tether backups {name}` lists them with their ids",
        code=ExitCode.NOT_FOUND,
    )


def _say_restored(target: str, kept: str | None, as_json: bool) -> None:
    if as_json:
        output.emit_json({"restored": target, "kept": kept})
        return
    print(f"restored {target}" + (f" (the file it replaced is kept in {kept})" if kept else ""))
