"""The supervisor's revival schedule: at once, then after 2, 10 and 30 s, then
it gives up; a start that another tether command made is not counted as a crash.

The agent here is a stand-in: what is tested is the supervisor's own bookkeeping, with
a clock the test moves. The real revivals run in tests/test_server_faults_e2e.py and
tests/test_lifecycle_e2e.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_tether import state, supervisor
from jupyter_tether.clients import Agent
from jupyter_tether.errors import TetherError

REC = state.Record(
    name="tt-unit",
    ssh="tt-unit",
    ssh_config=None,
    token="not-a-real-token",
    local_port=1,
    remote="/tmp/none/jupyter.sock",
    app="lab",
    pid=1,
    hostname="server",
    started=0.0,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    """Answers ``revive`` as the agent would: a failure, or a start (fresh or reused)."""

    def __init__(self, answers: list[dict[str, Any] | None]) -> None:
        self.answers = answers
        self.calls = 0

    def revive(self, name: str, timeout: float = 180) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0)
        if answer is None:
            raise TetherError("Jupyter exited during start-up")
        return answer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("jupyter_tether.supervisor.time.monotonic", c)
    return c


def attempt(sup: supervisor._Supervisor, agent: StandIn) -> None:
    try:
        sup.revive(agent, REC, "dead")  # type: ignore[arg-type]
    except TetherError:
        pass


def test_revivals_back_off_then_give_up(clock: Clock) -> None:
    sup = supervisor._Supervisor("tt-unit")
    agent = StandIn([None] * 10)
    tried_at = []
    for _ in range(200):  # one look every half second, for 100 s
        before = agent.calls
        attempt(sup, agent)
        if agent.calls > before:
            tried_at.append(clock.now - 1000.0)
        clock.now += 0.5
    assert tried_at == [0.0, 2.0, 12.0, 42.0]
    assert sup.status["state"] == "failed"
    assert "died 4 times" in sup.status["detail"]


def test_the_wait_is_said(clock: Clock) -> None:
    sup = supervisor._Supervisor("tt-unit")
    agent = StandIn([None, None])
    attempt(sup, agent)
    clock.now += 0.5
    attempt(sup, agent)
    assert sup.status["state"] == "reconnecting"
    assert sup.status["detail"] == "the server is dead: starting it again in 2 s"
    assert agent.calls == 1


def test_a_start_by_another_command_is_not_a_crash(clock: Clock) -> None:
    sup = supervisor._Supervisor("tt-unit")
    reused = {"reused": True, "sock": REC.remote, "pid": REC.pid}
    agent = StandIn([reused] * 6)
    for _ in range(6):
        attempt(sup, agent)
        clock.now += 0.5
    assert agent.calls == 6  # never held back, never counted
    assert sup.status["revives"] == 0
    assert sup.status["state"] != "failed"


def test_stand_in_has_the_agents_method() -> None:
    # The stand-in must keep matching the real client's signature.
    assert StandIn.revive.__code__.co_varnames[:3] == Agent.revive.__code__.co_varnames[:3]
