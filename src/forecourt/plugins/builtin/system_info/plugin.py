"""System info collector: host CPU, memory, disk, load and network counters through psutil.

In the sandbox (``permissions.host_metrics``) /proc has the host-wide statistics, but the worker
has a network namespace of its own, so /proc/net/dev there lists only its loopback interface:
the sandbox binds the host's counters, in the same format, at :data:`HOST_NET_DEV`. Its
filesystem is its own too: ``/`` is a small tmpfs and the host's paths exist only where they
are bound in (the Python library, say). A disk path on the sandbox's own root is not the
host's, so it is logged as not measured rather than reported. Without configured paths, the
filesystem Forecourt's Python is installed on is reported (labelled with that path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

import forecourt_plugin

DEFAULT_DISK_PATHS = [os.path.dirname(os.__file__)]  # the standard library: every sandbox shows it
DEFAULT_CPU_SAMPLE_S = 0.5
HOST_PROC = "/run/forecourt/host"  # the sandbox's HOST_NETWORK_DIR: net/dev only
HOST_NET_DEV = HOST_PROC + "/net/dev"


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
    own_root = _sandbox_root_device()
    for path in config.get("disk_paths") or DEFAULT_DISK_PATHS:
        try:
            if own_root is not None and os.stat(path).st_dev == own_root:
                raise OSError(f"{path} is on the sandbox's own root, not the host's filesystem")
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
    with _host_network():
        if config.get("per_interface", False):
            for interface, counters in sorted(psutil.net_io_counters(pernic=True).items()):
                _network(add, counters, interface=interface)
        else:
            totals = psutil.net_io_counters()
            if totals is not None:  # None on a host without network interfaces
                _network(add, totals)
    return {"metrics": metrics}


def _sandbox_root_device() -> int | None:
    """In the sandbox, the device of its own root filesystem; None elsewhere."""
    return os.stat("/").st_dev if os.path.exists(HOST_NET_DEV) else None


@contextmanager
def _host_network() -> Iterator[None]:
    """Within: psutil reads network counters from the host's file, when the sandbox gave it."""
    if not os.path.exists(HOST_NET_DEV):
        yield
        return
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = HOST_PROC  # read by psutil on each call, for net/dev here
    try:
        yield
    finally:
        psutil.PROCFS_PATH = saved


def _network(add: Any, counters: Any, **labels: str) -> None:
    add("system.network.bytes_sent", counters.bytes_sent, **labels)
    add("system.network.bytes_received", counters.bytes_recv, **labels)
    add("system.network.packets_sent", counters.packets_sent, **labels)
    add("system.network.packets_received", counters.packets_recv, **labels)
    add("system.network.errors_in", counters.errin, **labels)
    add("system.network.errors_out", counters.errout, **labels)
