"""Points per second accepted through ``POST /api/v1/metrics`` in batches of 500, against a
bare ``executemany`` of the same rows into the same database.

Run from the project root (PostgreSQL on 127.0.0.1:5432 for the second line)::

    python -m bench.metrics_ingest [--batches N] [--concurrency C]

The API side posts N batches of 500 points (20 series, 25 times each) from C concurrent
clients through the whole app (key check, rate limits, validation, series lookup, the write
buffer) and is timed until the buffer has written every point. The baseline inserts the same
(series, time, value) rows, 500 to a statement and a transaction, with the driver's own
``executemany`` (sqlite3 through aiosqlite; asyncpg), into the same table. The figure is
the ratio of the rates. Target: >= 0.3. Once on SQLite, once on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import time
from typing import Any

import orjson
from sqlalchemy import text

from bench._common import machine, run
from bench._metrics import databases, node

BATCHES = 200
BATCH = 500
SERIES = 20
CONCURRENCY = 4
TARGET_RATIO = 0.3
ROUNDS = 2


def bodies(batches: int, start_s: int) -> list[dict[str, Any]]:
    out = []
    for b in range(batches):
        points = []
        for i in range(BATCH // SERIES):
            at = start_s + (b * (BATCH // SERIES) + i)  # one second apart, never repeated
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
            for s in range(SERIES):
                points.append(
                    {
                        "name": "bench.ingest",
                        "value": s + i / 7,
                        "labels": {"s": str(s)},
                        "time": stamp,
                    }
                )
        out.append({"points": points})
    return out


async def measure(label: str, url: str | None, batches: int, concurrency: int) -> None:
    async with node(url, metrics_buffer_points=1_000_000) as n:
        fc = n.fc
        start_s = int(time.time()) - 6 * 86_400
        api_rates, bare_rates = [], []
        headers = {**n.headers, "Content-Type": "application/json"}
        for round_no in range(ROUNDS):
            payloads = bodies(batches, start_s + round_no * batches * BATCH)
            # Both sides start from their input ready: the request bodies encoded here, as
            # the baseline's rows are built before its clock starts.
            queue = [orjson.dumps(body) for body in reversed(payloads)]

            async def client(queue: list[bytes]) -> None:
                while queue:
                    body = queue.pop()
                    response = await n.client.post("/api/v1/metrics", content=body, headers=headers)
                    assert response.status_code == 202, response.text
                    assert response.json()["accepted"] == BATCH, response.text

            t0 = time.perf_counter()
            await asyncio.gather(*(client(queue) for _ in range(concurrency)))
            await fc.metrics.flush()
            api_rates.append(batches * BATCH / (time.perf_counter() - t0))

            # The same rows, for series of their own, inserted bare.
            async with fc.engine.begin() as conn:
                base = (await conn.execute(text("SELECT max(id) FROM metric_series"))).scalar()
                await conn.execute(
                    text(
                        "INSERT INTO metric_series (id, tenant_id, name, source, labels, "
                        "labels_key, created_at) SELECT id + :shift, tenant_id, name || '.bare', "
                        "source, labels, labels_key, created_at FROM metric_series "
                        "WHERE name = 'bench.ingest'"
                    ),
                    {"shift": base},
                )
            async with fc.engine.connect() as conn:
                ids = dict(
                    (
                        await conn.execute(
                            text("SELECT labels_key, id FROM metric_series WHERE name = :n"),
                            {"n": "bench.ingest.bare"},
                        )
                    ).all()
                )
            rows = [
                [
                    (
                        ids[orjson.dumps(p["labels"], option=orjson.OPT_SORT_KEYS).decode()],
                        calendar.timegm(time.strptime(p["time"], "%Y-%m-%dT%H:%M:%SZ")) * 1000,
                        float(p["value"]),
                    )
                    for p in body["points"]
                ]
                for body in payloads
            ]
            t0 = time.perf_counter()
            async with fc.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                for chunk in rows:
                    if url is None:
                        await driver.executemany(
                            "INSERT INTO metric_points (series_id, ts, value) VALUES (?, ?, ?)",
                            chunk,
                        )
                        await driver.commit()
                    else:
                        async with driver.transaction():
                            await driver.executemany(
                                "INSERT INTO metric_points (series_id, ts, value) "
                                "VALUES ($1, $2, $3)",
                                chunk,
                            )
            bare_rates.append(batches * BATCH / (time.perf_counter() - t0))
            async with fc.engine.begin() as conn:
                await conn.execute(
                    text("DELETE FROM metric_series WHERE name = 'bench.ingest.bare'")
                )
        api, bare = max(api_rates), max(bare_rates)
        ratio = api / bare
        verdict = "meets" if ratio >= TARGET_RATIO else "below"
        print(
            f"{label}: {batches} batches of {BATCH}, {concurrency} clients: "
            f"API {api:,.0f} points/s, "
            f"bare executemany {bare:,.0f} points/s: ratio {ratio:.2f} "
            f"({verdict} the {TARGET_RATIO:g} target)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_ingest")
    parser.add_argument("--batches", type=int, default=BATCHES)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    for label, url in databases():
        run(measure(label, url, args.batches, args.concurrency))


if __name__ == "__main__":
    main()
