"""What of the host a plugin may see when its manifest asks: host-wide statistics
(``host_metrics``) and declared Unix sockets (``unix_sockets``), and nothing more.

The built-ins that need them, ``system_info`` and ``docker_monitor``, run here as they are
shipped, the Docker engine being a fake one on a Unix socket.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sandbox_support import WORK_ROOT, sandbox

import unix_http
from forecourt.plugins.builtin import BUILTIN_DIR
from forecourt.plugins.contracts import validate_output
from forecourt.plugins.package import read_package
from forecourt.plugins.sandbox import WorkerSpec, layout
from forecourt.plugins.sandbox.confine import HOST_NET_DEV
from forecourt.plugins.store import copy_modules

DOCKER_SOCKET = "/var/run/docker.sock"
SOCKET_GROUP = 4242  # a group no one on this machine has: only the socket grants it
ENGINE = {
    "/containers/json?all=1": [
        {"Id": "a" * 64, "Names": ["/web"], "Image": "nginx", "State": "running", "Status": "Up"},
        {"Id": "b" * 64, "Names": ["/job"], "Image": "busybox", "State": "exited", "Status": ""},
    ],
    "/info": {"Images": 4},
    "/networks": [{"Name": "bridge"}],
    "/volumes": {"Volumes": []},
}


def _interfaces(text: str) -> set[str]:
    """The interface names of a /proc/net/dev text."""
    return {line.split(":", 1)[0].strip() for line in text.splitlines()[2:] if ":" in line}


def _host_interfaces() -> set[str]:
    """The interfaces of the network namespace these tests (and so Forecourt) run in."""
    return _interfaces(Path("/proc/self/net/dev").read_text())


@pytest.fixture(scope="module")
def psutil_site() -> Iterator[Path]:
    """psutil copied out of Forecourt's environment, as the store does for built-ins."""
    site = Path(tempfile.mkdtemp(prefix="fc-site-"))
    site.chmod(0o755)
    copy_modules(["psutil"], site)
    try:
        yield site
    finally:
        shutil.rmtree(site)


@pytest.fixture
def engine() -> Iterator[str]:
    """A fake Docker engine on a Unix socket that only root and SOCKET_GROUP may use (the
    sandbox binds the socket: its 0700 folder stays out of reach)."""
    # As the Docker engine's own socket: root and the docker group.
    with unix_http.serve(ENGINE, mode=0o660, group=SOCKET_GROUP) as path:
        yield path


def _builtin(name: str, **fields: Any) -> WorkerSpec:
    return WorkerSpec(
        key=f"test.builtin.{name}@{len(fields)}",
        package_dir=BUILTIN_DIR / name,
        entry_point=read_package(BUILTIN_DIR / name).manifest.entry_point,
        **fields,
    )


