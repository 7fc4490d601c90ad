"""Docker monitor: asks the Docker Engine API, over its unix socket, what is running."""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter
from typing import Any

import forecourt_plugin

DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_TIMEOUT_S = 5.0
# Reported even when zero, so a chart of each state has no gaps.
STATES = ("running", "paused", "restarting", "created", "exited", "dead")


class DockerUnavailable(Exception):
    """The engine cannot be reached or gave an unexpected answer."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP/1.1 over a unix socket (what the Docker engine listens on)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerClient:
    """The few read-only Engine API calls this plugin makes."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str) -> Any:
        connection = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        if response.status != 200:
            raise DockerUnavailable(f"GET {path} answered {response.status}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DockerUnavailable(f"GET {path} did not answer JSON") from exc


def collect(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point: container, image, network and volume counts, or docker.reachable 0."""
    config = forecourt_plugin.config()
    path = config.get("socket_path", DEFAULT_SOCKET)
    client = DockerClient(path, float(config.get("timeout_s", DEFAULT_TIMEOUT_S)))
    try:
        metrics = _measure(client, per_container=bool(config.get("per_container", False)))
    except DockerUnavailable as exc:
        forecourt_plugin.log("docker not reachable", socket=path, error=str(exc))
        return {"metrics": [{"name": "docker.reachable", "value": 0}]}
    return {"metrics": [{"name": "docker.reachable", "value": 1}, *metrics]}


def _measure(client: DockerClient, *, per_container: bool) -> list[dict[str, Any]]:
    containers = client.get("/containers/json?all=1")
    info = client.get("/info")
    networks = client.get("/networks")
    volumes = client.get("/volumes").get("Volumes") or []
    states = Counter(str(item.get("State", "unknown")) for item in containers)
    metrics: list[dict[str, Any]] = [
        {"name": "docker.containers", "value": states.get(state, 0), "labels": {"state": state}}
        for state in sorted(set(STATES) | set(states))
    ]
    unhealthy = sum("(unhealthy)" in str(item.get("Status", "")) for item in containers)
    metrics += [
        {"name": "docker.containers.total", "value": len(containers)},
        {"name": "docker.containers.unhealthy", "value": unhealthy},
        {"name": "docker.images", "value": int(info.get("Images", 0))},
        {"name": "docker.networks", "value": len(networks)},
        {"name": "docker.volumes", "value": len(volumes)},
    ]
    if per_container:
        for item in containers:
            names = item.get("Names") or [item.get("Id", "")[:12]]
            labels = {"name": str(names[0]).lstrip("/"), "image": str(item.get("Image", ""))}
            up = 1 if item.get("State") == "running" else 0
            metrics.append({"name": "docker.container.up", "value": up, "labels": labels})
    return metrics
