"""``forecourt serve`` as a real process: first start, the REST API over TCP, a clean stop on
SIGTERM, and a restart on the same data that keeps every key.

Runs embedded (SQLite, in-memory limits) and scaled out (PostgreSQL migrated beforehand
with ``forecourt migrate``, Redis).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REDIS_URL, free_port

FORECOURT = Path(sys.executable).parent / "forecourt"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
OWNER_BANNER = "owner API key"


@dataclass
class Server:
    """One ``forecourt serve`` process; its stderr goes to a file so it can never block."""

    env: dict[str, str]
    cwd: Path
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FORECOURT_DATA_DIR"])

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        self.log = self.log_dir / f"serve-{self.starts}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(FORECOURT), "serve", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"forecourt serve exited with {self.process.returncode}:\n{self.stderr()}"
                )
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_INTERVAL_S)
        pytest.fail(
            f"forecourt serve did not answer /healthz in {START_TIMEOUT_S} s:\n{self.stderr()}"
        )

    def stop(self) -> int:
        """SIGTERM, and the exit code (it must come within STOP_TIMEOUT_S)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"forecourt serve ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{self.stderr()}")
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECOURT_")}
    env["FORECOURT_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = base_env(tmp_path / "data")
    if request.param == "postgres":
        env["FORECOURT_DATABASE_URL"] = request.getfixturevalue("empty_pg_database")
        env["FORECOURT_REDIS_URL"] = REDIS_URL
        env["FORECOURT_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
        migrated = subprocess.run(
            [str(FORECOURT), "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
    srv = Server(env, tmp_path, tmp_path)
    try:
        yield srv
    finally:
        srv.kill()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def read_owner_key(data_dir: Path) -> str:
    path = data_dir / "owner-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def check_rate_limit_headers(response: httpx.Response) -> None:
    for header in (
        "RateLimit-Policy",
        "RateLimit",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ):
        assert header in response.headers, header
    assert int(response.headers["X-RateLimit-Remaining"]) < int(
        response.headers["X-RateLimit-Limit"]
    )


def test_serve_restart_and_durability(server: Server) -> None:
    server.start()
    owner = read_owner_key(server.data_dir)
    assert owner.startswith("fck_live_")
    first_log = server.stderr()
    # stderr is a file, not a terminal: it says where the key is, never the key.
    assert owner not in first_log, first_log
    assert f"saved it to {server.data_dir / 'owner-key'}" in first_log, first_log

    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        created = client.post(
            "/api/v1/keys", headers=bearer(owner), json={"name": "e2e", "scopes": ["keys:read"]}
        )
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        key = body["key"]
        assert key.startswith("fck_") and body["status"] == "active"

        listed = client.get("/api/v1/keys", headers=bearer(key))
        assert listed.status_code == 200, listed.text
        assert {k["name"] for k in listed.json()["items"]} == {"owner", "e2e"}
        assert key not in listed.text
        check_rate_limit_headers(listed)

        # keys:read does not allow writing.
        denied = client.post(
            "/api/v1/keys", headers=bearer(key), json={"name": "no", "scopes": ["keys:read"]}
        )
        assert denied.status_code == 403
        assert denied.headers["content-type"].startswith("application/problem+json")

        bogus = client.get("/api/v1/keys", headers=bearer("fck_live_" + "A" * 36))
        assert bogus.status_code == 401
        assert bogus.headers["content-type"].startswith("application/problem+json")
        assert bogus.json()["status"] == 401
        assert "Traceback" not in bogus.text

        docs = client.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/api/v1/keys" in schema.json()["paths"]
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text

    assert server.stop() == 0

    server.start()
    assert OWNER_BANNER not in server.stderr()
    assert owner not in server.stderr()
    assert read_owner_key(server.data_dir) == owner
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        again = client.get("/api/v1/keys", headers=bearer(owner))
        assert again.status_code == 200, again.text
        assert {k["name"] for k in again.json()["items"]} == {"owner", "e2e"}
        still = client.get("/api/v1/keys", headers=bearer(key))
        assert still.status_code == 200, still.text
    assert server.stop() == 0
