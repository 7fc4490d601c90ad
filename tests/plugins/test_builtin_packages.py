"""Built-in plugins: their manifests validate, and each function keeps its type's contract.

The functions run here in-process against a fake ``forecourt_plugin`` host module; their runs
inside the sandbox are tested with the sandbox.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import unix_http
from forecourt.plugins.builtin import BUILTIN_DIR, builtin_package_dirs
from forecourt.plugins.configuration import validate_config
from forecourt.plugins.contracts import validate_output
from forecourt.plugins.manifest import PLUGIN_TYPES, load_manifest
from forecourt.plugins.package import PluginPackage, read_package

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
EXPECTED = {
    "csv_export",
    "docker_monitor",
    "jmespath_transform",
    "json_export",
    "pushgateway_export",
    "slack_alert",
    "statsd_export",
    "system_info",
}
# Values for the required settings that have no default.
REQUIRED_EXAMPLES = {
    "address": "127.0.0.1:8125",
    "url": "http://127.0.0.1:9091",
    "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
    "expression": "{name: name}",
}


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeHost:
    """What the sandbox's forecourt_plugin module provides, recording every call."""

    settings: dict[str, Any] = field(default_factory=dict)
    logs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[dict[str, Any]], Response] = lambda request: Response(200, body=b"ok")

    def module(self) -> types.ModuleType:
        module = types.ModuleType("forecourt_plugin")
        module.config = lambda: dict(self.settings)  # type: ignore[attr-defined]
        module.log = lambda message, **fields: self.logs.append((message, fields))  # type: ignore[attr-defined]
        module.metric = lambda name, value, labels=None: None  # type: ignore[attr-defined]
        module.emit = lambda type, data, subject=None: None  # type: ignore[attr-defined]
        module.fetch = self.fetch  # type: ignore[attr-defined]
        return module

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Any = None,
        body: Any = None,
        timeout: float = 10,
    ) -> Response:
        request = {"url": url, "method": method, "headers": headers or {}, "body": body}
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost()
    monkeypatch.setitem(sys.modules, "forecourt_plugin", fake.module())
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return fake


PACKAGES = {path.name: read_package(path) for path in builtin_package_dirs()}


