"""``forecourt tenants create|list|suspend|resume``, run as the operator runs them: each option
also read from its FORECOURT_ variable, every mistake one ``error:`` line and no change."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from commands import Cli, assert_clean_error, clean_env
from forecourt.core import Forecourt
from forecourt.settings import Settings

KEY_RE = re.compile(r"^fck_live_[0-9A-Za-z]{36}$")
# Tests that run the command several times: each run starts Forecourt on the data folder.
SLOW_S = 600


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(clean_env(tmp_path / "data"), tmp_path)


@pytest.fixture
def booted(cli: Cli) -> None:
    """A first command has run: the owner key exists, so stderr later holds only errors."""
    cli.ok("tenants", "list")


def rows(cli: Cli) -> dict[str, list[str]]:
    """``tenants list``: slug -> [id, status, name]."""
    found = {}
    for line in cli.ok("tenants", "list").stdout.strip().splitlines():
        tenant_id, slug, status, name = line.split("\t")
        found[slug] = [tenant_id, status, name]
    return found


def status_with(cli: Cli, key: str) -> int:
    """What the API answers the key, from a Forecourt on the CLI's data folder."""

    async def go() -> int:
        fc = Forecourt(Settings(data_dir=cli.data_dir))
        await fc.start(run_workers=False)
        try:
            transport = httpx.ASGITransport(app=fc.asgi, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get(
                    "/api/v1/keys", headers={"Authorization": f"Bearer {key}"}
                )
                return response.status_code
        finally:
            await fc.stop()

    return asyncio.run(go())


def test_help_lists_the_tenant_commands(cli: Cli) -> None:
    out = cli.ok("tenants", "--help").stdout
    for command in ("create", "list", "suspend", "resume"):
        assert re.search(rf"\b{command}\b", out), command


def test_create_prints_the_first_admin_key_once(cli: Cli, booted: None) -> None:
    created = cli.ok("tenants", "create", "--slug", "acme", "--name", "Acme Inc")
    assert KEY_RE.match(created.stdout.strip()), created.stdout
    assert "created tenant" in created.stderr and "acme" in created.stderr
    listed = rows(cli)
    assert listed["acme"][1:] == ["active", "Acme Inc"]
    assert listed["default"][1] == "active"
    # The key belongs to the new tenant and works there.
    assert status_with(cli, created.stdout.strip()) == 200


def test_options_from_the_environment(cli: Cli) -> None:
    created = cli.ok(
        "tenants", "create", FORECOURT_TENANT_SLUG="envco", FORECOURT_TENANT_NAME="Env"
    )
    assert KEY_RE.match(created.stdout.strip())
    cli.ok("tenants", "suspend", FORECOURT_TENANT="envco")
    assert rows(cli)["envco"][1:] == ["suspended", "Env"]


@pytest.mark.timeout(SLOW_S)
def test_suspend_stops_the_tenants_keys_and_resume_restores_them(cli: Cli) -> None:
    key = cli.ok("tenants", "create", "--slug", "acme").stdout.strip()
    assert cli.ok("tenants", "suspend", "acme").stdout.strip() == "suspended acme"
    assert status_with(cli, key) == 403
    assert cli.ok("tenants", "resume", "acme").stdout.strip() == "resumed acme"
    assert status_with(cli, key) == 200


MISTAKES = [
    (("tenants", "create", "--slug", "Bad Slug"), "--slug"),
    (("tenants", "create", "--slug", "default"), "exists"),
    (("tenants", "suspend", "default"), "own tenant"),
    (("tenants", "suspend", "nobody"), "nobody"),
    (("tenants", "resume", "nobody"), "nobody"),
]


@pytest.mark.timeout(SLOW_S)
def test_mistakes_are_one_clear_line_and_change_nothing(cli: Cli, booted: None) -> None:
    before = rows(cli)
    for args, message in MISTAKES:
        line = assert_clean_error(cli(*args))
        assert message in line, (args, line)
    assert rows(cli) == before


def test_a_missing_slug_is_a_usage_error(cli: Cli, booted: None) -> None:
    result = cli("tenants", "create")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--slug" in result.stderr
