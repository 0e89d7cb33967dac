"""The scenarios: one module per comparison, each registering its function."""

from __future__ import annotations

import importlib

MODULES = (
    "warm_up",
    "forward",
    "forward_rtt",
    "scale",
    "cold_up",
    "reconnect",
    "forward_jump",
    "cluster_up",
    "sync",
)


def load() -> None:
    """Import every scenario module, which registers them in order."""
    for name in MODULES:
        importlib.import_module(f"benchmarks.scenarios.{name}")
