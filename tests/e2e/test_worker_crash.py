"""Nothing accepted is lost: a delivery worker process killed with SIGKILL mid-delivery, and
PostgreSQL restarted under a running worker.

Workers run as real processes (a small runner below: Forecourt from the environment plus one
DeliveryWorker, stopped by SIGTERM) against PostgreSQL, delivering to a receiver on 127.0.0.1
in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import RUN_ID, free_port
from forecourt.core import Forecourt
from forecourt.db import migrate
from forecourt.db.engine import create_engine
from forecourt.settings import Settings
from forecourt.webhooks.models import DELIVERING, PENDING, SUCCEEDED, Attempt, Delivery
from receivers import Receiver, Reply, add_endpoint, publish

SECRET_KEY = "crash-test-secret-" + RUN_ID
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 40.0
PG_COMMAND_TIMEOUT_S = 60.0
LEASE_S = 2.0

RUNNER = """
import asyncio, signal, sys
from forecourt.core import Forecourt
from forecourt.webhooks.delivery import DeliveryWorker

async def main() -> None:
    fc = Forecourt()
    await fc.start(run_workers=False)
    worker = DeliveryWorker(fc, worker_id=sys.argv[1])
    await worker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await worker.stop()
    await fc.stop()

asyncio.run(main())
"""


@dataclass
class WorkerProcess:
    """One worker process; its log goes to a file so it can never block on a pipe."""

    worker_id: str
    env: dict[str, str]
    cwd: Path
    process: asyncio.subprocess.Process | None = None
    log: Path = field(init=False)
    _sink: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self.log = self.cwd / f"{self.worker_id}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def start(self) -> None:
        self._sink = self.log.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RUNNER,
            self.worker_id,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._sink,
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.kill()
            pytest.fail(f"worker {self.worker_id} did not start:\n{self.output()}")

    async def kill(self) -> None:
        if self.process is not None:
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.wait()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    async def terminate(self) -> int:
        """SIGTERM and the exit code, which must come within STOP_TIMEOUT_S."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            await self.kill()
            pytest.fail(f"worker {self.worker_id} ignored SIGTERM:\n{self.output()}")
        await self.kill()
        return code


@pytest.fixture
async def worker_processes(tmp_path: Path) -> AsyncIterator[list[WorkerProcess]]:
    """Worker processes a test started; any still running are killed after it."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        await worker.kill()


def worker_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECOURT_")}
    env.update(
        {
            "FORECOURT_DATABASE_URL": database_url,
            "FORECOURT_DATA_DIR": str(data_dir),
            "FORECOURT_SECRET_KEY": SECRET_KEY,
            "FORECOURT_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
            "FORECOURT_DELIVERY_POLL_INTERVAL_S": "0.1",
        }
    )
    env.update({f"FORECOURT_{name.upper()}": value for name, value in settings.items()})
    return env


async def statuses(fc: Forecourt, ids: list[str]) -> dict[str, str]:
    async with fc.sessionmaker() as session:
        rows = await session.execute(
            select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids))
        )
        return {row.id: row.status for row in rows}


async def settle(fc: Forecourt, ids: list[str], workers: list[WorkerProcess]) -> None:
    """Wait until every delivery succeeded (database errors while it restarts are waited out)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    current: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            current = await statuses(fc, ids)
        except Exception:
            current = {}
        if len(current) == len(ids) and set(current.values()) == {SUCCEEDED}:
            return
        await asyncio.sleep(0.1)
    logs = "\n".join(f"--- {w.worker_id}\n{w.output()[-4000:]}" for w in workers)
    pytest.fail(f"not all delivered in {SETTLE_TIMEOUT_S} s: {Counter(current.values())}\n{logs}")


