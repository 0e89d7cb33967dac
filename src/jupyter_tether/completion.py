"""Shell completion scripts for bash, zsh and fish, generated from the argparse parser.

Generated, not hand-written, so a new subcommand or flag is completed without anyone
remembering to add it. Profile names are completed by calling back into
``tether completion --profiles``, which reads the config file only (no ssh).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: tuple[str, ...]
    takes_profile: bool


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Every visible subcommand with its flags, and whether its argument is a profile."""
    found: list[Command] = []
    for action in parser._actions:  # argparse has no public walk of subparsers
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            if name not in helps:  # hidden from --help: hidden here too
                continue
            shown = [a for a in sub._actions if a.help != argparse.SUPPRESS]
            flags = tuple(sorted(f for a in shown for f in a.option_strings))
            positional = [a for a in sub._actions if not a.option_strings]
            takes_profile = any(a.metavar in ("HOST", "NAME") for a in positional)
            found.append(Command(name, helps[name], flags, takes_profile))
    return found


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    cmds = commands(parser)
    if shell == "bash":
        return _bash(cmds)
    if shell == "zsh":
        return _zsh(cmds)
    if shell == "fish":
        return _fish(cmds)
    raise ValueError(shell)


def _bash(cmds: list[Command]) -> str:
    cases = "\n".join(
        f"        {c.name}) flags={shlex.quote(' '.join(c.flags))}; "
        f"profiles={1 if c.takes_profile else 0} ;;"
        for c in cmds
    )
    names = " ".join(c.name for c in cmds)
    return f"""\
# bash completion for tether: eval "$(tether completion bash)"
_tether() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd=${{COMP_WORDS[1]}} flags='' profiles=0
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W '{names} --help --version' -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [ "$profiles" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$(tether completion --profiles 2>/dev/null)" -- "$cur"))
    fi
}}
complete -o default -F _tether tether jupyter-tether
"""


def _zsh(cmds: list[Command]) -> str:
    described = "\n".join(f"        {shlex.quote(c.name + ':' + c.help)}" for c in cmds)
    cases = "\n".join(
        f"        {c.name}) flags=({' '.join(c.flags)}); profiles={int(c.takes_profile)} ;;"
        for c in cmds
    )
    return f"""\
#compdef tether jupyter-tether
# zsh completion for tether: eval "$(tether completion zsh)"
_tether() {{
    local -a subcommands flags
    local profiles=0
    subcommands=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe 'command' subcommands
        return
    fi
    case $words[2] in
{cases}
    esac
    if [[ $PREFIX == -* ]]; then
        compadd -- $flags
    elif (( profiles )); then
        compadd -- ${{(f)"$(tether completion --profiles 2>/dev/null)"}}
    fi
}}
compdef _tether tether jupyter-tether
"""


def _fish(cmds: list[Command]) -> str:
    names = " ".join(c.name for c in cmds)
    lines = [
        "# fish completion for tether: tether completion fish | source",
        "complete -c tether -f",
        *(
            f"complete -c tether -n 'not __fish_seen_subcommand_from {names}' "
            f"-a {c.name} -d {shlex.quote(c.help)}"
            for c in cmds
        ),
    ]
    for c in cmds:
        cond = f"-n '__fish_seen_subcommand_from {c.name}'"
        for flag in c.flags:
            opt = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            lines.append(f"complete -c tether {cond} {opt}")
        if c.takes_profile:
            lines.append(f"complete -c tether {cond} -a '(tether completion --profiles)'")
    return "\n".join(lines) + "\n"
