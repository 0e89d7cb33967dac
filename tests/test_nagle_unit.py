"""Which hops can avoid Nagle stalls, by OpenSSH version (jupyter_tether.nagle)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from jupyter_tether import nagle
from jupyter_tether.commands.doctor import nagle_checks


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026", (9, 2)),
        ("SSH-2.0-OpenSSH_10.1\r\n", (10, 1)),
        ("OpenSSH_for_Windows_8.6p1, LibreSSL 3.4.3", (8, 6)),
        ("SSH-2.0-dropbear_2022.83", None),
        ("", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, int] | None) -> None:
    assert nagle.parse_version(text) == version


def test_no_jump_is_covered_by_the_pty_session_in_any_version() -> None:
    (hop,) = nagle.hops(nagle.Versions(local=(8, 0), has_jump=False))
    assert hop.name == "workstation-server"
    assert hop.ok is True


def test_old_versions_stall_on_the_jump_hop_only() -> None:
    outer, inner = nagle.hops(nagle.Versions(local=(9, 2), jump=(9, 2)))
    assert (outer.name, outer.ok) == ("workstation-jump", False)
    assert "OpenSSH 9.2" in outer.detail
    assert "10.1" in outer.fix and "workstation and the jump host" in outer.fix
    assert (inner.name, inner.ok) == ("jump-server", True)


@pytest.mark.parametrize(
    ("local", "jump", "ok", "names"),
    [
        ((10, 1), (9, 2), False, "the jump host"),
        ((9, 9), (10, 2), False, "the workstation"),
        ((10, 1), (10, 1), True, ""),
        ((10, 1), None, None, ""),
        (None, None, None, ""),
    ],
)
def test_each_end_of_the_jump_hop(
    local: tuple[int, int] | None, jump: tuple[int, int] | None, ok: bool | None, names: str
) -> None:
    outer = nagle.hops(nagle.Versions(local=local, jump=jump))[0]
    assert outer.ok is ok
    assert names in outer.fix


def test_doctor_warns_per_hop_with_a_fix() -> None:
    checks = nagle_checks(nagle.Versions(local=(9, 2), jump=(9, 2)))
    assert [(c.name, c.status) for c in checks] == [("nagle-jump", "warn"), ("nagle-far", "ok")]
    assert checks[0].detail.startswith("workstation-jump hop:")
    assert "10.1" in checks[0].fix


@pytest.mark.parametrize(
    ("settings", "jump"),
    [
        ({"proxyjump": "bastion,inner"}, "bastion"),
        ({"proxyjump": "none", "proxycommand": "ssh -F /c -W %h:%p gate"}, "gate"),
        ({"proxycommand": "/usr/bin/ssh -q -W [%h]:%p me@gate"}, "me@gate"),
        ({"proxycommand": "nc -X 5 -x proxy:1080 %h %p"}, None),
        ({"proxycommand": "ssh gate 'unbalanced"}, None),
        ({}, None),
    ],
)
def test_jump_of(settings: dict[str, str], jump: str | None) -> None:
    assert nagle.jump_of(settings) == jump


def test_banner_version_reads_a_real_listener() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def greet() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_10.2p1 Debian\r\n")

        t = threading.Thread(target=greet)
        t.start()
        assert nagle.banner_version("127.0.0.1", srv.getsockname()[1]) == (10, 2)
        t.join(timeout=5)


def test_read_versions_follows_proxycommand_in_a_real_ssh_config(tmp_path: Path) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        config = tmp_path / "config"
        config.write_text(
            f"Host gate\n  HostName 127.0.0.1\n  Port {port}\n"
            f"Host far\n  HostName 198.18.9.9\n  ProxyCommand ssh -F {config} -W %h:%p gate\n"
        )

        def greet() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

        t = threading.Thread(target=greet)
        t.start()
        versions = nagle.read_versions("far", config)
        t.join(timeout=5)
    assert versions.has_jump
    assert versions.jump == (9, 2)
    assert versions.local == nagle.local_version()
    assert nagle.read_versions("gate", config).has_jump is False


def test_doctor_without_a_jump_host_has_one_check() -> None:
    (check,) = nagle_checks(nagle.Versions(local=(9, 2), has_jump=False))
    assert (check.name, check.status) == ("nagle", "ok")


def test_summary_names_the_hop_the_versions_and_the_fix() -> None:
    line = nagle.summary(nagle.Versions(local=(9, 2), jump=(9, 2)))
    assert line.startswith("local OpenSSH 9.2, jump sshd OpenSSH 9.2:")
    assert "workstation-jump hop may stall (OpenSSH >= 10.1 on" in line
    assert "jump-server hop ok" in line
    assert len(line) < 300  # the benchmark table cuts reasons there
