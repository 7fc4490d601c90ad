"""The ``forecourt`` command, run as a subprocess the way an operator runs it.

Each test has a data folder of its own; PostgreSQL tests create (and drop) a database of
their own, empty, so they see what a first deployment sees.
"""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commands import Cli, assert_clean_error, clean_env

KEY_RE = re.compile(r"^fck_live_[0-9A-Za-z]{36}$")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    # cwd is the test's folder so that no .env file of the checkout is picked up.
    return Cli(clean_env(tmp_path / "data"), tmp_path)


@pytest.fixture
def booted(cli: Cli) -> None:
    """A first command has run: the owner key exists, so stderr later holds only errors."""
    cli.ok("keys", "list")


def key_rows(listing: str) -> dict[str, list[str]]:
    """``keys list`` output: name -> [id, prefix, status, scopes]."""
    rows: dict[str, list[str]] = {}
    for line in listing.strip().splitlines():
        key_id, prefix, status, scopes, name = line.split("\t")
        rows[name] = [key_id, prefix, status, scopes]
    return rows


# -- help ------------------------------------------------------------------------------


def test_no_arguments_prints_help(cli: Cli) -> None:
    result = cli()
    assert result.returncode in (0, 2)
    assert "Usage:" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands(cli: Cli) -> None:
    result = cli.ok("--help")
    for command in ("serve", "migrate", "keys", "users"):
        assert re.search(rf"\b{command}\b", result.stdout), command


# -- keys create -----------------------------------------------------------------------


def test_keys_create_prints_the_key_and_the_owner_key_once(cli: Cli) -> None:
    first = cli.ok("keys", "create", "--name", "ci", "--scopes", "events:publish,webhooks:read")
    lines = first.stdout.splitlines()
    assert len(lines) == 1
    assert KEY_RE.match(lines[0]), lines[0]

    owner_file = cli.data_dir / "owner-key"
    assert stat.S_IMODE(owner_file.stat().st_mode) == 0o600
    owner = owner_file.read_text().strip()
    assert KEY_RE.match(owner)
    assert owner != lines[0]
    # stderr is a pipe, not a terminal: it names the key file instead of showing the key.
    assert owner not in first.stderr
    assert str(owner_file) in first.stderr
    assert owner not in first.stdout

    second = cli.ok("keys", "create", "--name", "ci2", "--scopes", "events:publish")
    assert KEY_RE.match(second.stdout.strip())
    assert second.stdout.strip() != lines[0]
    assert owner not in second.stderr
    assert "owner API key" not in second.stderr
    assert owner_file.read_text().strip() == owner


@pytest.mark.parametrize(
    "expires",
    ["30d", "12h", (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0).isoformat()],
)
def test_keys_create_accepts_durations_and_iso_times(cli: Cli, expires: str) -> None:
    result = cli.ok(
        "keys", "create", "--name", "exp", "--scopes", "events:publish", "--expires", expires
    )
    assert KEY_RE.match(result.stdout.strip())
    assert key_rows(cli.ok("keys", "list").stdout)["exp"][2] == "active"


@pytest.mark.parametrize("expires", ["yesterday", "2001-01-01T00:00:00"])
@pytest.mark.usefixtures("booted")
def test_keys_create_rejects_bad_or_past_expiry(cli: Cli, expires: str) -> None:
    line = assert_clean_error(
        cli("keys", "create", "--name", "x", "--scopes", "events:publish", "--expires", expires)
    )
    assert "expires" in line


@pytest.mark.usefixtures("booted")
def test_keys_create_rejects_an_unknown_scope(cli: Cli) -> None:
    line = assert_clean_error(cli("keys", "create", "--name", "x", "--scopes", "events:fly"))
    assert "scopes" in line
    assert "events:fly" in line


@pytest.mark.usefixtures("booted")
def test_keys_create_rejects_empty_scopes(cli: Cli) -> None:
    line = assert_clean_error(cli("keys", "create", "--name", "x", "--scopes", ""))
    assert "scopes" in line


@pytest.mark.usefixtures("booted")
def test_rejected_create_changes_nothing(cli: Cli) -> None:
    cli.ok("keys", "create", "--name", "good", "--scopes", "events:publish")
    assert_clean_error(cli("keys", "create", "--name", "bad", "--scopes", "nope"))
    assert set(key_rows(cli.ok("keys", "list").stdout)) == {"owner", "good"}


# -- keys list / revoke ----------------------------------------------------------------


def test_keys_list_shows_id_prefix_and_status(cli: Cli) -> None:
    raw = cli.ok(
        "keys", "create", "--name", "ci", "--scopes", "events:publish,webhooks:read"
    ).stdout.strip()
    rows = key_rows(cli.ok("keys", "list").stdout)
    assert set(rows) == {"owner", "ci"}
    key_id, prefix, status, scopes = rows["ci"]
    assert key_id.startswith("key_")
    assert raw.startswith(prefix.rstrip("…"))
    assert raw not in cli.ok("keys", "list").stdout  # only the prefix, never the secret
    assert status == "active"
    assert scopes == "events:publish,webhooks:read"
    assert rows["owner"][2:] == ["active", "admin,system:admin"]  # the operator


