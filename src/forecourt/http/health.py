"""/healthz (the process is up), /readyz (its dependencies answer); /metrics is in
forecourt/observability/routes.py."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from forecourt.http.deps import ForecourtDep
from forecourt.http.guard import GuardedRoute

router = APIRouter(route_class=GuardedRoute, tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(fc: ForecourtDep) -> JSONResponse:
    checks = await fc.ready()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
