"""Webhook receivers for the browser tests: a real HTTP server on loopback that records what
it is sent and answers as told, and a served Forecourt that may deliver to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from browser import PASSWORD, Site, create_user
from build import index_html

from forecourt.settings import Settings
from served import serve

EMAIL = "dana@example.com"
WAIT_S = 30.0


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers ``status`` with ``body`` (the request's own body when ``echo``)."""

    url: str = ""
    status: int = 200
    body: bytes = b"ok"
    echo: bool = False
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int) -> list[Hit]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.hits) >= count:
                    return list(self.hits)
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.hits)} requests, not {count}")


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.hits.append(Hit(self.path, dict(self.headers.items()), body))
            answer = body if receiver.echo else receiver.body
            self.send_response(receiver.status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="test-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="site")
def hooks_site_fixture(settings_factory: Any) -> Iterator[Site]:
    """A served Forecourt that delivers to loopback receivers, with a password user."""
    index_html()
    settings: Settings = settings_factory(webhook_allow_private="127.0.0.0/8")
    with serve(settings) as served:
        create_user(served.url, served.owner_key, EMAIL)
        yield Site(served.url, served.owner_key, EMAIL, PASSWORD)


def add_endpoint(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/webhooks", json={"url": url, **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {WAIT_S} s")


def deliveries(client: httpx.Client, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    got = client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 200, **params})
    assert got.status_code == 200, got.text
    items: list[dict[str, Any]] = got.json()["items"]
    return items
