"""Client and AsyncClient: the same operations over httpx, sync or async.

Both talk only to an httpx transport, so the same code runs against a server, an ASGI app
(``httpx.ASGITransport``) or a mock transport.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx

from forecourt import __version__
from forecourt.client._exceptions import TransportError, error_for
from forecourt.client._operations import Call, Deliveries, Events, Keys, Webhooks

DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = f"forecourt-python/{__version__}"
Body = Any


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def _decode(response: httpx.Response) -> Body:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:500]}
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
        raise error_for(response.status_code, problem, response.headers.get("retry-after"))
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


class Client:
    """Synchronous client. ``Client(base_url, api_key)``; use as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.events: Events[Body] = Events(self._send)
        self.webhooks: Webhooks[Body] = Webhooks(self._send)
        self.deliveries: Deliveries[Body] = Deliveries(self._send)
        self.keys: Keys[Body] = Keys(self._send)

    def _send(self, call: Call) -> Body:
        try:
            response = self._http.request(
                call.method, call.path, json=call.json, params=call.params, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise TransportError(str(exc)) from exc
        return _decode(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Asynchronous client: the same operations, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self.events: Events[Awaitable[Body]] = Events(self._send)
        self.webhooks: Webhooks[Awaitable[Body]] = Webhooks(self._send)
        self.deliveries: Deliveries[Awaitable[Body]] = Deliveries(self._send)
        self.keys: Keys[Awaitable[Body]] = Keys(self._send)

    async def _send(self, call: Call) -> Body:
        try:
            response = await self._http.request(
                call.method, call.path, json=call.json, params=call.params, headers=call.headers
            )
        except httpx.TransportError as exc:
            raise TransportError(str(exc)) from exc
        return _decode(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
