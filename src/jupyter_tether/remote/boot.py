"""Runs a server-side program that the workstation shipped as one stream.

``jupyter_tether/assemble.py`` appends to this file the modules the program needs (as
``FILES``, relative path -> source) and the name of its entry module; the result is one
script, sent on ssh's stdin for each call, or written to disk for the autostart hook.
The import hook below makes the shipped files the package ``tether_remote``, compiled
under their real names, so that a traceback points at the line in the repository and
the modules import each other as they do on the workstation (``from . import core``).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import errno
import os
import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_loader
from types import ModuleType
from typing import Dict, Optional, Sequence

PACKAGE = "tether_remote"


class Shipped(MetaPathFinder, Loader):
    """Finds, loads and reads (``get_data``) the shipped files as ``tether_remote``."""

    def __init__(self, files: Dict[str, str]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: object = None
    ) -> Optional[ModuleSpec]:
        if fullname == PACKAGE:
            origin = PACKAGE + "/__init__.py"
            return spec_from_loader(fullname, self, origin=origin, is_package=True)
        if fullname.startswith(PACKAGE + "."):
            rel = fullname[len(PACKAGE) + 1 :].replace(".", "/") + ".py"
            if rel in self.files:
                return spec_from_loader(fullname, self, origin=PACKAGE + "/" + rel)
        return None

    def create_module(self, spec: ModuleSpec) -> Optional[ModuleType]:
        return None

    def exec_module(self, module: ModuleType) -> None:
        origin = str(module.__spec__.origin if module.__spec__ else "")
        module.__file__ = origin
        source = self.files.get(origin[len(PACKAGE) + 1 :], "")
        exec(compile(source, origin, "exec"), module.__dict__)  # noqa: S102

    def get_data(self, path: str) -> bytes:
        rel = path[len(PACKAGE) + 1 :] if path.startswith(PACKAGE + "/") else path
        if rel not in self.files:
            raise OSError(errno.ENOENT, "not shipped with this program", path)
        return self.files[rel].encode("utf-8")


def run(files: Dict[str, str], entry: str) -> None:
    """Import ``tether_remote.ENTRY`` from ``files`` and exit with its ``main(sys.argv)``."""
    os.umask(0o077)
    sys.meta_path.insert(0, Shipped(files))
    module = __import__(PACKAGE + "." + entry, fromlist=["main"])
    sys.exit(module.main(sys.argv))
