"""The data folder is the owner's alone: 0700 (as root 0710, the sandbox's group may only
traverse it), and every file Forecourt creates in it (the SQLite database, its -wal and -shm,
secret-key, owner-key) 0600, whatever the umask; the owner key is shown on a terminal only."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Harness
from forecourt.bootstrap import announce_owner_key
from forecourt.settings import ensure_private_dir, write_private

SECRET_FILES = {"secret-key", "owner-key"}
SQLITE_FILES = {"forecourt.db", "forecourt.db-wal", "forecourt.db-shm"}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: anything created without an explicit mode would be world-readable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private_folder(path: Path, sandbox_gid: int) -> None:
    if os.geteuid() == 0:
        assert mode(path) == 0o710, oct(mode(path))
        assert path.stat().st_gid == sandbox_gid
    else:
        assert mode(path) == 0o700, oct(mode(path))


async def test_every_file_of_the_data_folder_is_private(
    harness_factory: Any, backend: str, tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    h: Harness = await harness_factory(data_dir=data_dir, secret_key=None)
    # Some writes: a key, an event, a user (the database's WAL grows).
    key = await h.create_key(["events:publish"])
    published = await h.client.post(
        "/api/v1/events",
        json={"type": "dashboard.created", "data": {"n": 1}},
        headers=h.auth(key["key"]),
    )
    assert published.status_code in (201, 202), published.text
    user = await h.client.post(
        "/api/v1/users",
        json={"email": "modes@example.com", "password": "correct horse battery"},
        headers=h.auth(),
    )
    assert user.status_code == 201, user.text

    assert_private_folder(data_dir, h.fc.settings.plugin_sandbox_gid)
    files = {p.name for p in data_dir.iterdir() if p.is_file()}
    expected = SECRET_FILES | (SQLITE_FILES if backend == "sqlite" else set())
    assert expected <= files, files
    for name in sorted(files):
        assert mode(data_dir / name) == 0o600, (name, oct(mode(data_dir / name)))
    # No temporary file of an atomic write is left behind.
    assert not [name for name in files if name.endswith(".tmp")]


async def test_an_existing_open_data_folder_is_tightened(
    harness_factory: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "open"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    h: Harness = await harness_factory(data_dir=data_dir)
    assert_private_folder(data_dir, h.fc.settings.plugin_sandbox_gid)


async def test_an_old_database_file_is_made_private(tmp_path: Path) -> None:
    # Only SQLite keeps its database in a file of its own.
    from forecourt.db.engine import create_engine

    database = tmp_path / "old.db"
    database.touch()
    os.chmod(database, 0o644)
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.commit()
        for name in ("old.db", "old.db-wal", "old.db-shm"):
            path = tmp_path / name
            if path.exists():
                assert mode(path) == 0o600, (name, oct(mode(path)))
    finally:
        await engine.dispose()


def test_private_writes_ignore_the_umask(tmp_path: Path, open_umask: None) -> None:
    folder = ensure_private_dir(tmp_path / "a" / "b")
    assert mode(folder) == 0o700
    assert mode(tmp_path / "a") == 0o700
    target = folder / "secret"
    write_private(target, "one\n")
    assert mode(target) == 0o600
    os.chmod(target, 0o644)
    write_private(target, "two\n")
    assert mode(target) == 0o600
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in folder.iterdir()) == ["secret"]


class Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_the_owner_key_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    path = tmp_path / "owner-key"
    raw = "fck_live_" + "x" * 36
    terminal = Stream(terminal=True)
    announce_owner_key(path, raw, terminal)
    assert raw in terminal.getvalue()
    assert str(path) in terminal.getvalue()

    log = Stream(terminal=False)
    announce_owner_key(path, raw, log)
    assert raw not in log.getvalue()
    assert raw[-8:] not in log.getvalue()
    assert f"saved it to {path}" in log.getvalue()
