"""/api/v1/plugins: installing packages under the installation's policies, listing and
inspecting them, statistics and the record of runs, uninstalling. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from plugin_support import (
    execute,
    executions,
    files,
    install,
    instance,
    start,
    upload,
    write_folder,
    zip_bytes,
)
from sqlalchemy import select

from conftest import Harness
from forecourt import principal
from forecourt.plugins.integrity import fingerprint, generate_publisher_key, sign_package
from forecourt.plugins.models import Plugin, PluginArchive
from forecourt.plugins.package import SIGNATURE_FILE, read_package

PRIVATE, PUBLIC = generate_publisher_key()
BUILTINS = {
    "forecourt.csv-export",
    "forecourt.docker-monitor",
    "forecourt.jmespath-transform",
    "forecourt.json-export",
    "forecourt.pushgateway-export",
    "forecourt.slack-alert",
    "forecourt.statsd-export",
    "forecourt.system-info",
}


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    return await start(harness_factory)


async def listed(harness: Harness, **params: Any) -> dict[str, dict[str, Any]]:
    response = await harness.client.get("/api/v1/plugins", params=params, headers=harness.auth())
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:forecourt:problem:{slug}"
    return body


async def test_install_a_zip_then_list_get_and_filter(h: Harness) -> None:
    package = zip_bytes(files())
    created = await install(h, files())
    assert created["id"] == "com.example.upper"
    assert created["trust"] == "unsigned" and created["signed"] is False
    assert created["enabled"] is True and created["instances"] == 0
    [version] = created["version_details"]
    assert version["sha256"] == hashlib.sha256(package).hexdigest()
    assert version["status"] == "ready" and version["development_dir"] is None
    assert created["manifest"]["config_schema"]["properties"]["token"]["secret"] is True
    unpacked = h.fc.settings.data_dir / "plugins" / "com.example.upper" / "1.0.0"
    assert (unpacked / "package" / "plugin.py").is_file()
    assert (unpacked / "site").is_dir()

    everything = await listed(h)
    assert set(everything) == BUILTINS | {"com.example.upper"}
    assert {i for i, p in everything.items() if p["trust"] == "builtin"} == BUILTINS
    transformations = await listed(h, type="transformation")
    assert set(transformations) == {"com.example.upper", "forecourt.jmespath-transform"}
    assert set(await listed(h, category="text")) == {"com.example.upper"}
    disabled = await listed(h, enabled="false")
    assert set(disabled) == BUILTINS - {"forecourt.system-info"}  # waiting for an instance
    assert disabled["forecourt.csv-export"]["disabled_reason"] == "not in use yet"

    page = await h.client.get("/api/v1/plugins", params={"limit": 3}, headers=h.auth())
    second = await h.client.get(
        "/api/v1/plugins",
        params={"limit": 6, "cursor": page.json()["next_cursor"]},
        headers=h.auth(),
    )
    walked = [p["id"] for p in page.json()["items"] + second.json()["items"]]
    assert walked == sorted(everything) and second.json()["next_cursor"] is None

    got = await h.client.get("/api/v1/plugins/com.example.upper", headers=h.auth())
    assert got.status_code == 200
    assert got.json()["versions"] == ["1.0.0"]
    assert got.json()["stats"]["windows"]["1h"]["executions"] == 0
    missing = await h.client.get("/api/v1/plugins/com.example.nothing", headers=h.auth())
    problem(missing, 404, "not-found")

    audit = await h.client.get(
        "/api/v1/audit-log", params={"action": "plugin.installed"}, headers=h.auth()
    )
    assert audit.json()["items"][0]["after"]["plugin_id"] == "com.example.upper"
    events = await h.client.get(
        "/api/v1/events", params={"type": "plugin.installed"}, headers=h.auth()
    )
    assert [e["data"]["plugin_id"] for e in events.json()["items"]] == ["com.example.upper"]


async def test_install_a_development_folder(h: Harness, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "upper", files())
    actor = principal.system(await _default_tenant(h))
    async with h.fc.sessionmaker() as session:
        row = await h.fc.plugins(session).install(actor, folder, dev=True)
    assert row.source_dir == str(folder.resolve())
    assert row.sha256 == read_package(folder).sha256
    got = await h.client.get("/api/v1/plugins/com.example.upper", headers=h.auth())
    assert got.json()["version_details"][0]["development_dir"] == str(folder.resolve())
    created = await instance(h)
    result = await execute(h, created["id"], {"records": [{"word": "dir"}]})
    assert result["status"] == "ok" and result["output"] == {"records": [{"word": "DIR"}]}


async def test_a_bad_manifest_is_422_naming_every_problem(h: Harness) -> None:
    bad = files(
        version="one",
        entry_point="missing:run",
        permissions={"network": ["https://example.com/x"]},
        dependencies=["requests"],
    )
    body = problem(await upload(h, zip_bytes(bad)), 422, "invalid-package")
    fields = {e["field"] for e in body["errors"]}
    assert {"version", "entry_point", "permissions.network[0]", "dependencies[0]"} <= fields
    assert "com.example.upper" not in await listed(h)
    assert not (h.fc.settings.data_dir / "plugins" / "com.example.upper").exists()


async def test_over_the_size_cap_is_413(harness_factory: Any) -> None:
    h = await start(harness_factory, plugin_max_package_bytes=4096)
    padded = {**files(), "data.bin": base64.b64encode(bytes(range(256)) * 40).decode()}
    package = zip_bytes(padded)
    assert len(package) > 4096
    problem(await upload(h, package), 413, "payload-too-large")
    assert "com.example.upper" not in await listed(h)


async def test_the_same_id_and_version_twice_is_409(h: Harness) -> None:
    await install(h, files())
    problem(await upload(h, zip_bytes(files(name="Again"))), 409, "conflict")
    assert (await listed(h))["com.example.upper"]["name"] == "Upper"


async def test_zip_slip_and_symlink_entries_are_refused(h: Harness, tmp_path: Path) -> None:
    package = zip_bytes({**files(), "../../escaped.py": "x = 1\n"})
    body = problem(await upload(h, package), 422, "invalid-package")
    assert body["errors"][0]["field"] == "../../escaped.py"
    linked = zipfile.ZipInfo("link.py")
    linked.create_system = 3
    linked.external_attr = (stat.S_IFLNK | 0o777) << 16
    stream = io.BytesIO(zip_bytes(files()))
    with zipfile.ZipFile(stream, "a") as archive:
        archive.writestr(linked, "/etc/shadow")
    body = problem(await upload(h, stream.getvalue()), 422, "invalid-package")
    assert body["errors"] == [{"field": "link.py", "message": "is a symbolic link"}]
    assert not any(tmp_path.parent.glob("**/escaped.py"))
    assert "com.example.upper" not in await listed(h)


async def test_signatures_under_the_installation_policy(harness_factory: Any) -> None:
    h = await start(harness_factory, plugin_allow_unsigned=False, plugin_trusted_keys=[PUBLIC])
    body = problem(await upload(h, zip_bytes(files())), 422, "untrusted-package")
    assert "unsigned" in body["detail"]

    signed = files()
    signature = sign_package(PRIVATE, read_package(zip_bytes(signed)))
    signed[SIGNATURE_FILE] = base64.b64encode(signature).decode()
    created = await install(h, signed)
    assert created["trust"] == "signed" and created["signed"] is True
    assert created["version_details"][0]["publisher"] == fingerprint(PUBLIC)

    other_private, _ = generate_publisher_key()
    foreign = files(version="2.0.0")
    foreign[SIGNATURE_FILE] = base64.b64encode(
        sign_package(other_private, read_package(zip_bytes(foreign)))
    ).decode()
    problem(await upload(h, zip_bytes(foreign)), 422, "untrusted-package")


async def test_types_sandbox_scopes_and_openapi(h: Harness) -> None:
    types = await h.client.get("/api/v1/plugins/types", headers=h.auth())
    by_name = {t["name"]: t for t in types.json()}
    assert set(by_name) == {
        "transformation", "export", "datasource", "visualization", "alert", "collector", "hook",
    }  # fmt: skip
    assert by_name["alert"]["trigger"] == "event"
    assert by_name["transformation"]["input_schema"]["required"] == ["records"]

    sandbox = await h.client.get("/api/v1/plugins/sandbox", headers=h.auth())
    assert sandbox.status_code == 200
    report = sandbox.json()
    assert report["require"] == "available" and report["runs_plugins"] is True
    assert report["protections"]["user"]["available"] is True  # these tests run as root
    assert report["complete"] == (report["missing"] == [])

    reader = await h.create_key(["plugins:read"])
    refused = await upload(h, zip_bytes(files()), key=reader["key"])
    problem(refused, 403, "forbidden")
    await install(h, files())
    writer = await h.create_key(["plugins:write"])
    made = await h.client.post(
        "/api/v1/plugin-instances",
        json={"plugin_id": "com.example.upper", "name": "w"},
        headers=h.auth(writer["key"]),
    )
    assert made.status_code == 201
    run = await h.client.post(
        f"/api/v1/plugin-instances/{made.json()['id']}/execute",
        json={"input": {"records": []}},
        headers=h.auth(writer["key"]),
    )
    problem(run, 403, "forbidden")

    spec = (await h.client.get("/openapi.json")).json()
    assert "/api/v1/plugins/{plugin_id}/executions" in spec["paths"]
    assert "/api/v1/plugin-instances/{instance_id}/execute" in spec["paths"]
    upload_body = spec["paths"]["/api/v1/plugins"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body


async def test_stats_and_the_executions_listing(h: Harness) -> None:
    await install(h, files())
    await install(h, files(version="1.1.0", entry_point="plugin:boom"))  # a broken release
    good = await instance(h, version="1.0.0")
    broken = await instance(h, name="boom", version="1.1.0")
    for word in ("a", "b", "c"):
        assert (await execute(h, good["id"], {"records": [{"w": word}]}))["status"] == "ok"
    assert (await execute(h, broken["id"], {"records": []}))["status"] == "error"

    stats = await h.client.get("/api/v1/plugins/com.example.upper/stats", headers=h.auth())
    hour = stats.json()["windows"]["1h"]
    assert hour["executions"] == 4 and hour["ok"] == 3 and hour["failed"] == 1
    assert hour["error_rate"] == 0.25 and hour["by_status"]["error"] == 1
    assert 0 < hour["p50_ms"] <= hour["p95_ms"]
    assert stats.json()["windows"]["7d"]["executions"] == 4

    everything = await executions(h, "com.example.upper")
    assert len(everything) == 4 and all(e["trigger"] == "api" for e in everything)
    assert [e["status"] for e in await executions(h, "com.example.upper", status="error")] == [
        "error"
    ]
    only_good = await executions(h, "com.example.upper", instance_id=good["id"])
    assert len(only_good) == 3
    first = await h.client.get(
        "/api/v1/plugins/com.example.upper/executions", params={"limit": 3}, headers=h.auth()
    )
    rest = await h.client.get(
        "/api/v1/plugins/com.example.upper/executions",
        params={"limit": 3, "cursor": first.json()["next_cursor"]},
        headers=h.auth(),
    )
    walked = [e["id"] for e in first.json()["items"] + rest.json()["items"]]
    assert walked == [e["id"] for e in everything]
    bad_status = await h.client.get(
        "/api/v1/plugins/com.example.upper/executions", params={"status": "x"}, headers=h.auth()
    )
    assert problem(bad_status, 422, "invalid-input")["errors"][0]["field"] == "status"


async def test_uninstall(h: Harness) -> None:
    await install(h, files())
    await install(h, files(version="1.1.0"))
    used = await instance(h, version="1.0.0")
    refused = await h.client.delete("/api/v1/plugins/com.example.upper", headers=h.auth())
    assert problem(refused, 409, "conflict")["instances"] == 1

    one = await h.client.delete(
        "/api/v1/plugins/com.example.upper", params={"version": "1.1.0"}, headers=h.auth()
    )
    assert one.status_code == 204
    root = h.fc.settings.data_dir / "plugins" / "com.example.upper"
    assert not (root / "1.1.0").exists() and (root / "1.0.0").exists()

    forced = await h.client.delete(
        "/api/v1/plugins/com.example.upper", params={"force": "true"}, headers=h.auth()
    )
    assert forced.status_code == 204
    assert not root.exists()
    gone = await h.client.get(f"/api/v1/plugin-instances/{used['id']}", headers=h.auth())
    problem(gone, 404, "not-found")
    async with h.fc.sessionmaker() as session:
        assert (await session.scalars(select(PluginArchive))).all() != []  # built-ins' only
        rows = await session.scalars(select(Plugin).where(Plugin.plugin_id == "com.example.upper"))
        assert rows.all() == []
    uninstalled = await h.client.get(
        "/api/v1/events", params={"type": "plugin.uninstalled"}, headers=h.auth()
    )
    assert sorted(e["data"]["version"] for e in uninstalled.json()["items"]) == ["1.0.0", "1.1.0"]
    builtin = await h.client.delete("/api/v1/plugins/forecourt.csv-export", headers=h.auth())
    problem(builtin, 409, "conflict")


async def _default_tenant(h: Harness) -> str:
    me = await h.client.get("/api/v1/auth/me", headers=h.auth())
    tenant: str = me.json()["tenant_id"]
    return tenant
