"""Command line: a thin layer that parses flags and calls one function per subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_tether import __version__, completion
from jupyter_tether.errors import ExitCode, TetherError

EPILOG = """\
exit codes: 0 ok, 1 error, 2 usage, 3 config, 4 ssh connect, 5 ssh auth/host key,
6 server environment, 7 server start, 8 local port, 9 not found, 10 provisioning,
11 scheduler, 12 sync conflict, 70 internal error, 130 interrupted.
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="show timings and ssh commands"
    )
    common.add_argument(
        "-F", "--ssh-config", type=Path, metavar="FILE", help="ssh config file (as ssh -F)"
    )

    parser = argparse.ArgumentParser(
        prog="tether",
        description="A JupyterLab on any server you can ssh to: no root, one command, "
        "always connected.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jupyter-tether {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("up", parents=[common], help="start (or reuse) Jupyter on HOST and connect")
    p.add_argument("name", metavar="HOST", help="a profile name or an ssh destination")
    p.add_argument("--port", type=_port, help="local port (default: a free one, kept across runs)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only")
    p.add_argument("--json", action="store_true", help="print one JSON object, no progress")
    p.add_argument(
        "--autostart",
        action="store_true",
        help="install a user-level hook that starts the server again after a reboot",
    )
    _profile_flags(p)

    p = sub.add_parser("ls", parents=[common], help="list known servers and their state")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("down", parents=[common], help="stop a server and remove its state")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--purge", action="store_true", help="also remove the autostart hook")

    p = sub.add_parser("logs", parents=[common], help="show the server's log")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("--tunnel", action="store_true", help="the tunnel supervisor's log instead")

    p = sub.add_parser("attach", parents=[common], help="attach to the server's tmux session")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("open", parents=[common], help="forward again and open the browser")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("config", parents=[common], help="show the resolved profile")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--json", action="store_true")
    _profile_flags(p)

    p = sub.add_parser("env", parents=[common], help="the managed environment on HOST")
    p.add_argument("name", metavar="HOST")
    p.add_argument("--rebuild", action="store_true", help="build it again from the spec")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("install", parents=[common], help="add packages to HOST's environment")
    p.add_argument("name", metavar="HOST")
    p.add_argument("packages", nargs="+", metavar="PKG", help="pip requirements")

    p = sub.add_parser("doctor", parents=[common], help="check what HOST has and lacks")
    p.add_argument("name", metavar="HOST")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sync", parents=[common], help="sync the profile's folders, both ways")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dry-run", action="store_true", help="show what would move, and why")
    p.add_argument("--force", action="store_true", help="also write notebooks open in Jupyter")
    p.add_argument(
        "--watch", action="store_true", help="keep syncing: local changes at once, the server's"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "mount", parents=[common], help="the server's folder at DIR here, with sshfs (one copy)"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("dir", metavar="DIR", type=Path, help="an empty or new local directory")
    p.add_argument(
        "--remote",
        metavar="PATH",
        help="the folder on the server (default: root_dir; relative to it unless absolute)",
    )
    p.add_argument("--unmount", action="store_true", help="unmount DIR instead (as `umount`)")

    p = sub.add_parser("umount", parents=[common], help="unmount what `tether mount` mounted")
    p.add_argument("name", metavar="NAME")
    p.add_argument("dir", metavar="DIR", type=Path, nargs="?", help="default: every mount of NAME")

    p = sub.add_parser("backups", parents=[common], help="files `sync` replaced; restore one")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--restore", metavar="ID", help="put this backup back (ids: see the list)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "snapshots", parents=[common], help="list the notebook snapshots, or restore one"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("path", metavar="PATH", nargs="?", help="a notebook under root_dir")
    p.add_argument("--restore", metavar="ID", help="put this snapshot back at its path")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "demo", parents=[common], help="try it: a throwaway local ssh server, then `up`"
    )
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")

    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, fish)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("shell", nargs="?", choices=completion.SHELLS)
    # What the scripts call back for profile names: reads the config file, no ssh.
    g.add_argument("--profiles", action="store_true", help=argparse.SUPPRESS)
    return parser


def _profile_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("profile overrides")
    g.add_argument("--ssh", dest="ssh_dest", metavar="DEST", help="ssh destination")
    g.add_argument("--app", choices=("lab", "notebook"))
    g.add_argument("--env", metavar="PATH", help="environment on the server with Jupyter")
    g.add_argument("--root-dir", metavar="DIR")
    g.add_argument("--nice", type=int, choices=range(20), metavar="0-19")
    g.add_argument("--transport", choices=("auto", "socket", "tcp"))
    g.add_argument("--timeout", type=float, dest="startup_timeout", metavar="SECONDS")
    g.add_argument(
        "--keep-outputs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run cells on the server, so outputs reach the notebook with no browser "
        "(README: Outputs with no browser)",
    )
    g = p.add_argument_group("batch job (README: Clusters); any of these means --scheduler slurm")
    g.add_argument("--scheduler", choices=("slurm",), help="run Jupyter as a batch job")
    for flag, what in (
        ("partition", "NAME"),
        ("time", "LIMIT"),
        ("mem", "SIZE"),
        ("gpus", "N"),
        ("gres", "SPEC"),
        ("account", "NAME"),
        ("qos", "NAME"),
        ("constraint", "FEATURES"),
        ("cluster", "NAME"),
    ):
        g.add_argument(f"--{flag}", dest=f"job_{flag}", metavar=what)
    g.add_argument("--cpus", type=int, dest="job_cpus", metavar="N")
    g.add_argument(
        "--sbatch-arg",
        action="append",
        dest="job_sbatch_args",
        metavar="ARG",
        help="one more sbatch argument, as it is (repeatable)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ssh": args.ssh_dest,
        "app": args.app,
        "env": args.env,
        "root_dir": args.root_dir,
        "nice": args.nice,
        "transport": args.transport,
        "startup_timeout": args.startup_timeout,
        "keep_outputs": args.keep_outputs,
        "scheduler": args.scheduler,
        "slurm": {
            key[len("job_") :]: value for key, value in vars(args).items() if key.startswith("job_")
        },
    }


