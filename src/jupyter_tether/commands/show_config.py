"""`tether config`: the resolved profile, as `up` would use it."""

from __future__ import annotations

import json
from typing import Any

from jupyter_tether import config, output, paths


def show_config(name: str | None, *, as_json: bool = False, overrides: dict[str, Any]) -> int:
    if name is None:
        names = config.profile_names()
        if as_json:
            output.emit_json({"file": str(paths.config_file()), "profiles": names})
        else:
            print(f"config file: {paths.config_file()}")
            print("profiles: " + (", ".join(names) if names else "(none)"))
        return 0
    profile = config.resolve(name, overrides=overrides)
    data = profile.as_dict()
    if as_json:
        output.emit_json(data)
        return 0
    print(f"# {profile.source}")
    print(f"[hosts.{json.dumps(name) if not name.isidentifier() else name}]")
    for key, value in data.items():
        if key in ("name", "source") or value is None:
            continue
        print(f"{key} = {_toml(value)}")
    return 0


def _toml(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and arrays are TOML too; tables are not."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)
