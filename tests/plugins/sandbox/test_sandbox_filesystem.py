"""What plugin code can see and change on disk: its package read-only, a private directory."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sandbox_support import CORPUS, sandbox


def _data_dir(tmp_path: Path) -> Path:
    """A Forecourt data folder whose database any local user could read (mode 0644)."""
    data = tmp_path / "data"
    data.mkdir()
    for directory in (tmp_path, data):
        directory.chmod(0o755)
    database = data / "forecourt.db"
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("create table secrets (value text)")
        connection.execute("insert into secrets values ('owner key')")
    connection.close()
    database.chmod(0o644)
    return database


def _exists(path: Path) -> bool:
    return path.exists()


async def test_package_is_readable_but_not_writable() -> None:
    async with sandbox() as box:
        assert (await box.output("read_file", str(CORPUS / "hostile.py")))["ok"] > 0
        denied = await box.output("write_file", str(CORPUS / "planted.py"))
    assert denied["errno"] in (errno.EROFS, errno.EACCES), denied
    assert not (CORPUS / "planted.py").exists()


async def test_private_directory_is_the_writable_cwd_and_is_private() -> None:
    async with sandbox() as box:
        seen = await box.output("scratch")
        assert seen["content"] == "scratch"
        cwd = Path(seen["cwd"])
        assert seen["tmpdir"] == str(cwd)
        # A tmpfs in the worker's own mount namespace: the file is not on the host's disk.
        assert _exists(cwd) and not _exists(cwd / "notes.txt")
    assert not _exists(cwd.parent)  # the worker's directory is removed when it stops


async def test_host_secrets_are_unreachable(tmp_path: Path) -> None:
    database = _data_dir(tmp_path)
    paths = ("/etc/shadow", "/root/.bashrc", str(database), "/etc/passwd", "/proc/1/environ")
    async with sandbox() as box:
        for path in paths:
            seen = await box.output("read_file", path)
            assert seen["errno"] in (errno.ENOENT, errno.EACCES), (path, seen)
        listing = await box.output("list_dir", "/")
    assert listing["errno"] == errno.EACCES  # Landlock: not even / may be listed


def _shared_copy() -> Path:
    """The corpus copied to a new folder that every user can reach."""
    package = Path(tempfile.mkdtemp(prefix="forecourt-corpus-"))
    package.chmod(0o755)
    shutil.copy(CORPUS / "hostile.py", package / "hostile.py")
    (package / "hostile.py").chmod(0o644)
    return package


async def test_landlock_alone_keeps_the_data_dir_out(tmp_path: Path) -> None:
    """Without the mount namespace the host's files are all there; Landlock still denies them.

    The package is a copy in a folder every user can reach: without the mount namespace the
    plugin's uid sees the host's permissions, and a checkout may sit under a private folder.
    """
    database = _data_dir(tmp_path)
    package = _shared_copy()
    try:
        async with sandbox(disabled=("mount_namespace",)) as box:
            seen = await box.output("read_file", str(database), package_dir=package)
            assert seen == {"error": "PermissionError", "errno": errno.EACCES}
            hostile = str(package / "hostile.py")
            assert (await box.output("read_file", hostile, package_dir=package))["ok"] > 0
    finally:
        shutil.rmtree(package, ignore_errors=True)


async def test_declared_dependencies_are_importable_and_read_only(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / "extra").mkdir(parents=True)
    (site / "plain_dep.py").write_text("VALUE = 'plain'\n")
    (site / "extra" / "pth_dep.py").write_text("VALUE = 'via .pth'\n")
    (site / "extra.pth").write_text(str(site / "extra") + "\n")
    for directory in (tmp_path, site, site / "extra"):
        directory.chmod(0o755)
    async with sandbox() as box:
        assert await box.output("dependency", "plain_dep", site_dirs=(site,)) == "plain"
        assert await box.output("dependency", "pth_dep", site_dirs=(site,)) == "via .pth"
        written = await box.output("write_file", str(site / "planted.py"), site_dirs=(site,))
        missing = await box.run("dependency", "plain_dep")
    assert written["errno"] in (errno.EROFS, errno.EACCES)
    assert missing.error_class == "ModuleNotFoundError"  # not without declaring it
