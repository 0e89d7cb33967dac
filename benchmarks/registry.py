"""Scenarios, the figures they measure, and what one repetition returns.

A scenario is one function ``(bench, sizes) -> Outcome`` registered with
:func:`scenario`. The harness calls it ``repeat`` times; each call measures every
figure once (or says why it could not), so adding a comparison means writing one
function in ``benchmarks/scenarios/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from benchmarks.bench import Bench
    from benchmarks.sizes import Sizes


@dataclass(frozen=True)
class Figure:
    """One row of the table: a quantity, its unit, and what it is compared with.

    ``versus`` names another figure of the same scenario; the table shows the ratio of
    the medians (this / that). Without it the figure is a baseline or absolute.
    """

    name: str
    unit: str
    versus: str | None = None
    better: Literal["lower", "higher"] = "lower"
    absolute: bool = False  # machine-dependent on its own, compared with nothing


@dataclass
class Outcome:
    """What one repetition of a scenario measured."""

    figures: dict[str, Figure] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # figure -> why not measured
    raw: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping

    def add(self, figure: Figure, value: float) -> None:
        self.figures[figure.name] = figure
        self.values[figure.name] = value

    def skip(self, figure: Figure, reason: str) -> None:
        self.figures[figure.name] = figure
        self.missing[figure.name] = reason


RunOnce = Callable[["Bench", "Sizes"], Outcome]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: RunOnce
    needs_netns: bool = False


REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, title: str, *, needs_netns: bool = False) -> Callable[[RunOnce], RunOnce]:
    """Register ``fn`` as the scenario ``name`` (the order of registration is the order run)."""

    def register(fn: RunOnce) -> RunOnce:
        if name in REGISTRY:
            raise ValueError(f"scenario {name} registered twice")
        REGISTRY[name] = Scenario(name=name, title=title, run=fn, needs_netns=needs_netns)
        return fn

    return register


class NotMeasured(Exception):
    """A whole repetition could not be measured; the message says why."""
