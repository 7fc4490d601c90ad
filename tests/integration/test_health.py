"""Health, readiness, documentation, metrics, and errors that never leak internals."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Harness
from forecourt.audit import service as audit_service

# Nothing listens on port 1 of the loopback: connections are refused at once.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


async def test_healthz(harness: Harness) -> None:
    response = await harness.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_dependency(harness: Harness, backend: str) -> None:
    response = await harness.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    expected = {"database": "ok", "redis": "ok"} if backend == "postgres" else {"database": "ok"}
    assert body["checks"] == expected


async def test_unreachable_redis_fails_readiness_but_not_requests(harness_factory: Any) -> None:
    h: Harness = await harness_factory(redis_url=DEAD_REDIS_URL)
    response = await h.client.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")

    # The rate limiter fails open: requests are served and still carry their limits.
    for _ in range(3):
        response = await h.client.get("/api/v1/keys", headers=h.auth())
        assert response.status_code == 200, response.text
        assert "ratelimit-policy" in response.headers
        assert int(response.headers["x-ratelimit-remaining"]) >= 0
    created = await h.client.post(
        "/api/v1/keys", json={"name": "during-outage", "scopes": ["keys:read"]}, headers=h.auth()
    )
    assert created.status_code == 201, created.text
    response = await h.client.get("/api/v1/keys", headers=h.auth(created.json()["key"]))
    assert response.status_code == 200


async def test_unreachable_redis_fails_closed_when_configured(harness_factory: Any) -> None:
    h: Harness = await harness_factory(redis_url=DEAD_REDIS_URL, rate_limit_fail_open=False)
    response = await h.client.get("/api/v1/keys", headers=h.auth())
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(":rate-limited")
    assert int(response.headers["retry-after"]) >= 1
    # Health endpoints are not rate limited.
    assert (await h.client.get("/healthz")).status_code == 200
    assert (await h.client.get("/readyz")).status_code == 503


async def test_docs_and_openapi_are_served(harness: Harness) -> None:
    docs = await harness.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text

    response = await harness.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/v1/keys", "/api/v1/audit-log", "/api/v1/users", "/api/v1/auth/login"):
        assert path in paths, sorted(paths)
    assert "post" in paths["/api/v1/keys"]
    assert set(paths["/api/v1/audit-log"]) == {"get"}


async def test_metrics_are_prometheus_text(harness: Harness) -> None:
    response = await harness.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# HELP forecourt_ratelimit_backend_errors_total" in text
    assert "# TYPE forecourt_ratelimit_backend_errors_total counter" in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_and_labels, _, value = line.rpartition(" ")
            assert name_and_labels
            float(value)


async def test_unexpected_errors_are_problems_without_internals(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom-secret")

    monkeypatch.setattr(audit_service, "list_entries", explode)
    response = await harness.client.get("/api/v1/audit-log", headers=harness.auth())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 500
    assert body["type"].endswith(":internal")
    assert "Traceback" not in response.text
    assert "boom-secret" not in response.text
    assert "RuntimeError" not in response.text
    assert ".py" not in response.text

    # The node keeps serving afterwards.
    monkeypatch.undo()
    response = await harness.client.get("/api/v1/audit-log", headers=harness.auth())
    assert response.status_code == 200


async def test_unknown_paths_are_problems(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/nothing-here", headers=harness.auth())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
