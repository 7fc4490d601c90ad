"""Every API operation, written once.

Each method builds a Call and hands it to ``send``: the sync client's ``send`` returns the
decoded body, the async client's returns an awaitable of it, so the same classes serve both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _params(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _body(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Events(Generic[R]):
    def __init__(self, send: Callable[[Call], R]) -> None:
        self._send = send

    def publish(
        self,
        type: str,
        data: Any,
        *,
        id: str | None = None,
        subject: str | None = None,
        severity: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _body(type=type, id=id, subject=subject, severity=severity)
        body["data"] = data
        return self._send(Call("POST", "/api/v1/events", json=body, headers=headers))

    def publish_batch(self, events: Sequence[dict[str, Any]]) -> R:
        return self._send(Call("POST", "/api/v1/events/batch", json={"events": list(events)}))

    def list(
        self,
        *,
        type: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> R:
        return self._send(
            Call(
                "GET",
                "/api/v1/events",
                params=_params(
                    type=type, subject=subject, since=since, until=until, cursor=cursor, limit=limit
                ),
            )
        )

    def get(self, event_id: str) -> R:
        return self._send(Call("GET", f"/api/v1/events/{event_id}"))


class Webhooks(Generic[R]):
    def __init__(self, send: Callable[[Call], R]) -> None:
        self._send = send

    def create(self, url: str, event_types: Sequence[str] = (), **fields: Any) -> R:
        return self._send(
            Call(
                "POST",
                "/api/v1/webhooks",
                json={"url": url, "event_types": list(event_types), **fields},
            )
        )

    def list(self, *, cursor: str | None = None, limit: int | None = None) -> R:
        return self._send(
            Call("GET", "/api/v1/webhooks", params=_params(cursor=cursor, limit=limit))
        )

    def get(self, endpoint_id: str) -> R:
        return self._send(Call("GET", f"/api/v1/webhooks/{endpoint_id}"))

    def update(self, endpoint_id: str, **fields: Any) -> R:
        return self._send(Call("PATCH", f"/api/v1/webhooks/{endpoint_id}", json=fields))

    def delete(self, endpoint_id: str) -> R:
        return self._send(Call("DELETE", f"/api/v1/webhooks/{endpoint_id}"))

    def enable(self, endpoint_id: str) -> R:
        return self._send(Call("POST", f"/api/v1/webhooks/{endpoint_id}/enable"))

    def disable(self, endpoint_id: str) -> R:
        return self._send(Call("POST", f"/api/v1/webhooks/{endpoint_id}/disable"))

    def rotate_secret(self, endpoint_id: str, *, overlap_s: int | None = None) -> R:
        return self._send(
            Call(
                "POST",
                f"/api/v1/webhooks/{endpoint_id}/secret/rotate",
                json=_body(overlap_s=overlap_s),
            )
        )

    def test(self, endpoint_id: str) -> R:
        return self._send(Call("POST", f"/api/v1/webhooks/{endpoint_id}/test"))

    def recover(self, endpoint_id: str, since: datetime) -> R:
        return self._send(
            Call("POST", f"/api/v1/webhooks/{endpoint_id}/recover", params=_params(since=since))
        )

    def stats(self, endpoint_id: str) -> R:
        return self._send(Call("GET", f"/api/v1/webhooks/{endpoint_id}/stats"))

    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> R:
        return self._send(
            Call(
                "GET",
                f"/api/v1/webhooks/{endpoint_id}/deliveries",
                params=_params(
                    status=status,
                    event_type=event_type,
                    since=since,
                    until=until,
                    cursor=cursor,
                    limit=limit,
                ),
            )
        )


class Deliveries(Generic[R]):
    def __init__(self, send: Callable[[Call], R]) -> None:
        self._send = send

    def get(self, delivery_id: str) -> R:
        return self._send(Call("GET", f"/api/v1/deliveries/{delivery_id}"))

    def retry(self, delivery_id: str) -> R:
        return self._send(Call("POST", f"/api/v1/deliveries/{delivery_id}/retry"))


class Keys(Generic[R]):
    def __init__(self, send: Callable[[Call], R]) -> None:
        self._send = send

    def create(self, name: str, scopes: Sequence[str], **fields: Any) -> R:
        return self._send(
            Call("POST", "/api/v1/keys", json={"name": name, "scopes": list(scopes), **fields})
        )

    def list(self, *, cursor: str | None = None, limit: int | None = None) -> R:
        return self._send(Call("GET", "/api/v1/keys", params=_params(cursor=cursor, limit=limit)))

    def revoke(self, key_id: str) -> R:
        return self._send(Call("POST", f"/api/v1/keys/{key_id}/revoke"))
