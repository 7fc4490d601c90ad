"""What the metrics benchmarks share: a started Forecourt node in this process, on SQLite
(a temporary data folder) or on a fresh PostgreSQL database, with an HTTP client on its ASGI
app (the whole app: access middleware, key check, rate limits, routes) and the owner key."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    BENCH_LIMITS,
    BENCH_TIER,
    DEFAULT_POSTGRES_URL,
    postgres_database,
    postgres_reachable,
)


@dataclass
class Node:
    fc: Any
    client: httpx.AsyncClient
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def databases(postgres_url: str = DEFAULT_POSTGRES_URL) -> Iterator[tuple[str, str | None]]:
    """("SQLite", None), then ("PostgreSQL", url of a fresh database) when one is reachable."""
    yield "SQLite", None
    if not postgres_reachable(postgres_url):
        print("PostgreSQL: skipped (not reachable)", flush=True)
        return
    with postgres_database(postgres_url) as url:
        yield "PostgreSQL", url


@contextlib.asynccontextmanager
async def node(database_url: str | None, **settings: Any) -> AsyncIterator[Node]:
    from forecourt.app import create_app
    from forecourt.core import Forecourt
    from forecourt.settings import DEFAULT_TIERS, OWNER_KEY_FILE, Settings

    with tempfile.TemporaryDirectory(prefix="fc-bench-metrics-") as tmp:
        data_dir = Path(tmp) / "data"
        extra: dict[str, Any] = {"database_url": database_url} if database_url else {}
        config = Settings(
            data_dir=data_dir,
            secret_key="bench-metrics-" + "k" * 24,
            rate_limit_tiers={**DEFAULT_TIERS, BENCH_TIER: BENCH_LIMITS},
            default_tier=BENCH_TIER,
            ip_rate_limit={"minute": 1_000_000_000},
            **extra,
            **settings,
        )
        fc = Forecourt(config)
        await fc.start(run_workers=False)
        app = create_app(config, forecourt=fc)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120)
        key = (data_dir / OWNER_KEY_FILE).read_text().strip()
        try:
            yield Node(fc, client, key)
        finally:
            await client.aclose()
            await fc.stop()
