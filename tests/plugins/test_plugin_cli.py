"""``forecourt plugins ...`` and ``forecourt doctor``, run as subprocesses the way an operator
runs them, on the embedded SQLite database of a data folder of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_support import files, write_folder, zip_bytes

from commands import Cli, assert_clean_error, clean_env
from forecourt import principal
from forecourt.core import Forecourt
from forecourt.plugins.schemas import InstanceCreate
from forecourt.settings import Settings
from forecourt.tenants import service as tenants


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(clean_env(tmp_path / "data", plugin_allow_unsigned="true"), tmp_path)


@pytest.fixture
def booted(cli: Cli) -> Cli:
    """A first command has run: the owner key went to stderr then, so later it holds errors only."""
    cli.ok("plugins", "list")
    return cli


def rows(listing: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in listing.strip().splitlines():
        plugin_id, *rest = line.split("\t")
        found[plugin_id] = rest
    return found


async def make_instance(data_dir: Path, plugin_id: str, name: str) -> None:
    """An instance, made through the service on the same data folder."""
    fc = Forecourt(Settings(data_dir=data_dir, plugin_allow_unsigned=True))
    await fc.start(run_workers=False)
    try:
        async with fc.sessionmaker() as session:
            tenant = await tenants.get_by_slug(session, "default")
            await session.commit()
            await fc.plugin_instances(session).create(
                principal.system(tenant.id), InstanceCreate(plugin_id=plugin_id, name=name)
            )
    finally:
        await fc.stop()


def test_install_names_the_host_access_it_grants(cli: Cli, tmp_path: Path) -> None:
    permissions = {"host_metrics": True, "unix_sockets": ["/var/run/docker.sock"]}
    package = tmp_path / "host.zip"
    package.write_bytes(zip_bytes(files(id="com.example.host", permissions=permissions)))
    lines = cli.ok("plugins", "install", str(package)).stdout.strip().splitlines()
    assert lines[1:] == [
        "  may read the host's system-wide statistics (host_metrics)",
        "  may connect to the unix socket /var/run/docker.sock (unix_sockets)",
    ]


async def test_install_list_enable_disable_and_run(booted: Cli, tmp_path: Path) -> None:
    cli = booted
    package = tmp_path / "upper.zip"
    package.write_bytes(zip_bytes(files()))
    installed = cli.ok("plugins", "install", str(package))
    assert (
        installed.stdout.strip() == "installed com.example.upper 1.0.0 (transformation, unsigned)"
    )
    folder = write_folder(tmp_path / "lower", files(id="com.example.lower", name="Lower"))
    from_dir = cli.ok("plugins", "install", str(folder))
    assert from_dir.stdout.strip().endswith(f"watching {folder.resolve()})")

    listed = rows(cli.ok("plugins", "list").stdout)
    assert listed["com.example.upper"] == [
        "1.0.0",
        "transformation",
        "enabled",
        "unsigned",
        "Upper",
    ]
    assert listed["forecourt.csv-export"][2:4] == ["disabled", "builtin"]
    assert len(listed) == 10

    assert cli.ok("plugins", "disable", "com.example.upper").stdout.strip() == (
        "disabled com.example.upper"
    )
    await make_instance(cli.data_dir, "com.example.upper", "shout")
    refused = assert_clean_error(cli("plugins", "run", "shout", "--input", '{"records": []}'))
    assert "disabled" in refused
    cli.ok("plugins", "enable", "com.example.upper")

    ran = cli.ok("plugins", "run", "shout", "--input", '{"records": [{"w": "cli"}]}')
    execution = json.loads(ran.stdout)
    assert execution["status"] == "ok" and execution["trigger"] == "api"
    assert execution["output"] == {"records": [{"w": "CLI"}]}
    assert "upper-casing 1 records" in execution["logs"]

    bad_input = assert_clean_error(cli("plugins", "run", "shout", "--input", '{"rows": []}'))
    assert "input.records" in bad_input
    assert "not valid JSON" in assert_clean_error(cli("plugins", "run", "shout", "--input", "{"))
    assert "No plugin instance" in assert_clean_error(cli("plugins", "run", "nobody"))


def test_install_refusals_are_one_clear_line(booted: Cli, tmp_path: Path) -> None:
    cli = booted
    package = tmp_path / "upper.zip"
    package.write_bytes(zip_bytes(files()))
    unsigned = assert_clean_error(
        cli("plugins", "install", str(package), FORECOURT_PLUGIN_ALLOW_UNSIGNED="false")
    )
    assert "unsigned" in unsigned
    broken = tmp_path / "broken.zip"
    broken.write_bytes(zip_bytes(files(version="one", entry_point="nothing:here")))
    line = assert_clean_error(cli("plugins", "install", str(broken)))
    assert "version: must be a semantic version" in line and "entry_point:" in line
    assert "no such file" in assert_clean_error(
        cli("plugins", "install", str(tmp_path / "none.zip"))
    )
    cli.ok("plugins", "install", str(package))
    assert "already installed" in assert_clean_error(cli("plugins", "install", str(package)))


def test_doctor_prints_the_sandbox_report(cli: Cli) -> None:
    result = cli.ok("doctor")
    lines = result.stdout.splitlines()
    assert lines[0] == "plugin sandbox (FORECOURT_PLUGIN_SANDBOX_REQUIRE=available):"
    for name in ("user", "no_new_privs", "rlimits", "network_namespace", "seccomp"):
        assert any(line.strip().startswith(f"ok      {name}:") for line in lines), name
    assert lines[-1] == "every required protection is available"
    refused = cli("doctor", FORECOURT_PLUGIN_SANDBOX_REQUIRE="all")
    assert refused.returncode == 0  # every protection is there on this host
