"""argv building and ssh error classification (pure logic, no ssh run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_tether import ssh
from jupyter_tether.errors import ExitCode, TetherError


def test_multiplexed_argv_uses_private_control_path(tmp_path: Path) -> None:
    t = ssh.Target("aura", config_file=tmp_path / "cfg", control_dir=tmp_path / "cm")
    argv = t.command_argv()
    assert argv[:3] == ["ssh", "-F", str(tmp_path / "cfg")]
    assert f"ControlPath={tmp_path}/cm/%C" in argv
    assert "ControlMaster=no" in argv  # commands never become a master by accident
    assert argv[-2:] == ["--", "aura"]
    master = t.master_argv()
    assert "ControlMaster=yes" in master
    assert "ControlPersist=yes" in master
    assert "-N" in master and "-f" in master
    assert master[-2:] == ["--", "aura"]


def test_windows_argv_disables_multiplexing() -> None:
    t = ssh.Target("aura", control_dir=None)
    argv = t.command_argv()
    assert "ControlMaster=no" in argv
    assert "ControlPath=none" in argv
    assert not t.multiplexed


def test_forward_is_loopback_only() -> None:
    assert ssh.forward_spec(18888, "/tmp/x/jupyter.sock") == "127.0.0.1:18888:/tmp/x/jupyter.sock"


def test_option_injection_in_destination_is_refused() -> None:
    with pytest.raises(TetherError):
        ssh.make_target("-oProxyCommand=touch /tmp/pwned")


T = ssh.Target("aura", control_dir=None)


@pytest.mark.parametrize(
    ("stderr", "code", "words"),
    [
        (
            "ssh: Could not resolve hostname nohost: Name or service not known\r\n",
            ExitCode.SSH_CONNECT,
            "unknown host",
        ),
        (
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n",
            ExitCode.SSH_CONNECT,
            "refused",
        ),
        (
            "ssh: connect to host 10.0.0.1 port 22: Connection timed out\r\n",
            ExitCode.SSH_CONNECT,
            "timed out",
        ),
        (
            "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts."
            "\r\ntether@127.0.0.1: Permission denied (publickey).\r\n",
            ExitCode.SSH_AUTH,
            "permission denied (publickey)",
        ),
        (
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "Host key verification failed.\n",
            ExitCode.SSH_AUTH,
            "host key",
        ),
        (
            "channel 0: open failed: connect failed: No route to host\r\n"
            "stdio forwarding failed\r\n"
            "kex_exchange_identification: Connection closed by remote host\r\n",
            ExitCode.SSH_CONNECT,
            "jump host",
        ),
        (
            "/tmp/cfg: line 3: Bad configuration option: proxyjumpp\r\n"
            "/tmp/cfg: terminating, 1 bad configuration options\r\n",
            ExitCode.CONFIG,
            "configuration",
        ),
    ],
)
def test_ssh_errors_become_advice(stderr: str, code: ExitCode, words: str) -> None:
    err = ssh.ssh_error(T, stderr, 255)
    assert err.code == code
    assert words in err.message.lower()
    assert err.hint


def test_first_meaningful_line_skips_noise() -> None:
    text = (
        "Warning: Permanently added 'x' (ED25519) to the list of known hosts.\n"
        "kex_exchange_identification: read: Connection reset by peer\n"
        "real problem here\n"
    )
    assert ssh.first_meaningful_line(text) == "real problem here"