def dispatch(args: argparse.Namespace) -> int:
    # Imported here so that `tether --help` stays fast.
    from jupyter_tether.commands import attach, down, logs, ls, open, show_config, up

    if args.command == "up":
        return up.up(
            args.name,
            ssh_config=args.ssh_config,
            port=args.port,
            browser=not args.no_browser,
            as_json=args.json,
            verbose=args.verbose,
            autostart=args.autostart,
            overrides=_overrides(args),
        )
    if args.command == "ls":
        return ls.ls(names=args.names, as_json=args.json)
    if args.command == "down":
        return down.down(
            args.name, ssh_config=args.ssh_config, verbose=args.verbose, purge=args.purge
        )
    if args.command == "logs":
        return logs.logs(
            args.name,
            follow=args.follow,
            lines=args.lines,
            ssh_config=args.ssh_config,
            tunnel=args.tunnel,
        )
    if args.command == "attach":
        return attach.attach(args.name, ssh_config=args.ssh_config)
    if args.command == "open":
        return open.open_(
            args.name,
            ssh_config=args.ssh_config,
            browser=not args.no_browser,
            as_json=args.json,
            verbose=args.verbose,
        )
    if args.command == "config":
        return show_config.show_config(args.name, as_json=args.json, overrides=_overrides(args))
    if args.command == "env":
        from jupyter_tether.commands import env

        return env.env(
            args.name,
            ssh_config=args.ssh_config,
            rebuild=args.rebuild,
            as_json=args.json,
            verbose=args.verbose,
        )
    if args.command == "install":
        from jupyter_tether.commands import install

        return install.install(
            args.name, args.packages, ssh_config=args.ssh_config, verbose=args.verbose
        )
    if args.command == "doctor":
        from jupyter_tether.commands import doctor

        return doctor.doctor(args.name, ssh_config=args.ssh_config, as_json=args.json)
    if args.command == "sync":
        from jupyter_tether.commands import sync

        return sync.sync(
            args.name,
            ssh_config=args.ssh_config,
            dry_run=args.dry_run,
            force=args.force,
            as_json=args.json,
            verbose=args.verbose,
            watch=args.watch,
        )
    if args.command == "mount" and not args.unmount:
        from jupyter_tether.commands import mount

        return mount.mount(
            args.name,
            args.dir,
            remote=args.remote,
            ssh_config=args.ssh_config,
            verbose=args.verbose,
        )
    if args.command in ("mount", "umount"):
        from jupyter_tether.commands import mount

        return mount.umount(args.name, args.dir)
    if args.command == "backups":
        from jupyter_tether.commands import backups

        return backups.backups(
            args.name, restore=args.restore, ssh_config=args.ssh_config, as_json=args.json
        )
    if args.command == "snapshots":
        from jupyter_tether.commands import snapshots

        return snapshots.snapshots(
            args.name,
            args.path,
            restore=args.restore,
            ssh_config=args.ssh_config,
            as_json=args.json,
            verbose=args.verbose,
        )
    if args.command == "completion":
        from jupyter_tether import config

        if args.profiles:
            print("\n".join(config.profile_names()))
        else:
            print(completion.script(args.shell, build_parser()), end="")
        return ExitCode.OK
    if args.command == "demo":
        from jupyter_tether.commands import demo

        return demo.demo(
            browser=not args.no_browser, as_json=args.json, keep=args.keep, verbose=args.verbose
        )
    raise AssertionError(args.command)


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("jupyter_tether")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("  %(message)s"))
        logger.addHandler(handler)
    for existing in logger.handlers:
        if isinstance(existing, logging.StreamHandler):
            # Whatever stderr is now (in-process callers redirect it). Not setStream():
            # that flushes the old stream first, which may be closed by now.
            existing.stream = sys.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    _setup_logging(getattr(args, "verbose", False))
    try:
        return int(dispatch(args))
    except TetherError as exc:
        print(exc.render(), file=sys.stderr)
        if getattr(args, "json", False):
            # --json callers parse stdout: they get the error as one object too.
            print(json.dumps(exc.as_json()), flush=True)
        return int(exc.code)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:  # a bug: say so, with the traceback, never a silent success
        traceback.print_exc()
        print(
            "error: this is a bug in jupyter-tether; please report it with the traceback above",
            file=sys.stderr,
        )
        return ExitCode.INTERNAL
