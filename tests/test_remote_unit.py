"""The server-side programs' logic, run here on the workstation.

The modules in ``jupyter_tether/remote`` import each other relatively, so the same files
that ``assemble.py`` ships are imported here as ``jupyter_tether.remote.*`` and measured
by coverage like the rest. Each test gets its own state and data roots.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from jupyter_tether import assemble
from jupyter_tether.remote import boot, checks, core, envs, interpreters, planning, servers


@pytest.fixture(autouse=True)
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


# --- core -----------------------------------------------------------------------------


def _fails(req: dict[str, object]) -> dict[str, object]:
    def op(_req: core.Json) -> core.Json:
        raise core.RemoteError("start_failed", "it broke", "look", "last line", tried=["a"])

    return core.handle({"up": op}, req)


def test_a_failure_answers_its_kind_hint_log_and_extra_fields() -> None:
    assert _fails({"op": "up"}) == {
        "ok": False,
        "kind": "start_failed",
        "message": "it broke",
        "hint": "look",
        "log_tail": "last line",
        "tried": ["a"],
    }


@pytest.mark.parametrize("req", [None, [], {}, {"op": "nope"}, "up"])
def test_a_request_the_program_cannot_read_is_bad_request(req: object) -> None:
    assert core.handle({"up": lambda r: {}}, req)["kind"] == "bad_request"


@pytest.mark.parametrize(
    ("err", "kind", "hint"),
    [
        (errno.ENOSPC, "disk_full", "free some space"),
        (errno.EDQUOT, "disk_full", "quota"),
        (errno.EROFS, "os_error", "read-only"),
        (errno.EACCES, "os_error", "check that you can write"),
    ],
)
def test_os_errors_become_kinds_with_hints(err: int, kind: str, hint: str) -> None:
    def op(_req: core.Json) -> core.Json:
        raise OSError(err, os.strerror(err), "/home/u/x")

    answer = core.handle({"op": op}, {"op": "op"})
    assert answer["kind"] == kind
    assert hint in str(answer["hint"])
    assert "/home/u/x" in str(answer["message"])
    special = core.handle({"op": op}, {"op": "op"}, full_hint="the old env stays")
    assert (special["hint"] == "the old env stays") == (kind == "disk_full")


def test_serve_from_the_command_line_exits_1_on_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def op(_req: core.Json) -> core.Json:
        raise core.RemoteError("not_found", "none")

    assert core.serve({"revive": op}, ["agent.py", "revive", "x"]) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith(core.MARK + " ")
    assert json.loads(line[len(core.MARK) + 1 :])["kind"] == "not_found"
    # From stdin the answer itself says whether it failed: the exit status is 0.
    monkey_stdin = __import__("io").StringIO('{"op": "revive", "name": "x"}\n')
    old, sys.stdin = sys.stdin, monkey_stdin
    try:
        assert core.serve({"revive": op}, ["-c"]) == 0
    finally:
        sys.stdin = old


def test_private_dir_tightens_ours_and_refuses_a_symlink(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    core.private_dir(str(mine))
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(core.RemoteError) as err:
        core.private_dir(str(tmp_path / "link"))
    assert err.value.kind == "unsafe_dir"


def test_write_private_is_0600_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    core.write_private(str(path), '{"a": 1}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert core.read_json(str(path)) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    path.write_text("[1, 2]")
    assert core.read_json(str(path)) is None  # not an object
    assert core.read_json(str(tmp_path / "missing")) is None


def test_a_held_lock_times_out_as_locked(tmp_path: Path) -> None:
    path = str(tmp_path / "locks" / "x.lock")
    with core.Lock(path, 5, "busy", "wait"):
        with pytest.raises(core.RemoteError) as err, core.Lock(path, 0.2, "busy", "wait"):
            pass
        assert (err.value.kind, err.value.message, err.value.hint) == ("locked", "busy", "wait")
    with core.Lock(path, 0.2, "busy", "wait"):
        pass  # free again


def test_pid_alive_and_log_tail(tmp_path: Path) -> None:
    assert core.pid_alive(os.getpid())
    assert not core.pid_alive(None)
    assert not core.pid_alive(2**22 + 12345)
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert core.log_tail(str(log), 2) == "line 98\nline 99"
    assert core.log_tail(str(tmp_path / "none")) == ""


# --- the assembler and the loader ------------------------------------------------------


def test_each_program_ships_what_it_imports_and_no_more() -> None:
    agent, builder = assemble.files("agent"), assemble.files("builder")
    assert next(iter(agent)) == "agent.py"
    assert {"core.py", "servers.py", "launching.py", "autostart.py"} <= agent.keys()
    assert "envs.py" not in agent and "launching.py" not in builder
    assert {"snippets/import_check.py", "snippets/listener.py"} <= builder.keys()
    with pytest.raises(ValueError, match="no server-side program"):
        assemble.bundle("probe")


def test_shipped_code_reports_its_real_file_and_line() -> None:
    files = {
        "x.py": "from . import y\n\ndef f():\n    return y.g()\n",
        "y.py": "def g():\n    1 / 0\n",
    }
    sys.meta_path.insert(0, boot.Shipped(files))
    try:
        module = __import__("tether_remote.x", fromlist=["f"])
        with pytest.raises(ZeroDivisionError) as err:
            module.f()
        where = traceback.extract_tb(err.value.__traceback__)[-1]
        assert (where.filename, where.lineno) == ("tether_remote/y.py", 2)
        loader = boot.Shipped(files)
        assert loader.get_data("tether_remote/y.py").startswith(b"def g")
        with pytest.raises(OSError, match="not shipped"):
            loader.get_data("tether_remote/z.py")
    finally:
        sys.meta_path.pop(0)
        for name in [n for n in sys.modules if n.startswith("tether_remote")]:
            del sys.modules[name]


# --- planning a launch -----------------------------------------------------------------


def _env(tmp_path: Path, *apps: str) -> Path:
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    for name in ("jupyter", *(f"jupyter-{a}" for a in apps)):
        exe = prefix / "bin" / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return prefix


def _req(prefix: Path, **more: object) -> core.Json:
    return {"env": str(prefix), "token": "t0k", "root_dir": str(prefix), "path": "/usr/bin", **more}


def test_a_current_jupyter_gets_a_socket_and_the_token_in_config(tmp_path: Path) -> None:
    prefix = _env(tmp_path, "lab")
    p = core.Paths("aura")
    argv, config, facts = planning.plan_launch(
        _req(prefix), p, str(tmp_path / "run"), {"jupyter_server": "2.14.0"}
    )
    assert config == {"IdentityProvider": {"token": "t0k"}}
    assert "t0k" not in " ".join(argv)
    assert f"--sock={tmp_path / 'run' / 'jupyter.sock'}" in argv
    assert "--KernelManager.transport=ipc" in argv
    assert facts["transport"] == "socket"
    assert facts["path"].startswith(str(prefix / "bin") + os.pathsep)


@pytest.mark.parametrize(
    ("app", "versions", "section", "transport"),
    [
        ("lab", {"jupyter_server": "1.24.0"}, "ServerApp", "socket"),
        ("lab", {"jupyter_server": "1.8.0"}, "ServerApp", "tcp"),
        ("notebook", {"notebook": "6.0.3"}, "NotebookApp", "tcp"),
        ("notebook", {"notebook": "6.4.12"}, "NotebookApp", "socket"),
        (
            "notebook",
            {"notebook": "7.2.0", "jupyter_server": "2.14.0"},
            "IdentityProvider",
            "socket",
        ),
    ],
)
def test_older_jupyters_get_the_config_they_read(
    tmp_path: Path, app: str, versions: core.Json, section: str, transport: str
) -> None:
    prefix = _env(tmp_path, app)
    argv, config, facts = planning.plan_launch(
        _req(prefix, app=app), core.Paths("a"), str(tmp_path), versions
    )
    assert list(config) == [section]
    assert facts["transport"] == transport
    if transport == "tcp":
        assert "--ip=127.0.0.1" in argv
        assert not any(a.startswith("--sock") for a in argv)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"root_dir": "/nonexistent/dir"}, "bad_root_dir"),
        ({"app": "notebook"}, "jupyter_not_found"),
        ({"env": "/nonexistent/env"}, "jupyter_not_found"),
    ],
)
def test_impossible_launches_say_why(tmp_path: Path, change: core.Json, kind: str) -> None:
    prefix = _env(tmp_path, "lab")
    with pytest.raises(core.RemoteError) as err:
        planning.plan_launch(
            {**_req(prefix), **change}, core.Paths("a"), str(tmp_path), {"jupyter_server": "2.0"}
        )
    assert err.value.kind == kind
    assert err.value.hint


def test_a_socket_path_too_long_for_af_unix_is_refused(tmp_path: Path) -> None:
    prefix = _env(tmp_path, "lab")
    deep = tmp_path / ("d" * 120)
    with pytest.raises(core.RemoteError) as err:
        planning.plan_launch(_req(prefix), core.Paths("a"), str(deep), {"jupyter_server": "2.1"})
    assert err.value.kind == "sock_path_too_long"


def test_launch_env_quotes_everything_and_holds_no_token(tmp_path: Path) -> None:
    p = core.Paths("aura")
    req = {"token": "s3cret", "env_vars": {"MSG": "it's $HOME"}, "modules": ["gcc/12"]}
    text = planning.launch_env(req, p, "/run/x y", ["jupyter", "lab", "--a=b c"], {"path": "/b"})
    assert "s3cret" not in text
    assert "TETHER_RUNDIR='/run/x y'" in text
    assert "MSG='it'\"'\"'s $HOME'; export MSG" in text
    assert text.rstrip().endswith("set -- jupyter lab '--a=b c'")


def test_versions_and_interpreters_are_read_from_the_environment(tmp_path: Path) -> None:
    assert planning.vtuple("2.14.1rc1") == (2, 14, 1)
    assert planning.vtuple(None) == (0,)
    script = tmp_path / "jupyter"
    script.write_text("#!/usr/bin/env python3.11 -I\n")
    assert planning.python_of(str(script)) == "python3.11"
    script.write_text("#!/opt/py/bin/python\n")
    assert planning.python_of(str(script)) == "/opt/py/bin/python"
    versions = planning.versions_of(os.path.join(os.path.dirname(sys.executable), "jupyter"))
    assert isinstance(versions, dict)  # runs the shipped snippet under this Python


# --- servers ---------------------------------------------------------------------------


def test_health_tells_elsewhere_failed_and_dead(tmp_path: Path) -> None:
    p = core.Paths("aura")
    assert servers.health(p, {"hostname": "other-node"})["state"] == "elsewhere"
    rundir = tmp_path / "run"
    rundir.mkdir()
    here = socket.gethostname()
    assert servers.health(p, {"hostname": here, "rundir": str(rundir)})["state"] == "dead"
    (rundir / "failed").write_text("crash loop: 6 starts\n")
    h = servers.health(p, {"hostname": here, "rundir": str(rundir)})
    assert (h["state"], h["detail"]) == ("failed", "crash loop: 6 starts")


def test_status_lists_recorded_servers_without_their_tokens() -> None:
    p = core.Paths("aura")
    core.private_tree(p.server)
    core.write_private(p.state, json.dumps({"name": "aura", "token": "x", "rundir": "/none"}))
    core.write_private(p.config, json.dumps({"ServerApp": {"token": "x"}}))
    assert servers.read_token(p) == "x"
    answer = servers.op_status({})
    assert [s["name"] for s in answer["servers"]] == ["aura"]
    assert "token" not in answer["servers"][0]
    assert servers.op_status({"name": "other"})["servers"] == []
    assert servers.op_down({"name": "aura"})["stopped"] is True
    assert not os.path.exists(p.server)


def test_down_leaves_word_of_who_stopped_it_and_a_start_removes_it() -> None:
    p = core.Paths("aura")
    core.private_tree(p.server)
    core.write_private(p.state, json.dumps({"name": "aura", "rundir": "/none"}))
    assert servers.op_down({"name": "aura", "by": "ada@laptop"})["stopped"] is True
    marker = servers.op_status({"name": "aura"})["stopped"]["aura"]
    assert marker["by"] == "ada@laptop" and marker["at"] > 0
    assert stat.S_IMODE(os.stat(p.stopped).st_mode) == 0o600
    # The clean-up of a failed `up` is not a stop: it leaves no word.
    core.private_tree(p.server)
    core.write_private(p.state, json.dumps({"name": "aura", "rundir": "/none"}))
    os.unlink(p.stopped)
    servers.op_down({"name": "aura"})
    assert servers.op_status({"name": "aura"})["stopped"] == {}


def test_old_down_markers_are_pruned() -> None:
    old, new = core.Paths("old"), core.Paths("new")
    servers.mark_stopped(old, "ada@laptop")
    stamp = os.path.getmtime(old.stopped) - servers.STOPPED_KEEP - 60
    os.utime(old.stopped, (stamp, stamp))
    servers.mark_stopped(new, "ada@desktop")
    assert not os.path.exists(old.stopped) and os.path.exists(new.stopped)


def test_a_server_whose_socket_was_removed_is_orphaned(tmp_path: Path) -> None:
    p = core.Paths("aura")
    rundir = tmp_path / "run"
    rundir.mkdir()
    # A process standing in for Jupyter: health only looks for "jupyter" in its argv.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jupyter"])
    try:
        (rundir / "jupyter.pid").write_text(str(child.pid))
        st = {"hostname": socket.gethostname(), "rundir": str(rundir), "sock": str(rundir / "s")}
        h = servers.health(p, st)
        assert h["state"] == "orphaned", h
        assert "kernels' state" in h["detail"]
        (rundir / "s").write_text("")  # the socket's name is there: no longer orphaned
        assert servers.health(p, st)["state"] == "unresponsive"
    finally:
        child.kill()
        child.wait()


def test_a_start_clears_what_an_unrecorded_server_left_in_its_run_dir(tmp_path: Path) -> None:
    from jupyter_tether.remote import launching

    p = core.Paths("aura")
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o700)
    for stale in ("jupyter.pid", "ready", "stop", "jupyter.sock"):
        (rundir / stale).write_text("999999\n")
    launching._clear_unrecorded(p, str(rundir))
    assert not rundir.exists()


# --- environments ----------------------------------------------------------------------


def _marker(name: str, profile: str, created: float) -> str:
    d = Path(envs.env_dir(name))
    d.mkdir(parents=True)
    (d / envs.MARKER).write_text(json.dumps({"profile": profile, "created": created}))
    return str(d)


def test_garbage_collection_keeps_the_new_the_last_good_and_the_running() -> None:
    old = [_marker(f"aura-{i}", "aura", float(i)) for i in range(4)]
    other = _marker("beta-0", "beta", 0.0)
    new = _marker("aura-new", "aura", 10.0)
    # A live server (this process) runs from the oldest one.
    p = core.Paths("aura")
    core.private_tree(p.server)
    core.write_private(
        p.state, json.dumps({"pid": os.getpid(), "jupyter": old[0] + "/bin/jupyter"})
    )
    removed = envs.collect_garbage("aura", new)
    assert sorted(removed) == ["aura-1", "aura-2"]
    assert all(os.path.isdir(d) for d in (new, old[3], old[0], other))


def test_clean_incoming_removes_interrupted_builds() -> None:
    incoming = Path(core.place("envs", ".incoming"))
    (incoming / "aura-x.123" / "bin").mkdir(parents=True)
    assert envs.clean_incoming() == ["aura-x.123"]
    assert list(incoming.iterdir()) == []


@pytest.mark.parametrize(
    ("out", "req", "kind"),
    [
        ("error: No space left on device (os error 28)", {}, "disk_full"),
        (
            "Because nopkg was not found in the provided package locations",
            {"offline": True},
            "no_wheel",
        ),
        ("Because nopkg was not found in the package registry and you require", {}, "no_package"),
        (
            "Because a==1 depends on b<2 and you require b>=2, "
            "your requirements are unsatisfiable.",
            {},
            "conflict",
        ),
        ("error: something else", {}, "install_failed"),
    ],
)
def test_uv_output_becomes_a_kind(out: str, req: core.Json, kind: str) -> None:
    err = envs.install_error(out, req)
    assert err.kind == kind
    assert err.extra["output"]


def test_kernels_of_other_environments_are_registered(tmp_path: Path) -> None:
    other = tmp_path / "My Env"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").symlink_to(sys.executable)
    prefix = tmp_path / "new"
    assert envs.register_kernels(str(prefix), [str(other)]) == ["tether-my-env"]
    spec = json.loads((prefix / "share/jupyter/kernels/tether-my-env/kernel.json").read_text())
    assert spec["argv"][0] == str(other / "bin" / "python")
    with pytest.raises(core.RemoteError) as err:
        envs.register_kernels(str(prefix), [str(tmp_path / "none")])
    assert err.value.kind == "bad_kernel"


def test_describe_lists_the_packages_of_an_environment() -> None:
    answer = envs.op_describe({"env": sys.prefix})
    assert answer["exists"] is True
    assert any(name.lower() == "pytest" for name, _ in answer["packages"])
    assert envs.op_describe({"env": "/nonexistent"})["exists"] is False


# --- interpreters and checks -----------------------------------------------------------


def test_the_profiles_interpreter_is_checked() -> None:
    tried: list[str] = []
    found = interpreters.find_python({"python": sys.executable}, tried)
    assert found is not None and found["how"] == "profile"
    assert found["version"][:2] == list(sys.version_info[:2])
    assert interpreters.find_python({"python": "/nonexistent/python3"}, tried) is None
    assert tried == ["/nonexistent/python3: does not exist or does not run"]
    assert interpreters.matches((3, 11, 2), "3.11")
    assert not interpreters.matches((3, 8, 10), "")  # older than the builder's minimum


def test_python_facts_name_the_platform() -> None:
    facts = interpreters.python_facts(sys.executable, {})
    assert facts["version"][:2] == list(sys.version_info[:2])
    assert facts["modules"]["ssl"] == ""
    assert facts["platform"].startswith("linux")


def test_index_reachability_is_bounded_and_local_indexes_need_no_network() -> None:
    assert checks.index_reachable(["file:///srv/wheels"])["reachable"] is True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused at once
        answer = checks.index_reachable([f"http://127.0.0.1:{port}/simple/"], seconds=2)
    assert answer["reachable"] is False
    assert f"127.0.0.1:{port}" in answer["detail"]
    assert checks.reach({"offline": True}) == {"reachable": False, "detail": "set in the profile"}


def test_prepare_reports_an_existing_environment_cheaply() -> None:
    _marker("aura-abc", "aura", 1.0)
    assert checks.op_prepare({"env_name": "aura-abc"}) == {
        "exists": True,
        "env": envs.env_dir("aura-abc"),
    }
    answer = checks.op_prepare({"env_name": "aura-new", "python": sys.executable, "offline": True})
    assert answer["exists"] is False
    assert answer["python"]["path"] == sys.executable
    assert answer["uv"] is False
