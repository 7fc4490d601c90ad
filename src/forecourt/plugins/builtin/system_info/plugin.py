"""System info collector: host CPU, memory, disk, load and network counters through psutil."""

from __future__ import annotations

import time
from typing import Any

import forecourt_plugin
import psutil

DEFAULT_DISK_PATHS = ["/"]
DEFAULT_CPU_SAMPLE_S = 0.5


def collect(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: one sample of every metric the manifest declares."""
    config = forecourt_plugin.config()
    metrics: list[dict[str, Any]] = []

    def add(name: str, value: float, **labels: str) -> None:
        item: dict[str, Any] = {"name": name, "value": float(value)}
        if labels:
            item["labels"] = labels
        metrics.append(item)

    add("system.cpu.percent", psutil.cpu_percent(config.get("cpu_sample_s", DEFAULT_CPU_SAMPLE_S)))
    add("system.cpu.count", psutil.cpu_count() or 0)
    memory = psutil.virtual_memory()
    add("system.memory.total_bytes", memory.total)
    add("system.memory.used_bytes", memory.used)
    add("system.memory.available_bytes", memory.available)
    add("system.memory.percent", memory.percent)
    swap = psutil.swap_memory()
    add("system.swap.used_bytes", swap.used)
    add("system.swap.percent", swap.percent)
    for path in config.get("disk_paths", DEFAULT_DISK_PATHS):
        try:
            disk = psutil.disk_usage(path)
        except OSError as exc:
            forecourt_plugin.log("disk not measured", path=path, error=str(exc))
            continue
        add("system.disk.total_bytes", disk.total, path=path)
        add("system.disk.used_bytes", disk.used, path=path)
        add("system.disk.free_bytes", disk.free, path=path)
        add("system.disk.percent", disk.percent, path=path)
    for window, value in zip(("1m", "5m", "15m"), psutil.getloadavg(), strict=True):
        add(f"system.load.{window}", value)
    add("system.uptime_s", max(0.0, time.time() - psutil.boot_time()))
    if config.get("per_interface", False):
        for interface, counters in sorted(psutil.net_io_counters(pernic=True).items()):
            _network(add, counters, interface=interface)
    else:
        totals = psutil.net_io_counters()
        if totals is not None:  # None on a host without network interfaces
            _network(add, totals)
    return {"metrics": metrics}


def _network(add: Any, counters: Any, **labels: str) -> None:
    add("system.network.bytes_sent", counters.bytes_sent, **labels)
    add("system.network.bytes_received", counters.bytes_recv, **labels)
    add("system.network.packets_sent", counters.packets_sent, **labels)
    add("system.network.packets_received", counters.packets_recv, **labels)
    add("system.network.errors_in", counters.errin, **labels)
    add("system.network.errors_out", counters.errout, **labels)
