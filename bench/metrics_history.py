"""A day of history at a 1-minute step, through the API, against scanning the raw points.

Run from the project root (PostgreSQL on 127.0.0.1:5432 for the second line)::

    python -m bench.metrics_history [--days D] [--series N] [--rounds R]

Seven days of 10-second points for 20 series (1.2 million points) are written through the
store's own write path and rolled up. The figure: ``GET /api/v1/metrics/query`` for the last
24 hours at ``step=60&agg=avg`` (every series, through the whole app: key check, rate
limits, the answer as JSON), against the same answer computed by the database from the raw
points (``avg(value)`` grouped by series and minute, the rows fetched), as a ratio of their
median times over the rounds. Target: >= 10x. Once on SQLite, once on PostgreSQL.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import orjson
from sqlalchemy import bindparam, text

from bench._common import machine, run
from bench._metrics import databases, node

DAYS = 7
SERIES = 20
INTERVAL_S = 10
ROUNDS = 5
TARGET_RATIO = 10.0
NAME = "bench.history"
WRITE_CHUNK = 20_000

RAW_AVG = text(
    "SELECT series_id, ts - ts % 60000 AS minute, avg(value) FROM metric_points "
    "WHERE series_id IN :ids AND ts >= :start AND ts < :end "
    "GROUP BY series_id, ts - ts % 60000 ORDER BY series_id, minute"
).bindparams(bindparam("ids", expanding=True))


async def measure(label: str, url: str | None, days: int, series: int, rounds: int) -> None:
    from forecourt.metrics.service import Point

    async with node(url, metrics_rollup_batch=20_000, metrics_buffer_points=1_000_000) as n:
        fc = n.fc
        tenant = fc.metrics.default_tenant_id
        now_s = int(time.time()) // 60 * 60
        start_s = now_s - days * 86_400
        began = time.perf_counter()
        batch: list[Point] = []
        for ts in range(start_s, now_s, INTERVAL_S):
            for s in range(series):
                value = (ts // INTERVAL_S * (s + 1)) % 1000 / 10
                batch.append(Point(NAME, value, {"series": str(s)}, ts * 1000))
            if len(batch) >= WRITE_CHUNK:
                await fc.metrics.write(tenant, "bench", batch)
                await fc.metrics.flush()
                batch = []
        await fc.metrics.write(tenant, "bench", batch)
        await fc.metrics.flush()
        written = time.perf_counter()
        await fc.metrics.roll_up()
        rolled = time.perf_counter()
        # What the set-up left alive is moved out of the garbage collector's way, for both
        # sides of the comparison: a full collection of this process's heap (the benchmark's
        # own, not the server's) otherwise lands inside a round now and then.
        gc.collect()
        gc.freeze()
        points = (now_s - start_s) // INTERVAL_S * series
        print(
            f"{label}: {points:,} points written in {written - began:.1f} s, "
            f"rolled up in {rolled - written:.1f} s",
            flush=True,
        )

        params: dict[str, str | int] = {
            "name": NAME,
            "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s - 86_400)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s)),
            "step": 60,
            "agg": "avg",
        }
        async with fc.engine.connect() as conn:
            ids = list((await conn.execute(text("SELECT id FROM metric_series"))).scalars())
        api_times, raw_times = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            response = await n.client.get("/api/v1/metrics/query", params=params, headers=n.headers)
            # Parsed as a client that cares reads JSON (the baseline's rows arrive as values).
            body = orjson.loads(response.content)
            api_times.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
            assert body["resolution"] == "1m"
            got = sum(len(s["points"]) for s in body["series"])

            t0 = time.perf_counter()
            async with fc.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        RAW_AVG,
                        {"ids": ids, "start": (now_s - 86_400) * 1000, "end": now_s * 1000},
                    )
                ).all()
            raw_times.append(time.perf_counter() - t0)
        assert got == len(rows) == series * 1440, (got, len(rows))
        api, raw = statistics.median(api_times), statistics.median(raw_times)
        ratio = raw / api
        verdict = "meets" if ratio >= TARGET_RATIO else "below"
        print(
            f"{label}: 24 h at 1 min, {series} series ({got:,} points): API {api * 1000:.1f} ms, "
            f"raw scan in SQL {raw * 1000:.1f} ms: ratio {ratio:.1f}x "
            f"({verdict} the {TARGET_RATIO:g}x target)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_history")
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--series", type=int, default=SERIES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    for label, url in databases():
        run(measure(label, url, args.days, args.series, args.rounds))


if __name__ == "__main__":
    main()
