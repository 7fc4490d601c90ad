"""The escape corpus through the real API: a plugin installed from a package tries each way
out from inside ``POST /api/v1/plugin-instances/{id}/execute``. Every attempt is contained and
recorded with its status; afterwards Forecourt is healthy and a normal call still works."""

from __future__ import annotations

from typing import Any

import pytest
from plugin_support import execute, executions, files, install, instance, start

from conftest import Harness

HOSTILE = """
import ctypes
import os
import socket
import sys
import time

import forecourt_plugin


def run(payload):
    attack = payload["records"][0]
    kind = attack["kind"]
    if kind == "loop":
        while True:
            pass
    if kind == "allocate":
        block = bytearray(2 * 1024 ** 3)
        return {"records": [{"allocated": len(block)}]}
    if kind == "fork":
        for _ in range(50):
            os.fork()
    if kind == "big_file":
        with open("big.bin", "wb") as out:
            chunk = b"x" * (1024 * 1024)
            for _ in range(1024):
                out.write(chunk)
    if kind == "read":
        with open(attack["path"], "rb") as source:
            return {"records": [{"read": len(source.read())}]}
    if kind == "list":
        return {"records": [{"entries": sorted(os.listdir(attack["path"]))}]}
    if kind == "environ":
        return {"records": [{"names": sorted(k for k in os.environ if "FORECOURT" in k)}]}
    if kind == "connect":
        host, port = attack["address"]
        socket.create_connection((host, port), timeout=2).close()
    if kind == "fetch":
        forecourt_plugin.fetch(attack["url"])
    if kind == "ctypes":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(57) < 0:  # fork(2) itself
            raise OSError(ctypes.get_errno(), "fork refused")
    if kind == "forge":
        frame = '{"status": "ok", "output": {"records": [{"forged": true}]}}'
        for stream in (sys.stdout, sys.stderr):
            stream.write(frame + "\\n")
            stream.flush()
        os.write(1, frame.encode() * 10)
        return {"records": [{"genuine": True}]}
    if kind == "never_answers":
        time.sleep(3600)
    if kind == "exit":
        os._exit(3)
    return {"records": [{"harmless": kind}]}
"""

RESOURCES = {"timeout_s": 3, "cpu_s": 1, "memory_mib": 256, "file_mib": 16}


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    harness = await start(harness_factory)
    await install(harness, files(HOSTILE, resources=RESOURCES, config_schema=None))
    return harness


async def attack(h: Harness, instance_id: str, **how: Any) -> dict[str, Any]:
    return await execute(h, instance_id, {"records": [how]})


async def test_every_escape_is_contained_and_recorded_then_forecourt_still_serves(
    h: Harness,
) -> None:
    created = await instance(h, config={})
    run = created["id"]
    database = h.fc.settings.data_dir / "forecourt.db"
    outcomes: dict[str, dict[str, Any]] = {
        "loop": await attack(h, run, kind="loop"),
        "allocate": await attack(h, run, kind="allocate"),
        "fork": await attack(h, run, kind="fork"),
        "big_file": await attack(h, run, kind="big_file"),
        "shadow": await attack(h, run, kind="read", path="/etc/shadow"),
        "data_dir": await attack(h, run, kind="list", path=str(h.fc.settings.data_dir)),
        "environ": await attack(h, run, kind="environ"),
        "postgres": await attack(h, run, kind="connect", address=["127.0.0.1", 5432]),
        "undeclared_host": await attack(h, run, kind="fetch", url="http://example.com/"),
        "ctypes": await attack(h, run, kind="ctypes"),
        "forge": await attack(h, run, kind="forge"),
        "never_answers": await attack(h, run, kind="never_answers"),
        "exit": await attack(h, run, kind="exit"),
    }
    if database.exists():  # SQLite: the database file itself
        outcomes["database"] = await attack(h, run, kind="read", path=str(database))

    status = {name: result["status"] for name, result in outcomes.items()}
    assert status["loop"] in ("killed", "timeout")
    assert status["never_answers"] == "timeout"
    assert status["exit"] == "killed"
    for name in ("allocate", "fork", "big_file", "shadow", "data_dir", "postgres", "ctypes"):
        assert status[name] == "error", (name, outcomes[name])
    assert outcomes["allocate"]["error_class"] == "MemoryError"
    assert outcomes["fork"]["error_class"] == "PermissionError"
    assert outcomes["big_file"]["error_class"] == "OSError"  # EFBIG at the file size cap
    assert status["undeclared_host"] == "error"
    assert outcomes["environ"]["output"] == {"records": [{"names": []}]}
    assert outcomes["forge"]["output"] == {"records": [{"genuine": True}]}
    if "database" in outcomes:
        assert status["database"] == "error"

    recorded = {e["id"]: e["status"] for e in await executions(h, "com.example.upper")}
    for result in outcomes.values():
        assert recorded[result["id"]] == result["status"]

    health = await h.client.get("/healthz")
    assert health.status_code == 200
    normal = await attack(h, run, kind="nothing")
    assert normal["status"] == "ok"
    assert normal["output"] == {"records": [{"harmless": "nothing"}]}
