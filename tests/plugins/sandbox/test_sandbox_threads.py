"""A plugin cannot fill the host's process table: a worker holds at most ``max_threads`` tasks.

Here Forecourt runs as root on a kernel with a writable pids hierarchy, so the bound is the
worker's pids cgroup; the report says so. A plugin that starts 10,000 threads with small
stacks gets an error after the bound (its run is a recorded plugin error) and the next call
runs normally. The fallbacks are checked too: without the cgroup, ``RLIMIT_NPROC`` on the
sandbox uid; without a uid of its own, a seccomp filter that lets no thread start.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import config, sandbox

from forecourt.plugins.sandbox import Limits, WorkerSpec, detect, pids
from forecourt.plugins.sandbox.confine import Plan, _threads

MAX_THREADS = 32
MANY = 10_000
CODE = '''
import threading


def start_many(count):
    """Start ``count`` threads with small stacks; how many started before one failed."""
    threading.stack_size(64 * 1024)
    stop = threading.Event()
    started = []
    try:
        for _ in range(count):
            thread = threading.Thread(target=stop.wait)
            thread.start()
            started.append(thread)
    except RuntimeError as exc:
        failure = str(exc)
    else:
        failure = None
    stop.set()
    for thread in started:
        thread.join()
    return {"started": len(started), "failure": failure}


def start_many_and_fail(count):
    """The same, letting the error end the call."""
    threading.stack_size(64 * 1024)
    stop = threading.Event()
    try:
        for _ in range(count):
            threading.Thread(target=stop.wait, daemon=True).start()
    finally:
        stop.set()
    return "every thread started"


def one_thread(_):
    done = []
    thread = threading.Thread(target=lambda: done.append(True))
    thread.start()
    thread.join()
    return done == [True]
'''

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox tests need root")


@pytest.fixture
def package() -> Iterator[Path]:
    """A plugin package the sandbox user can read (pytest's tmp_path is root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="forecourt-threads-"))
    folder.chmod(0o755)
    (folder / "threads.py").write_text(CODE)
    (folder / "threads.py").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def spec(package: Path, function: str, **fields: Any) -> WorkerSpec:
    # Memory for thousands of small stacks: without the bound, the address space is not what
    # stops them first.
    fields.setdefault("limits", Limits(memory_mib=2048, timeout_s=60))
    return WorkerSpec(
        key=f"test.threads.{function}@1.0.0",
        package_dir=package,
        entry_point=f"threads:{function}",
        **fields,
    )


def test_the_report_names_the_bound_in_force() -> None:
    assert pids.hierarchy() is not None, "this host has a writable pids hierarchy"
    protection = detect(config(max_threads=MAX_THREADS))["threads"]
    assert protection.available
    assert protection.detail == (f"a pids cgroup per worker: at most {MAX_THREADS} tasks at once")
    assert detect(config(max_threads=MAX_THREADS)).to_dict()["protections"]["threads"]["available"]


async def test_ten_thousand_threads_stop_at_the_bound(package: Path) -> None:
    async with sandbox(max_threads=MAX_THREADS) as box:
        counted = await box.pool.call(spec(package, "start_many"), input=MANY, config={})
        assert counted.status == "ok", counted
        # The worker's main thread is one of its tasks.
        assert counted.output["started"] == MAX_THREADS - 1
        assert "can't start new thread" in counted.output["failure"]

        failed = await box.pool.call(spec(package, "start_many_and_fail"), input=MANY, config={})
        assert failed.status == "error", failed
        assert failed.error_class == "RuntimeError"
        assert "can't start new thread" in (failed.error_message or "")

        # The host and the pool are fine: the next call of that plugin runs.
        again = await box.pool.call(spec(package, "one_thread"), input=None, config={})
        assert (again.status, again.output) == ("ok", True)


async def test_the_bound_follows_the_setting(package: Path) -> None:
    async with sandbox(max_threads=8) as box:
        counted = await box.pool.call(spec(package, "start_many"), input=MANY, config={})
        assert counted.status == "ok", counted
        assert counted.output["started"] == 7


async def test_without_the_bound_the_threads_are_not_stopped_there(package: Path) -> None:
    """The companion: with the protection switched off, far more threads start, so the
    test above fails if the bound does not hold."""
    async with sandbox(max_threads=MAX_THREADS, disabled=("threads",)) as box:
        counted = await box.pool.call(spec(package, "start_many"), input=MAX_THREADS * 4, config={})
        assert counted.status == "ok", counted
        assert counted.output["started"] == MAX_THREADS * 4


def plan(**fields: Any) -> Plan:
    values: dict[str, Any] = {
        "userns": False,
        "uid": 65534,
        "gid": 65534,
        "disabled": frozenset(),
        "new_root": "/nonexistent",
        "private_dir": "/nonexistent",
        "private_mib": 16,
        "read_only": (),
        "devices": (),
        "egress_socket": None,
        "cpu_s": 2,
        "memory_mib": 256,
        "file_mib": 1,
        "open_files": 64,
        "max_threads": MAX_THREADS,
    }
    values.update(fields)
    return Plan(**values)


def test_without_a_cgroup_the_fallbacks_are_nproc_then_seccomp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(
        "forecourt.plugins.sandbox.confine.resource.setrlimit",
        lambda kind, value: limits.append((kind, value)),
    )
    done: dict[str, dict[str, Any]] = {}

    as_root = _threads(plan(pids_cgroup=None), done)
    assert as_root.startswith(f"RLIMIT_NPROC {MAX_THREADS} on uid 65534")
    assert done["threads"]["mechanism"] == "rlimit_nproc"
    assert limits == [(resource.RLIMIT_NPROC, (MAX_THREADS, MAX_THREADS))]

    # A cgroup that this process is not in does not count.
    elsewhere = _threads(plan(pids_cgroup="/not-this-one"), done)
    assert elsewhere.startswith("RLIMIT_NPROC")

    unprivileged = _threads(plan(pids_cgroup=None, userns=True), done)
    assert unprivileged.startswith("seccomp: no thread may be started")
    assert done["threads"]["mechanism"] == "seccomp"
    assert len(limits) == 2  # no RLIMIT_NPROC on Forecourt's own uid


# -- through the API: the report, and the run's record ----------------------------------------

MANIFEST = """
id = "com.example.threads"
name = "Threads"
version = "1.0.0"
type = "transformation"
entry_point = "plugin:run"

[resources]
memory_mib = 2048
"""
API_CODE = (
    CODE
    + """

def run(payload):
    start_many_and_fail(payload["records"][0]["count"])
    return {"records": []}
"""
)


async def test_the_api_reports_the_bound_and_records_the_plugins_error(
    harness_factory: Any,
) -> None:
    h = await harness_factory(plugin_allow_unsigned=True, plugin_max_threads=MAX_THREADS)
    report = await h.client.get("/api/v1/plugins/sandbox", headers=h.auth())
    assert report.status_code == 200, report.text
    threads = report.json()["protections"]["threads"]
    assert threads["available"] is True
    assert threads["detail"] == f"a pids cgroup per worker: at most {MAX_THREADS} tasks at once"

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", API_CODE)
    installed = await h.client.post(
        "/api/v1/plugins",
        files={"package": ("plugin.zip", buffer.getvalue(), "application/zip")},
        headers=h.auth(),
    )
    assert installed.status_code == 201, installed.text
    created = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.threads", "name": "threads"},
        headers=h.auth(),
    )
    assert created.status_code == 201, created.text
    instance_id = created.json()["id"]

    run = await h.client.post(
        f"/api/v1/plugin-instances/{instance_id}/execute",
        json={"input": {"records": [{"count": MANY}]}},
        headers=h.auth(),
    )
    assert run.status_code == 200, run.text
    body = run.json()
    assert (body["status"], body["error_class"]) == ("error", "RuntimeError")
    assert "can't start new thread" in body["error_message"]
    listed = await h.client.get("/api/v1/plugins/com.example.threads/executions", headers=h.auth())
    assert [(e["id"], e["status"]) for e in listed.json()["items"]] == [(body["id"], "error")]
