"""Installed plugin versions on this node's disk, unpacked from their packages.

Each version lives in ``DATA_DIR/plugins/<id>/<version>/``::

    package/      the package's files (dirs 0755, files 0644), read-only to its workers
    site/         its declared dependencies (pip --target), read-only to its workers
    .sha256       the digest of the package these files came from

A version is unpacked into a temporary folder next to its final place and renamed into place
only once every step worked, so a failed install (bad entry, a dependency pip cannot install)
leaves nothing behind, and a reader never sees half a version. Every node unpacks what it
runs from the package stored in the database, so nodes need not share ``DATA_DIR``.

Built-in plugins may import Forecourt's own dependencies (``psutil``, ``jmespath``) without
declaring them: :func:`host_modules` finds what their code imports and the store copies those
packages from Forecourt's environment into ``site/``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import importlib.util
import io
import os
import secrets
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from forecourt.plugins.dependencies import install_dependencies
from forecourt.plugins.package import PluginPackage

MARKER = ".sha256"
DIR_MODE = 0o755
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so one folder always zips to the same bytes
NOT_COPIED = frozenset({"forecourt", "forecourt_plugin"})


class PackageStore:
    """The unpacked plugin versions under ``root`` (``DATA_DIR/plugins``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @staticmethod
    def relative(plugin_id: str, version: str) -> str:
        """Where a version lives, relative to ``DATA_DIR`` (what the database records)."""
        return f"plugins/{plugin_id}/{version}"

    def version_dir(self, plugin_id: str, version: str) -> Path:
        return self.root / plugin_id / version

    def package_dir(self, plugin_id: str, version: str) -> Path:
        return self.version_dir(plugin_id, version) / "package"

    def site_dir(self, plugin_id: str, version: str) -> Path:
        return self.version_dir(plugin_id, version) / "site"

    def current(self, plugin_id: str, version: str, sha256: str) -> bool:
        """Whether this node holds the files of the package with ``sha256``."""
        marker = self.version_dir(plugin_id, version) / MARKER
        try:
            return marker.read_text().strip() == sha256
        except OSError:
            return False

    async def unpack(
        self,
        package: PluginPackage,
        sha256: str,
        *,
        host: Iterable[str] = (),
        replace: bool = False,
    ) -> None:
        """Unpack ``package`` (and install its dependencies, and copy ``host`` modules) into
        its place; with ``replace``, over files already there (a development folder edited).

        Raises DependencyInstallFailed (nothing is left behind)."""
        manifest = package.manifest
        key = (manifest.id, manifest.version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not replace and self.current(*key, sha256):
                return
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
            try:
                os.chmod(staging, DIR_MODE)
                await asyncio.to_thread(package.extract_to, staging / "package")
                (staging / "site").mkdir(mode=DIR_MODE)
                await install_dependencies(list(manifest.dependencies), staging / "site")
                await asyncio.to_thread(copy_modules, host, staging / "site")
                (staging / MARKER).write_text(sha256 + "\n")
                await asyncio.to_thread(self._swap, staging, self.version_dir(*key), sha256)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def remove(self, plugin_id: str, version: str) -> None:
        """Delete a version's files (and the plugin's folder once it is empty)."""
        shutil.rmtree(self.version_dir(plugin_id, version), ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / plugin_id).rmdir()

    def _swap(self, staging: Path, target: Path, sha256: str) -> None:
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        trash = target.with_name(f".old-{target.name}-{secrets.token_hex(4)}")
        if target.exists():
            os.rename(target, trash)
        try:
            os.rename(staging, target)
        except OSError as exc:
            # Another process put the same version in place first: keep its files.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not self.current(
                target.parent.name, target.name, sha256
            ):
                raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)


def zip_files(files: Mapping[str, bytes]) -> bytes:
    """The files as a zip, the same bytes for the same files (to store a folder's package)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, date_time=ZIP_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[path])
    return buffer.getvalue()


def host_modules(files: Mapping[str, bytes]) -> tuple[str, ...]:
    """Top-level modules the package's Python files import that are neither the standard
    library, nor the package's own, nor Forecourt's, but are installed here."""
    own = {path.split("/", 1)[0].removesuffix(".py") for path in files}
    wanted: set[str] = set()
    for path, data in files.items():
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse(data, filename=path)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                wanted.add(node.module.split(".", 1)[0])
    wanted -= own | NOT_COPIED | set(sys.stdlib_module_names)
    return tuple(sorted(name for name in wanted if importlib.util.find_spec(name) is not None))


def copy_modules(names: Iterable[str], target: Path) -> None:
    """Copy the installed top-level modules ``names`` (packages or single files) to ``target``."""
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(
                source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif spec.origin and os.path.isfile(spec.origin):
            shutil.copy2(spec.origin, target / Path(spec.origin).name)
