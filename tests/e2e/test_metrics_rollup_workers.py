"""Two ``forecourt worker`` processes roll up the metrics of one PostgreSQL database at once:
each row of buckets is claimed by one of them at a time (both are seen holding claims), and
once the work list is empty every series' 1-minute and 1-hour counts and sums equal those of
its raw points: nothing is counted twice, nothing is missed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from processes import Node, terminate_all, wait_until

from commands import clean_env
from commands import run as cli
from conftest import REDIS_URL
from forecourt.metrics.buckets import counts_of, values_of

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SERIES = 12
MINUTES = 180  # three hours or more: several rows of minutes per series to claim
ROUNDS = 3
DRAIN_TIMEOUT_S = 120.0
# Three processes start and two roll up three rounds: on a busy machine more than the
# suite's default bound.
SLOW_S = 400


def sql(url: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return list(await conn.fetch(statement))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def deployment(
    tmp_path: Path, empty_pg_database: str, redis_prefix: str
) -> Iterator[tuple[Node, list[Node], str]]:
    env = clean_env(
        tmp_path / "data",
        database_url=empty_pg_database,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        secret_key="metrics-e2e-" + "k" * 24,
        metrics_rollup_interval_s="0.2",
        metrics_rollup_batch="2",
        metrics_flush_interval_s="0.1",
    )
    migrated = cli(env, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    nodes: list[Node] = []
    try:
        nodes.append(Node.serve(env, tmp_path, "--no-workers").start())
        nodes.append(Node.worker(env, tmp_path, name="worker-a").start())
        nodes.append(Node.worker(env, tmp_path, name="worker-b").start())
        yield nodes[0], nodes[1:], empty_pg_database
        assert terminate_all(nodes) == [0, 0, 0]
    finally:
        for node in nodes:
            node.kill()


@pytest.mark.timeout(SLOW_S)
def test_two_workers_roll_up_without_double_counting(
    deployment: tuple[Node, list[Node], str], tmp_path: Path
) -> None:
    api, _workers, url = deployment
    key = (tmp_path / "data" / "owner-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    start_s = int(time.time()) // 60 * 60 - MINUTES * 60
    holders: set[str] = set()
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=30.0) as client:
        for round_no in range(ROUNDS):
            # Every round adds a point to every minute of every series, so each round's
            # minutes (and their hours) are rolled up again.
            points = [
                {
                    "name": "e2e.load",
                    "value": float(round_no * 1000 + minute),
                    "labels": {"series": str(s)},
                    "time": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ",
                        time.gmtime(start_s + minute * 60 + round_no * 10),
                    ),
                }
                for s in range(SERIES)
                for minute in range(MINUTES)
            ]
            for i in range(0, len(points), 500):
                response = client.post("/api/v1/metrics", json={"points": points[i : i + 500]})
                assert response.status_code == 202, response.text
                assert response.json()["refused"] == []

            def drained(round_no: int = round_no) -> bool:
                rows = sql(url, "SELECT leased_by FROM metric_rollup_work")
                holders.update(r["leased_by"] for r in rows if r["leased_by"])
                stored = sql(url, "SELECT count(*) AS n FROM metric_points")[0]["n"]
                return stored == (round_no + 1) * SERIES * MINUTES and not rows

            wait_until(drained, DRAIN_TIMEOUT_S, f"round {round_no} rolled up")

    assert len(holders) == 2, f"claims seen from {holders}"
    raw = {
        r["series_id"]: (r["n"], r["s"])
        for r in sql(
            url,
            "SELECT series_id, count(*) AS n, sum(value) AS s FROM metric_points "
            "GROUP BY series_id",
        )
    }
    assert len(raw) == SERIES
    rolled: dict[int, dict[int, list[tuple[int, float]]]] = {60: {}, 3600: {}}
    for r in sql(url, "SELECT series_id, resolution, counts, sums FROM metric_buckets"):
        counts = counts_of(r["counts"])
        sums = values_of(r["sums"])
        rolled[r["resolution"]].setdefault(r["series_id"], []).extend(
            (int(c), float(v)) for c, v in zip(counts, sums, strict=True) if c
        )
    for resolution in (60, 3600):
        assert rolled[resolution].keys() == raw.keys()
        for sid, (count, total) in raw.items():
            buckets = rolled[resolution][sid]
            assert sum(c for c, _ in buckets) == count == ROUNDS * MINUTES, (resolution, sid)
            assert sum(v for _, v in buckets) == pytest.approx(total), (resolution, sid)
    minutes = sum(len(buckets) for buckets in rolled[60].values())
    assert minutes == SERIES * MINUTES
