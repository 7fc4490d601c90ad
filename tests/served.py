"""The app under uvicorn on loopback, for tests that need a real HTTP server.

:func:`serve` runs uvicorn in a thread with its own event loop (where the app's lifespan
starts its Forecourt) and yields a :class:`Served` naming the address, the owner key and that
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import uvicorn
from fastapi import FastAPI

from conftest import free_port
from forecourt.app import create_app
from forecourt.core import Forecourt
from forecourt.settings import OWNER_KEY_FILE, Settings

SERVER_START_TIMEOUT_S = 20.0
T = TypeVar("T")


@dataclass
class Served:
    """An app served by uvicorn on loopback, in a thread with its own event loop."""

    url: str
    owner_key: str
    app: FastAPI
    loop: asyncio.AbstractEventLoop

    @property
    def fc(self) -> Forecourt:
        """The app's Forecourt (it lives on :attr:`loop`)."""
        fc: Forecourt = self.app.state.forecourt
        return fc

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.owner_key}"}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (where its Forecourt lives) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[Served]:
    """Serve ``create_app(settings)`` on a free loopback port until the block ends."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=settings.stream_compression,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=run, name="forecourt-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the uvicorn server stopped before it started serving")
        if time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail(f"the uvicorn server did not start in {SERVER_START_TIMEOUT_S} s")
        time.sleep(0.02)
    try:
        owner_key = (settings.data_dir / OWNER_KEY_FILE).read_text().strip()
        yield Served(f"http://127.0.0.1:{port}", owner_key, app, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)
        assert not thread.is_alive(), "the uvicorn server did not shut down"
        loop.close()