def entry(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The entry point function of built-in ``name``, loaded from its file."""
    manifest = PACKAGES[name].manifest
    path = BUILTIN_DIR / name / f"{manifest.entry_target}.py"
    spec = importlib.util.spec_from_file_location(f"builtin_{name}_{id(path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[dict[str, Any]], dict[str, Any]] = getattr(module, manifest.entry_function)
    return function


def run(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run built-in ``name`` and check its output against its type's contract."""
    manifest = PACKAGES[name].manifest
    output = entry(name)(payload)
    metrics = manifest.permissions.metrics if manifest.type == "collector" else None
    assert validate_output(manifest.type, output, metrics=metrics) == []
    return output


def test_every_builtin_is_a_valid_package_with_a_unique_id() -> None:
    assert set(PACKAGES) == EXPECTED
    ids = [package.manifest.id for package in PACKAGES.values()]
    assert len(set(ids)) == len(ids)
    for package in PACKAGES.values():
        assert isinstance(package, PluginPackage)
        assert package.manifest.id.startswith("forecourt.")
        assert package.manifest.dependencies == ()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_builtin_accepts_its_own_defaults(name: str) -> None:
    schema = PACKAGES[name].manifest.config_schema
    config = {
        key: prop["default"] for key, prop in schema["properties"].items() if "default" in prop
    }
    config.update({key: REQUIRED_EXAMPLES[key] for key in schema.get("required", [])})
    validate_config(schema, config)


def test_the_slack_webhook_url_is_a_secret_limited_to_slack() -> None:
    manifest = PACKAGES["slack_alert"].manifest
    assert manifest.config_schema["properties"]["webhook_url"]["secret"] is True
    assert manifest.permissions.network == ("hooks.slack.com:443",)


def test_system_info_reports_host_metrics(host: FakeHost) -> None:
    host.settings = {"cpu_sample_s": 0.1, "disk_paths": ["/", "/no/such/mount"]}
    metrics = run("system_info", {"interval_s": 30})["metrics"]
    names = {item["name"] for item in metrics}
    assert {"system.cpu.percent", "system.memory.used_bytes", "system.load.1m"} <= names
    disk = [item for item in metrics if item["name"] == "system.disk.total_bytes"]
    assert [item["labels"] for item in disk] == [{"path": "/"}]
    assert disk[0]["value"] > 0
    assert host.logs[0][0] == "disk not measured"


def test_system_info_per_interface(host: FakeHost) -> None:
    host.settings = {"cpu_sample_s": 0.1, "per_interface": True}
    metrics = run("system_info", {})["metrics"]
    sent = [item for item in metrics if item["name"] == "system.network.bytes_sent"]
    assert sent and all("interface" in item["labels"] for item in sent)


CONTAINERS = [
    {
        "Id": "a" * 64,
        "Names": ["/web"],
        "Image": "nginx",
        "State": "running",
        "Status": "Up 2 hours (unhealthy)",
    },
    {
        "Id": "b" * 64,
        "Names": ["/db"],
        "Image": "postgres",
        "State": "running",
        "Status": "Up 2 hours",
    },
    {
        "Id": "c" * 64,
        "Names": ["/job"],
        "Image": "busybox",
        "State": "exited",
        "Status": "Exited (0)",
    },
]
ENGINE = {
    "/containers/json?all=1": CONTAINERS,
    "/info": {"Images": 7},
    "/networks": [{"Name": "bridge"}, {"Name": "host"}, {"Name": "none"}],
    "/volumes": {"Volumes": [{"Name": "data"}]},
}


@pytest.fixture
def engine() -> Iterator[tuple[str, dict[str, Any]]]:
    """A fake Docker engine answering on a unix socket; its routes can be changed."""
    routes: dict[str, Any] = dict(ENGINE)
    with unix_http.serve(routes) as path:
        yield path, routes


def by_name(metrics: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (m["name"], json.dumps(m.get("labels", {}), sort_keys=True)): m["value"] for m in metrics
    }


def test_docker_monitor_counts_what_the_engine_reports(
    host: FakeHost, engine: tuple[str, dict[str, Any]]
) -> None:
    host.settings = {"socket_path": engine[0], "per_container": True}
    values = by_name(run("docker_monitor", {})["metrics"])
    assert values[("docker.reachable", "{}")] == 1
    assert values[("docker.containers", '{"state": "running"}')] == 2
    assert values[("docker.containers", '{"state": "exited"}')] == 1
    assert values[("docker.containers", '{"state": "paused"}')] == 0
    assert values[("docker.containers.total", "{}")] == 3
    assert values[("docker.containers.unhealthy", "{}")] == 1
    assert values[("docker.images", "{}")] == 7
    assert values[("docker.networks", "{}")] == 3
    assert values[("docker.volumes", "{}")] == 1
    assert values[("docker.container.up", '{"image": "busybox", "name": "job"}')] == 0
    assert host.logs == []


def test_docker_monitor_without_an_engine_says_so(host: FakeHost, tmp_path: Path) -> None:
    host.settings = {"socket_path": str(tmp_path / "missing.sock")}
    assert run("docker_monitor", {}) == {"metrics": [{"name": "docker.reachable", "value": 0}]}
    assert host.logs[0][0] == "docker not reachable"
    assert "missing.sock" in host.logs[0][1]["socket"]


def test_docker_monitor_treats_an_engine_error_as_unreachable(
    host: FakeHost, engine: tuple[str, dict[str, Any]]
) -> None:
    del engine[1]["/info"]
    host.settings = {"socket_path": engine[0]}
    assert run("docker_monitor", {})["metrics"] == [{"name": "docker.reachable", "value": 0}]
    assert "500" in host.logs[0][1]["error"]


EVENT = {
    "specversion": "1.0",
    "id": "evt_1",
    "source": "/monitor",
    "type": "alert.disk_full",
    "subject": "host-1",
    "tenant": "default",
    "severity": "critical",
    "data": {"percent": 97},
}


def test_slack_alert_posts_the_event_to_the_webhook(host: FakeHost) -> None:
    host.settings = {"webhook_url": REQUIRED_EXAMPLES["webhook_url"]}
    assert run("slack_alert", {"event": EVENT})["sent"] is True
    [request] = host.requests
    assert (request["url"], request["method"]) == (REQUIRED_EXAMPLES["webhook_url"], "POST")
    text = json.loads(request["body"])["text"]
    assert text.startswith("*alert.disk_full* (critical) host-1")
    assert '"percent": 97' in text


def test_slack_alert_template_and_failures(host: FakeHost) -> None:
    host.settings = {
        "webhook_url": "https://hooks.slack.com/x",
        "template": "$tenant: $type ${nope}",
        "include_data": False,
    }
    host.answer = lambda request: Response(404, body=b"no_service")
    output = run("slack_alert", {"event": EVENT})
    assert output == {"sent": False, "detail": "Slack answered 404: no_service"}
    assert json.loads(host.requests[0]["body"]) == {"text": "default: alert.disk_full ${nope}"}

    def refuse(request: dict[str, Any]) -> Response:
        raise ConnectionError("refused")

    host.answer = refuse
    output = run("slack_alert", {"event": EVENT})
    assert output["sent"] is False and "refused" in output["detail"]


RECORDS = [
    {"name": "Ada", "tags": ["x"], "n": 1},
    {"name": "=cmd|' /C calc'!A0", "n": -2, "ok": True},
]


def test_csv_export_writes_every_column_and_defuses_formulas(host: FakeHost) -> None:
    output = run("csv_export", {"records": RECORDS, "format": "csv"})
    assert output["media_type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(output["content"])))
    assert rows == [
        ["name", "tags", "n", "ok"],
        ["Ada", '["x"]', "1", ""],
        ["'=cmd|' /C calc'!A0", "", "-2", "true"],
    ]


def test_csv_export_as_tsv_with_chosen_columns(host: FakeHost) -> None:
    host.settings = {"columns": ["n", "name"], "include_header": False, "escape_formulas": False}
    output = run("csv_export", {"records": RECORDS, "format": "tsv"})
    assert output["media_type"] == "text/tab-separated-values"
    assert output["content"] == "1\tAda\r\n-2\t=cmd|' /C calc'!A0\r\n"
    with pytest.raises(ValueError, match="csv or tsv"):
        entry("csv_export")({"records": [], "format": "xlsx"})


def test_json_export_round_trips(host: FakeHost) -> None:
    output = run("json_export", {"records": RECORDS, "format": "json"})
    assert output["media_type"] == "application/json"
    assert json.loads(output["content"]) == RECORDS
    ndjson = run("json_export", {"records": RECORDS, "format": "ndjson"})
    assert [json.loads(line) for line in ndjson["content"].splitlines()] == RECORDS


def test_jmespath_transform_each_and_all(host: FakeHost) -> None:
    records = [{"name": "a", "items": [{"price": 2}, {"price": 3}]}, {"name": "b", "items": []}]
    host.settings = {"expression": "{name: name, total: sum(items[].price)}"}
    assert run("jmespath_transform", {"records": records})["records"] == [
        {"name": "a", "total": 5},
        {"name": "b", "total": 0},
    ]
    host.settings = {"expression": "missing"}
    assert run("jmespath_transform", {"records": records})["records"] == []
    host.settings = {"expression": "[?name == 'a'].name", "mode": "all"}
    assert run("jmespath_transform", {"records": records})["records"] == [{"value": "a"}]


def test_every_manifest_example_in_the_guide_is_valid() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    manifests = [block for block in blocks if "entry_point" in block]
    kinds = {load_manifest(block.encode(), "forecourt-plugin.toml").type for block in manifests}
    assert kinds == set(PLUGIN_TYPES)


def test_every_python_example_in_the_guide_compiles() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= len(PLUGIN_TYPES)
    for block in blocks:
        compile(block, str(DOCS), "exec")
