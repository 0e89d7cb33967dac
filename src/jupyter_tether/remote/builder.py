"""jupyter-tether's environment builder: the server side of provisioning.

Standard library only, Python >= 3.8 syntax: it runs under whatever python3 the server
has, before any environment exists. Like the agent it is shipped as one stream
(``boot.py``), reads one JSON request on stdin and writes one JSON answer
(``core.serve``); ``core.py`` has the layout of the data directory it builds in.
"""

from __future__ import annotations

from typing import Dict, List

from . import checks, core, envs

OPS: Dict[str, core.Op] = {
    "prepare": checks.op_prepare,
    "python": checks.op_python,
    "build": envs.op_build,
    "install": envs.op_install,
    "describe": envs.op_describe,
    "develop": envs.op_develop,
    "doctor": checks.op_doctor,
    "listen": checks.op_listen,
    "reach": checks.op_reach,
}

FULL_HINT = "free some space or raise the quota; the previous environment is untouched"


def main(argv: List[str]) -> int:
    # The builder never runs from a hook: a request always comes on stdin.
    return core.serve(OPS, argv[:1], FULL_HINT)
