"""Bodies of the overview routes: the tenant summary, plugin health and categories."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PluginCounts(BaseModel):
    installed: int = Field(description="Plugins your tenant may use.")
    enabled: int = Field(description="Of those, enabled for your tenant.")


class InstanceCounts(BaseModel):
    total: int
    enabled: int


class MetricCounts(BaseModel):
    series: int
    points: int = Field(description="Raw points stored (rollups not counted).")


class SummaryOut(BaseModel):
    generated_at: datetime = Field(description="When these figures were read.")
    plugins: PluginCounts
    instances: InstanceCounts
    metrics: MetricCounts
    executions_last_hour: dict[str, int] = Field(
        description="Plugin runs started in the last hour, by status, and their total."
    )
    events_last_hour: int = Field(description="Events published in the last hour.")
    deliveries: dict[str, int] = Field(description="Webhook deliveries by status, and total.")
    open_alerts: dict[str, int] = Field(
        description="Unresolved (open or acknowledged) alerts by severity, and their total."
    )


class InstanceHealth(BaseModel):
    instance_id: str
    name: str
    enabled: bool
    last_status: str | None = Field(description="The status of the latest run.")
    last_run_at: datetime | None
    last_success_at: datetime | None
    consecutive_errors: int = Field(description="Runs that failed since the last success.")
    errors_last_hour: int = Field(description="Runs that failed in the last hour.")
    next_run_at: datetime | None = Field(description="The next scheduled run, if any.")


class PluginStatusOut(BaseModel):
    plugin_id: str
    instances: list[InstanceHealth] = Field(description="Your tenant's instances, by name.")


class CategoryOut(BaseModel):
    category: str | None = Field(description="None: plugins without a category.")
    plugins: int


class CategoriesOut(BaseModel):
    items: list[CategoryOut]
