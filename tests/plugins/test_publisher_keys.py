"""Trusted publisher keys: the operator adds and removes them (``/api/v1/plugins/publisher-keys``
and ``forecourt plugins publisher-keys``); installs verify signatures with those and with the
configuration's keys, which are listed too and cannot be removed; every change is in each
tenant's audit log, by "operator" in the others; a bad request is a clear 4xx that changes
nothing."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_support import files, start, upload, write_folder, zip_bytes
from sqlalchemy import func, select

from commands import Cli, assert_clean_error, clean_env
from conftest import Harness, problem
from forecourt.audit.models import AuditEntry
from forecourt.plugins.integrity import fingerprint, generate_publisher_key, sign_directory
from forecourt.plugins.models import PublisherKey

KEYS = "/api/v1/plugins/publisher-keys"
CONFIG_PRIVATE, CONFIG_PUBLIC = generate_publisher_key()
STORED_PRIVATE, STORED_PUBLIC = generate_publisher_key()
STRANGER_PRIVATE, STRANGER_PUBLIC = generate_publisher_key()


@pytest.fixture
async def h(harness_factory: Any) -> Harness:
    return await start(
        harness_factory, plugin_allow_unsigned=False, plugin_trusted_keys=[CONFIG_PUBLIC]
    )


def signed(tmp_path: Path, private_pem: bytes, version: str) -> bytes:
    """A package of com.example.upper ``version``, signed with ``private_pem``."""
    folder = write_folder(tmp_path / f"upper-{version}", files(version=version))
    sign_directory(folder, private_pem)
    return zip_bytes({p.name: p.read_bytes() for p in folder.iterdir()})


async def listed(h: Harness) -> list[dict[str, Any]]:
    response = await h.client.get(KEYS, headers=h.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


async def add(h: Harness, public_key: str, name: str = "Example Ltd") -> httpx.Response:
    return await h.client.post(
        KEYS, json={"name": name, "public_key": public_key}, headers=h.auth()
    )


async def audit_count(h: Harness) -> int:
    async with h.fc.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


async def log(h: Harness, key: str | None, action: str) -> list[dict[str, Any]]:
    response = await h.client.get(
        "/api/v1/audit-log", params={"action": action}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_installs_verify_with_the_stored_and_the_configured_keys(
    h: Harness, tmp_path: Path
) -> None:
    [configured] = await listed(h)
    assert configured == {
        "id": None,
        "name": "FORECOURT_PLUGIN_TRUSTED_KEYS[0]",
        "public_key": CONFIG_PUBLIC,
        "fingerprint": fingerprint(CONFIG_PUBLIC),
        "source": "configuration",
        "created_at": None,
        "created_by": None,
    }
    # Not trusted yet: refused, nothing installed.
    refused = await upload(h, signed(tmp_path, STORED_PRIVATE, "1.0.0"))
    problem(refused, 422, "untrusted-package")

    made = await add(h, STORED_PUBLIC)
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["id"].startswith("pbk_")
    assert (key["name"], key["public_key"], key["source"], key["created_by"]) == (
        "Example Ltd",
        STORED_PUBLIC,
        "database",
        "operator",
    )
    assert key["fingerprint"] == fingerprint(STORED_PUBLIC) and key["created_at"]
    assert [k["fingerprint"] for k in await listed(h)] == [
        fingerprint(CONFIG_PUBLIC),
        fingerprint(STORED_PUBLIC),
    ]

    for private, version, publisher in (
        (STORED_PRIVATE, "1.0.0", STORED_PUBLIC),
        (CONFIG_PRIVATE, "1.1.0", CONFIG_PUBLIC),
    ):
        installed = await upload(h, signed(tmp_path, private, version))
        assert installed.status_code == 201, installed.text
        [details] = [v for v in installed.json()["version_details"] if v["version"] == version]
        assert details["trust"] == "signed"
        assert details["publisher"] == fingerprint(publisher)
    problem(await upload(h, signed(tmp_path, STRANGER_PRIVATE, "1.2.0")), 422, "untrusted-package")

    removed = await h.client.delete(f"{KEYS}/{key['id']}", headers=h.auth())
    assert removed.status_code == 204, removed.text
    assert [k["source"] for k in await listed(h)] == ["configuration"]
    # Its packages are refused from now on; the version it signed stays installed.
    problem(await upload(h, signed(tmp_path, STORED_PRIVATE, "1.3.0")), 422, "untrusted-package")
    got = await h.client.get("/api/v1/plugins/com.example.upper", headers=h.auth())
    assert got.json()["versions"] == ["1.0.0", "1.1.0"]


async def test_every_tenant_finds_the_change_in_its_log(h: Harness) -> None:
    beta = (await h.create_tenant("beta"))["admin_key"]
    made = await add(h, STORED_PUBLIC)
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    removed = await h.client.delete(f"{KEYS}/{key_id}", headers=h.auth())
    assert removed.status_code == 204
    for action, field in (
        ("plugin_publisher_key.added", "after"),
        ("plugin_publisher_key.removed", "before"),
    ):
        [theirs] = await log(h, beta, action)
        assert (theirs["actor_type"], theirs["actor_id"], theirs["ip"]) == ("operator", None, None)
        assert theirs["target_id"] == key_id
        assert theirs[field]["fingerprint"] == fingerprint(STORED_PUBLIC)
        [ours] = await log(h, None, action)
        assert ours["actor_type"] == "key" and ours["actor_id"]
    # A tenant's admin is no operator: it can neither read, add nor remove keys.
    problem(await h.client.get(KEYS, headers=h.auth(beta)), 403, "forbidden")
    problem(
        await h.client.post(
            KEYS, json={"name": "x", "public_key": STRANGER_PUBLIC}, headers=h.auth(beta)
        ),
        403,
        "forbidden",
    )


async def test_bad_requests_are_clear_and_change_nothing(h: Harness) -> None:
    made = await add(h, STORED_PUBLIC)
    assert made.status_code == 201
    before = await listed(h)
    entries = await audit_count(h)
    raw = base64.b64decode(STORED_PUBLIC.removeprefix("ed25519:"))
    for body, field in (
        ({"name": "x", "public_key": "ssh-ed25519 AAAA"}, "public_key"),
        ({"name": "x", "public_key": "ed25519:" + base64.b64encode(raw[:31]).decode()}, None),
        ({"name": "", "public_key": STRANGER_PUBLIC}, "name"),
        ({"name": "x" * 201, "public_key": STRANGER_PUBLIC}, "name"),
        ({"public_key": STRANGER_PUBLIC}, "name"),
        ({"name": "x", "public_key": STRANGER_PUBLIC, "trusted": True}, "trusted"),
    ):
        refused = await h.client.post(KEYS, json=body, headers=h.auth())
        found = problem(refused, 422, "invalid-input")
        assert field is None or field in {e["field"] for e in found["errors"]}, found
    # Trusted already: the stored key, the configured one.
    for public_key in (STORED_PUBLIC, CONFIG_PUBLIC):
        duplicate = problem(await add(h, public_key, "again"), 409, "conflict")
        assert duplicate["fingerprint"] == fingerprint(public_key)
    # Unknown ids, and the configuration's keys (which have none), are not removable.
    for key_id in ("pbk_unknown", fingerprint(CONFIG_PUBLIC).replace("/", "_")):
        problem(await h.client.delete(f"{KEYS}/{key_id}", headers=h.auth()), 404, "not-found")
    assert await listed(h) == before
    assert await audit_count(h) == entries
    async with h.fc.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(PublisherKey)) == 1


# The CLI runs on the embedded SQLite database of a data folder of its own.
def test_the_cli_adds_lists_and_removes_keys(tmp_path: Path) -> None:
    cli = Cli(clean_env(tmp_path / "data", plugin_trusted_keys=CONFIG_PUBLIC), tmp_path)
    cli.ok("plugins", "publisher-keys", "list")  # first start: the owner key goes to stderr
    added = cli.ok("plugins", "publisher-keys", "add", STORED_PUBLIC, "--name", "Example Ltd")
    assert fingerprint(STORED_PUBLIC) in added.stdout
    lines = [
        line.split("\t") for line in cli.ok("plugins", "publisher-keys", "list").stdout.splitlines()
    ]
    assert [(row[0] == "-", row[1], row[2], row[3]) for row in lines] == [
        (True, fingerprint(CONFIG_PUBLIC), "configuration", "FORECOURT_PLUGIN_TRUSTED_KEYS[0]"),
        (False, fingerprint(STORED_PUBLIC), "database", "Example Ltd"),
    ]
    key_id = lines[1][0]
    line = assert_clean_error(cli("plugins", "publisher-keys", "add", "not-a-key", "--name", "x"))
    assert "public_key" in line
    line = assert_clean_error(
        cli("plugins", "publisher-keys", "add", STORED_PUBLIC, "--name", "again")
    )
    assert "trusted already" in line
    cli.ok("plugins", "publisher-keys", "remove", key_id)
    assert_clean_error(cli("plugins", "publisher-keys", "remove", key_id))
    listing = cli.ok("plugins", "publisher-keys", "list").stdout.splitlines()
    assert [row.split("\t")[2] for row in listing] == ["configuration"]