async def test_killed_worker_deliveries_are_taken_over(
    pg_database: str, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    fc = Forecourt(
        Settings(
            data_dir=tmp_path / "data",
            database_url=pg_database,
            secret_key=SECRET_KEY,
            webhook_allow_private="127.0.0.0/8",
        )
    )
    await fc.start(run_workers=False)
    try:
        async with Receiver(default=Reply(delay_s=2.0)) as receiver:
            endpoint = await add_endpoint(fc, receiver.url(), timeout_s=10.0)
            ids = await publish(fc, endpoint, count=20)
            env = worker_env(
                pg_database,
                tmp_path / "worker-data",
                delivery_lease_s=str(LEASE_S),
                delivery_concurrency="8",
            )
            first = WorkerProcess("worker-1", env, tmp_path)
            worker_processes.append(first)
            await first.start()
            await receiver.wait_for(
                lambda: receiver.in_flight() == 8, timeout_s=10, what="8 requests in flight"
            )

            await first.kill()  # SIGKILL, mid-delivery
            killed_at = time.monotonic()

            current = await statuses(fc, ids)
            in_flight = sorted(i for i, status in current.items() if status == DELIVERING)
            assert len(in_flight) == 8
            assert Counter(current.values()) == {DELIVERING: 8, PENDING: 12}
            assert sorted(receiver.ids()) == in_flight

            second = WorkerProcess("worker-2", env, tmp_path)
            worker_processes.append(second)
            await second.start()
            await settle(fc, ids, worker_processes)
            assert await second.terminate() == 0

        received = Counter(receiver.ids())
        assert set(received) == set(ids)  # none lost
        for delivery_id in ids:
            # At-least-once: what was in flight when the worker died is sent once more.
            assert received[delivery_id] == (2 if delivery_id in in_flight else 1)
        for delivery_id in in_flight:
            # Taken over only once the dead worker's lease had run out.
            second_copy = [r.at for r in receiver.received if r.webhook_id == delivery_id][1]
            assert second_copy - killed_at > LEASE_S / 2
        async with fc.sessionmaker() as session:
            rows = (await session.execute(select(Attempt.delivery_id, Attempt.worker_id))).all()
        # The killed worker recorded nothing; the second one recorded every delivery once.
        assert Counter(row.delivery_id for row in rows) == Counter(ids)
        assert {row.worker_id for row in rows} == {"worker-2"}
    finally:
        await fc.stop()


# -- PostgreSQL restarted mid-run ----------------------------------------------------------


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster of this test's own (the shared server is never touched)."""

    bin_dir: Path
    data_dir: Path
    port: int
    as_postgres: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/forecourt"

    async def run(self, tool: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.as_postgres,
            str(self.bin_dir / tool),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), PG_COMMAND_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"{tool} {' '.join(args)} did not finish in {PG_COMMAND_TIMEOUT_S} s")
        if process.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} failed:\n{output.decode(errors='replace')}")

    def pg_ctl_args(self, *args: str) -> list[str]:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        return ["-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w",
                "-o", options, *args]  # fmt: skip

    async def start(self) -> None:
        await self.run("pg_ctl", *self.pg_ctl_args("start"))

    async def restart(self) -> None:
        await self.run("pg_ctl", *self.pg_ctl_args("-m", "fast", "restart"))

    async def stop(self) -> None:
        await self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")


def _postgres_bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found))
    return candidates[0].parent if candidates else None


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("initdb was not found (PostgreSQL server binaries are not installed)")
    as_postgres: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        # initdb refuses to run as root; the cluster is made by the postgres user.
        runuser = shutil.which("runuser")
        try:
            import pwd

            entry = pwd.getpwnam("postgres")
        except KeyError:
            entry = None
        if runuser is None or entry is None:
            pytest.skip("running as root without runuser or a postgres user: initdb refuses root")
        as_postgres = [runuser, "-u", "postgres", "--"]
        owner = (entry.pw_uid, entry.pw_gid)
    base = Path(tempfile.mkdtemp(prefix="fct-pg-"))
    data_dir = base / "data"
    data_dir.mkdir()
    if owner is not None:
        os.chown(base, *owner)
        os.chown(data_dir, *owner)
    made = Cluster(bin_dir, data_dir, free_port(), as_postgres)
    try:
        await made.run("initdb", "-D", str(data_dir), "-U", "postgres", "-A", "trust", "--no-sync")
        await made.start()
        try:
            yield made
        finally:
            await made.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_deliveries_survive_a_database_restart(
    cluster: Cluster, tmp_path: Path, worker_processes: list[WorkerProcess]
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    admin_dsn = make_url(cluster.url).set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_dsn.render_as_string(hide_password=False), timeout=10)
    try:
        await admin.execute("CREATE DATABASE forecourt")
    finally:
        await admin.close()
    engine = create_engine(cluster.url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()

    fc = Forecourt(
        Settings(
            data_dir=tmp_path / "data",
            database_url=cluster.url,
            secret_key=SECRET_KEY,
            webhook_allow_private="127.0.0.0/8",
        )
    )
    await fc.start(run_workers=False)
    try:
        async with Receiver(default=Reply(delay_s=0.2)) as receiver:
            endpoint = await add_endpoint(fc, receiver.url(), timeout_s=10.0)
            ids = await publish(fc, endpoint, count=60)
            env = worker_env(
                cluster.url,
                tmp_path / "worker-data",
                delivery_lease_s="5",
                delivery_concurrency="4",
            )
            worker = WorkerProcess("worker-pg", env, tmp_path)
            worker_processes.append(worker)
            await worker.start()
            await receiver.wait_for(
                lambda: len(receiver.completed) >= 8, timeout_s=10, what="the first deliveries"
            )

            await cluster.restart()
            assert len(set(receiver.ids())) < len(ids), "the run ended before the restart"
            # The pool's connections were closed by the server: the next checkout replaces
            # them, so the first statement after the restart does not fail.
            async with fc.sessionmaker() as session:
                assert await session.scalar(select(func.count()).select_from(Delivery)) == 60

            await settle(fc, ids, worker_processes)
            assert await worker.terminate() == 0

        assert set(receiver.ids()) == set(ids)
        async with fc.sessionmaker() as session:
            rows = (await session.execute(select(Delivery.status, Delivery.attempts))).all()
        assert {row.status for row in rows} == {SUCCEEDED}
        assert len(rows) == len(ids)
    finally:
        await fc.stop()
