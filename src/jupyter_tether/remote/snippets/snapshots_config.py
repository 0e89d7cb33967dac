# Written by jupyter-tether as jupyter_config.py, next to tether_snapshots.py and
# snapshots.json, in a directory on JUPYTER_CONFIG_PATH (launch.env): with
# keep_outputs, every notebook save passes through tether_snapshots.pre_save_hook
# first (README: Snapshots).
# Loaded by file, not put on sys.path, so that nothing reaches the kernels' imports.
import importlib.util
import json
import os
from typing import Any

_here = os.path.dirname(os.path.abspath(__file__))
_spec: Any = importlib.util.spec_from_file_location(
    "tether_snapshots", os.path.join(_here, "tether_snapshots.py")
)
_mod: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
with open(os.path.join(_here, "snapshots.json")) as _f:
    _mod.settings.update(json.load(_f))
c: Any = get_config()  # type: ignore[name-defined]  # noqa: F821 (traitlets provides it)
c.ContentsManager.pre_save_hook = _mod.pre_save_hook