def test_keys_revoke_then_list_shows_revoked(cli: Cli) -> None:
    cli.ok("keys", "create", "--name", "ci", "--scopes", "events:publish")
    key_id = key_rows(cli.ok("keys", "list").stdout)["ci"][0]
    result = cli.ok("keys", "revoke", key_id)
    assert key_id in result.stdout
    rows = key_rows(cli.ok("keys", "list").stdout)
    assert rows["ci"][2] == "revoked"
    assert rows["owner"][2] == "active"


@pytest.mark.usefixtures("booted")
def test_keys_revoke_unknown_id(cli: Cli) -> None:
    cli.ok("keys", "list")
    line = assert_clean_error(cli("keys", "revoke", "key_doesnotexist"))
    assert "key_doesnotexist" in line


@pytest.mark.usefixtures("booted")
def test_keys_in_another_tenant(cli: Cli) -> None:
    cli.ok("keys", "create", "--name", "home", "--scopes", "events:publish")
    cli.ok("keys", "create", "--name", "away", "--scopes", "events:publish", "--tenant", "acme")
    acme = key_rows(cli.ok("keys", "list", "--tenant", "acme").stdout)
    assert set(acme) == {"away"}
    default = key_rows(cli.ok("keys", "list").stdout)
    assert set(default) == {"owner", "home"}
    # A key of one tenant cannot be revoked through another.
    assert_clean_error(cli("keys", "revoke", acme["away"][0]))
    assert key_rows(cli.ok("keys", "list", "--tenant", "acme").stdout)["away"][2] == "active"


def test_tenant_from_the_environment(cli: Cli) -> None:
    cli.ok("keys", "create", "--name", "env", "--scopes", "events:publish", FORECOURT_TENANT="acme")
    assert set(key_rows(cli.ok("keys", "list", "--tenant", "acme").stdout)) == {"env"}


# -- users -----------------------------------------------------------------------------


def test_users_create_with_password_on_stdin(cli: Cli) -> None:
    result = cli.ok(
        "users",
        "create",
        "--email",
        "a@example.com",
        "--role",
        "admin",
        "--password-stdin",
        stdin="correct horse battery staple\n",
    )
    assert "a@example.com" in result.stdout
    assert "correct horse" not in result.stdout + result.stderr


@pytest.mark.usefixtures("booted")
def test_users_create_rejects_a_short_password(cli: Cli) -> None:
    line = assert_clean_error(
        cli(
            "users",
            "create",
            "--email",
            "a@example.com",
            "--role",
            "admin",
            "--password-stdin",
            stdin="short\n",
        )
    )
    assert "password" in line


@pytest.mark.usefixtures("booted")
def test_users_create_rejects_an_unknown_role(cli: Cli) -> None:
    line = assert_clean_error(
        cli(
            "users",
            "create",
            "--email",
            "a@example.com",
            "--role",
            "emperor",
            "--password-stdin",
            stdin="correct horse battery staple\n",
        )
    )
    assert "role" in line


# -- migrate ---------------------------------------------------------------------------


def test_migrate_on_sqlite(cli: Cli) -> None:
    cli.ok("migrate")
    assert (cli.data_dir / "forecourt.db").exists()
    cli.ok("migrate")  # idempotent
    assert KEY_RE.match(
        cli.ok("keys", "create", "--name", "x", "--scopes", "events:publish").stdout.strip()
    )


@pytest.mark.postgres
def test_migrate_then_create_on_postgres(cli: Cli, empty_pg_database: str) -> None:
    env = {"FORECOURT_DATABASE_URL": empty_pg_database}
    result = cli.ok("migrate", **env)
    assert "Traceback" not in result.stderr
    created = cli.ok("keys", "create", "--name", "pg", "--scopes", "events:publish", **env)
    assert KEY_RE.match(created.stdout.strip())
    owner_file = cli.data_dir / "owner-key"
    # stderr is a pipe, not a terminal: it names the key file instead of showing the key.
    assert owner_file.read_text().strip() not in created.stderr
    assert created.stderr.count(str(owner_file)) == 1
    rows = key_rows(cli.ok("keys", "list", **env).stdout)
    assert set(rows) == {"owner", "pg"}
    # Nothing went to SQLite on the side.
    assert not (cli.data_dir / "forecourt.db").exists()


@pytest.mark.postgres
def test_unmigrated_postgres_says_to_migrate(cli: Cli, empty_pg_database: str) -> None:
    result = cli(
        "keys",
        "create",
        "--name",
        "pg",
        "--scopes",
        "events:publish",
        FORECOURT_DATABASE_URL=empty_pg_database,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "forecourt migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cli.data_dir / "owner-key").exists()
