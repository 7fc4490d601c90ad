"""Response bodies of /api/v1/stats/operations and /api/v1/system/logs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from forecourt.observability.operations import Kind

WindowName = Literal["1m", "5m", "1h"]
LevelName = Literal["debug", "info", "warning", "error", "critical"]


class OperationWindow(BaseModel):
    """One operation over one window; durations in milliseconds (p50 and p95 are estimates
    within 5 %, never below the true value)."""

    count: int
    avg_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float


class OperationOut(BaseModel):
    name: str = Field(description="`METHOD /route/template`, or a background job's name.")
    kind: Kind
    windows: dict[str, OperationWindow | None] = Field(
        description="By window (1m, 5m, 1h); null: not called within it."
    )


class OperationsOut(BaseModel):
    windows: list[str]
    operations: list[OperationOut]


class SlowOperationOut(BaseModel):
    name: str
    kind: Kind
    duration_ms: float
    at: datetime = Field(description="When the call ended.")


class SlowOperationsOut(BaseModel):
    window: WindowName
    operations: list[SlowOperationOut]


class LogRecordOut(BaseModel):
    at: datetime
    level: LevelName
    logger: str
    message: str
    request_id: str | None
    exception: str | None = Field(description="The exception's type, when one was logged.")


class LogsOut(BaseModel):
    records: list[LogRecordOut] = Field(description="Oldest first.")


class LogStatsOut(BaseModel):
    window: Literal["1h"]
    by_level: dict[str, int]
    total: int
