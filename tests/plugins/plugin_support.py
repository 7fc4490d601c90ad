"""Support for the plugin lifecycle tests: packages built on the fly, a started Forecourt that
accepts them, and a way to wait.

(A helper module rather than a ``conftest.py``: the suite imports its root conftest as
``conftest``, which a second one would shadow.)
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conftest import Harness
from forecourt.plugins.builtin import BUILTIN_DIR

if TYPE_CHECKING:
    from receivers import Receiver

T = TypeVar("T")

# Unsigned packages allowed, loopback receivers reachable, background work quick.
SETTINGS: dict[str, Any] = {
    "plugin_allow_unsigned": True,
    "webhook_allow_private": "127.0.0.0/8",
    "plugin_poll_interval_s": 0.05,
    "plugin_event_retry_base_s": 0.05,
}

# The built-in Slack alert's code (slack_like).
SLACK_CODE = (BUILTIN_DIR / "slack_alert" / "plugin.py").read_text()

# The smallest valid package: a transformation that returns its input.
MANIFEST = b"""
id = "com.example.upper"
name = "Upper"
version = "1.0.0"
type = "transformation"
entry_point = "plugin:run"
"""
CODE = b"def run(payload):\n    return payload\n"

UPPER = """
import forecourt_plugin


def run(payload):
    config = forecourt_plugin.config()
    print("upper-casing", len(payload["records"]), "records")
    suffix = config.get("suffix", "")
    return {
        "records": [
            {k: v.upper() + suffix if isinstance(v, str) else v for k, v in r.items()}
            for r in payload["records"]
        ]
    }


def secret(payload):
    return {"records": [{"token": forecourt_plugin.config().get("token")}]}


def boom(payload):
    raise ValueError("the plugin broke on purpose")


def bad_output(payload):
    return {"rows": []}
"""

UPPER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "suffix": {"type": "string", "maxLength": 5},
        "token": {"type": "string", "secret": True},
    },
}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def manifest(**fields: Any) -> str:
    """A ``forecourt-plugin.toml`` (a transformation ``com.example.upper`` 1.0.0 unless
    ``fields`` say otherwise; ``None`` leaves a field out)."""
    values: dict[str, Any] = {
        "id": "com.example.upper",
        "name": "Upper",
        "version": "1.0.0",
        "type": "transformation",
        "entry_point": "plugin:run",
        "category": "text",
        "config_schema": UPPER_SCHEMA,
    }
    values.update(fields)
    return "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None) + "\n"


def files(code: str = UPPER, **fields: Any) -> dict[str, str]:
    return {"forecourt-plugin.toml": manifest(**fields), "plugin.py": code}


def slack_like(receiver: Receiver) -> dict[str, str]:
    """The built-in Slack alert's code, allowed to reach the loopback receiver instead."""
    schema = {
        "type": "object",
        "required": ["webhook_url"],
        "properties": {
            "webhook_url": {"type": "string", "secret": True},
            "template": {"type": "string"},
        },
    }
    return files(
        SLACK_CODE,
        id="com.example.slack",
        type="alert",
        entry_point="plugin:notify",
        permissions={"network": [f"127.0.0.1:{receiver.port}"], "events": ["alert.*"]},
        config_schema=schema,
    )


def zip_bytes(entries: Mapping[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_folder(root: Path, entries: Mapping[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


async def start(harness_factory: Any, **settings: Any) -> Harness:
    """A started Forecourt with :data:`SETTINGS` (``settings`` override them)."""
    harness: Harness = await harness_factory(**{**SETTINGS, **settings})
    return harness


async def upload(harness: Harness, package: bytes, key: str | None = None) -> Any:
    return await harness.client.post(
        "/api/v1/plugins",
        files={"package": ("plugin.zip", package, "application/zip")},
        headers=harness.auth(key),
    )


async def install(harness: Harness, entries: Mapping[str, str | bytes]) -> dict[str, Any]:
    response = await upload(harness, zip_bytes(entries))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def instance(harness: Harness, **fields: Any) -> dict[str, Any]:
    body = {"plugin_id": "com.example.upper", "name": "upper", **fields}
    response = await harness.client.post(
        "/api/v1/plugin-instances", json=body, headers=harness.auth()
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def execute(harness: Harness, instance_id: str, input: Any) -> dict[str, Any]:
    response = await harness.client.post(
        f"/api/v1/plugin-instances/{instance_id}/execute",
        json={"input": input},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def events(harness: Harness, type: str) -> list[dict[str, Any]]:
    response = await harness.client.get(
        "/api/v1/events", params={"type": type}, headers=harness.auth()
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def executions(harness: Harness, plugin_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await harness.client.get(
        f"/api/v1/plugins/{plugin_id}/executions",
        params={"limit": 200, **params},
        headers=harness.auth(),
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_until(
    check: Callable[[], Awaitable[T]], timeout_s: float = 15.0, interval_s: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(interval_s)