def _values(output: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {
        (m["name"], json.dumps(m.get("labels", {}), sort_keys=True)): m["value"]
        for m in output["metrics"]
    }


async def test_without_host_metrics_proc_shows_the_worker_only() -> None:
    async with sandbox(require="all") as box:
        for path in ("/proc/stat", "/proc/meminfo", "/proc/loadavg", HOST_NET_DEV):
            seen = await box.output("read_file", path)
            assert seen["errno"] == errno.ENOENT, (path, seen)
        assert (await box.output("read_file", "/proc/self/status"))["ok"] > 0


async def test_host_metrics_shows_host_statistics_and_keeps_every_protection() -> None:
    host = {"host_metrics": True}
    async with sandbox(require="all") as box:
        for path in ("/proc/stat", "/proc/meminfo", "/proc/loadavg", "/proc/uptime"):
            assert (await box.output("read_file", path, **host))["ok"] > 0, path
        network = await box.output("read_text", HOST_NET_DEV, **host)
        own_network = await box.output("read_text", "/proc/net/dev", **host)
        identity = await box.output("identity", **host)
        sockets = await box.output("sockets", **host)
        connect = await box.output("connect", ["127.0.0.1", 5432], **host)
        # One worker for both (each function has a key, and workers, of its own).
        listing = await box.output("dispatch", {"function": "list_dir", "input": "/proc"}, **host)
        pid = await box.output("dispatch", {"function": "pid", "input": None}, **host)
        environ = await box.output("read_file", "/proc/1/environ", **host)
        sysctl = await box.output("write_file", "/proc/sys/vm/drop_caches", **host)
        escapes = await box.output("escapes", **host)
    assert _interfaces(network["ok"]) == _host_interfaces()  # Forecourt's namespace
    assert _interfaces(own_network["ok"]) == {"lo"}  # the worker keeps a namespace of its own
    assert identity["uid"] == identity["euid"] == identity["gid"] == 65534
    assert identity["groups"] == []
    assert (identity["no_new_privs"], identity["seccomp"]) == (1, 2)
    for family in ("inet", "inet6", "netlink", "packet"):
        assert sockets[family]["errno"] == errno.EAFNOSUPPORT, family
    assert connect["errno"] == errno.EAFNOSUPPORT
    assert [entry for entry in listing["ok"] if entry.isdigit()] == [str(pid)]
    assert environ["errno"] == errno.ENOENT  # other processes stay invisible
    assert sysctl["errno"] in (errno.EACCES, errno.EROFS), sysctl
    assert escapes["mount"]["errno"] == escapes["ptrace"]["errno"] == errno.EPERM


async def test_system_info_builtin_reports_host_metrics(psutil_site: Path) -> None:
    manifest = read_package(BUILTIN_DIR / "system_info").manifest
    assert manifest.permissions.host_metrics is True
    stdlib = layout.python_paths()[0]  # bound into the sandbox: its filesystem is the host's
    config = {"cpu_sample_s": 0.1, "disk_paths": ["/", stdlib]}
    spec = _builtin("system_info", site_dirs=(psutil_site,), host_metrics=True)
    host_loopback = psutil.net_io_counters(pernic=True)["lo"].bytes_sent
    async with sandbox(require="all") as box:
        result = await box.pool.call(spec, input={"interval_s": 30}, config=config)
    host_sent = psutil.net_io_counters().bytes_sent
    assert result.status == "ok", result
    output = result.output
    assert validate_output("collector", output, metrics=list(manifest.permissions.metrics)) == []
    values = _values(output)
    assert values[("system.memory.total_bytes", "{}")] == psutil.virtual_memory().total
    assert values[("system.cpu.count", "{}")] == os.cpu_count()
    assert 0 <= values[("system.cpu.percent", "{}")] <= 100
    assert {"system.load.1m", "system.uptime_s", "system.swap.percent"} <= {
        name for name, _ in values
    }
    host_disk = os.statvfs(stdlib)
    path = json.dumps({"path": stdlib})
    assert values[("system.disk.total_bytes", path)] == host_disk.f_blocks * host_disk.f_frsize
    # "/" in the sandbox is its own small root: not reported as the host's disk.
    assert ("system.disk.total_bytes", json.dumps({"path": "/"})) not in values
    assert "disk not measured" in result.logs and "sandbox's own root" in result.logs
    # The host's counters, sampled between the two readings here (the worker's own loopback
    # is down and has sent nothing).
    assert host_loopback <= values[("system.network.bytes_sent", "{}")] <= host_sent
    assert host_loopback > 0


async def test_system_info_without_the_permission_cannot_read_proc(psutil_site: Path) -> None:
    spec = _builtin("system_info", site_dirs=(psutil_site,))
    async with sandbox() as box:
        result = await box.pool.call(spec, input={}, config={"cpu_sample_s": 0.1})
    assert (result.status, result.error_class) == ("error", "FileNotFoundError")
    assert "/proc/stat" in (result.error_message or "")


async def test_a_declared_socket_is_reachable_and_an_undeclared_one_is_not(engine: str) -> None:
    request = {"socket": engine, "path": "/info"}
    async with sandbox(require="all") as box:
        declared = await box.output("unix_get", request, unix_sockets=(engine,))
        identity = await box.output("identity", unix_sockets=(engine,))
        undeclared = await box.output("unix_get", request)
        other = await box.output("unix_get", request, unix_sockets=("/var/run/other.sock",))
    assert declared["ok"]["status_line"] == "HTTP/1.0 200 OK"
    assert json.loads(declared["ok"]["body"]) == {"Images": 4}
    assert identity["groups"] == [SOCKET_GROUP]  # the socket's group, and only that
    assert identity["uid"] == 65534 and identity["seccomp"] == 2
    assert undeclared["errno"] == other["errno"] == errno.ENOENT


async def test_a_declared_path_that_is_not_a_socket_exposes_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for plugins")
    async with sandbox(require="all") as box:
        for path in (secret, tmp_path):
            seen = await box.output("read_file", str(path), unix_sockets=(str(path),))
            assert seen["errno"] == errno.ENOENT, (path, seen)
        inside = await box.run("pid", unix_sockets=(str(WORK_ROOT / "w-x" / "egress.sock"),))
    assert inside.status == "refused" and "work_root" in (inside.error_message or "")


async def test_docker_monitor_builtin_talks_to_the_declared_engine(engine: str) -> None:
    declared = read_package(BUILTIN_DIR / "docker_monitor").manifest.permissions.unix_sockets
    assert declared == (DOCKER_SOCKET,)
    config = {"socket_path": engine, "per_container": True}
    async with sandbox(require="all") as box:
        reached = await box.pool.call(
            _builtin("docker_monitor", unix_sockets=(engine,)), input={}, config=config
        )
        refused = await box.pool.call(_builtin("docker_monitor"), input={}, config=config)
    assert reached.status == "ok", reached
    values = _values(reached.output)
    assert values[("docker.reachable", "{}")] == 1
    assert values[("docker.containers", '{"state": "running"}')] == 1
    assert values[("docker.images", "{}")] == 4
    assert values[("docker.container.up", '{"image": "busybox", "name": "job"}')] == 0
    assert refused.status == "ok"
    assert refused.output == {"metrics": [{"name": "docker.reachable", "value": 0}]}
    assert "docker not reachable" in refused.logs


@pytest.mark.skipif(os.path.exists(DOCKER_SOCKET), reason="a Docker engine runs on this host")
async def test_docker_monitor_without_an_engine_says_so() -> None:
    """As shipped, on a host without Docker: its declared socket does not exist."""
    spec = _builtin("docker_monitor", unix_sockets=(DOCKER_SOCKET,))
    async with sandbox(require="all") as box:
        result = await box.pool.call(spec, input={}, config={"timeout_s": 2})
    assert result.status == "ok", result
    assert result.output == {"metrics": [{"name": "docker.reachable", "value": 0}]}
    assert "docker not reachable" in result.logs


# Applies the worker's Landlock step to itself as the worker does, then opens each path.
LANDLOCK_PROBE = """
import json, sys
from forecourt.plugins.sandbox import confine
plan = confine.Plan.from_message(json.loads(sys.argv[1]))
confine._landlock(plan, {})  # as without the mount namespace: declared paths are the host's
seen = {}
for path in sys.argv[2:]:
    try:
        open(path, "rb").close()
        seen[path] = 0
    except OSError as exc:
        seen[path] = exc.errno
print(json.dumps(seen))
"""


def test_landlock_grants_a_declared_path_only_if_it_is_a_socket(
    engine: str, tmp_path: Path
) -> None:
    """A declared path that is a file gets no Landlock rule (a socket gets one: opening it
    reaches the socket, which answers ENXIO, instead of being refused)."""
    not_a_socket = tmp_path / "shadow"
    not_a_socket.write_text("host data")
    plan = {
        "userns": False, "uid": 65534, "gid": 65534, "disabled": [], "new_root": "/",
        "private_dir": str(tmp_path / "private"), "private_mib": 16, "read_only": [],
        "devices": [], "egress_socket": None, "cpu_s": 5, "memory_mib": 256, "file_mib": 1,
        "open_files": 64, "unix_sockets": [engine, str(not_a_socket)],
    }  # fmt: skip
    probe = subprocess.run(
        [sys.executable, "-c", LANDLOCK_PROBE, json.dumps(plan), engine, str(not_a_socket)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(probe.stdout)
    assert seen == {engine: errno.ENXIO, str(not_a_socket): errno.EACCES}
