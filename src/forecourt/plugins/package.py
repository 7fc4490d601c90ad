"""Plugin packages: a .zip (bytes or a file) or a development folder, read without trusting it.

Refused with :class:`~forecourt.errors.PayloadTooLarge`: a package over ``max_bytes``
(compressed), over ``max_uncompressed_bytes`` once inflated (actual bytes, not the sizes the
archive claims), or with more than ``max_entries`` entries. Refused with
:class:`~forecourt.errors.InvalidPackage`, each problem naming the entry: paths that are
absolute, climb out (``..``), carry a drive letter or a backslash; symbolic links, devices,
fifos and sockets; encrypted or repeated entries (also repeats differing only in case); no
manifest at the root. Everything may sit in one top-level folder, which is then dropped (what
zipping a folder gives). Whether the same id and version is already installed (409) is for the
plugin service to decide.

``sha256`` identifies the package: of the zip bytes, or for a folder of :func:`tree_digest`
over its files. The publisher's signature (``forecourt-plugin.sig``, base64) covers
:meth:`PluginPackage.content_digest`, every file but the signature itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from forecourt.errors import InvalidPackage, PayloadTooLarge
from forecourt.plugins.configuration import Problem, problem
from forecourt.plugins.manifest import MANIFEST_NAMES, Manifest, load_manifest

SIGNATURE_FILE = "forecourt-plugin.sig"
MAX_PACKAGE_BYTES = 10 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 2000
MAX_PATH_CHARS = 255
READ_CHUNK_BYTES = 64 * 1024
FILE_MODE = 0o644
DIR_MODE = 0o755
# Left out when reading a development folder: caches and version control, never plugin code.
IGNORED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
TREE_DIGEST_HEADER = b"forecourt-plugin-tree-v1\n"
CONTENT_DIGEST_HEADER = b"forecourt-plugin-content-v1\n"

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PluginPackage:
    """A read, checked package: its manifest, its files by relative path, and its identity."""

    manifest: Manifest
    files: Mapping[str, bytes]
    sha256: str
    signature: bytes | None

    @property
    def size(self) -> int:
        """Total bytes of the files."""
        return sum(len(data) for data in self.files.values())

    def content_digest(self) -> bytes:
        """SHA-256 of every file but the signature: what the publisher signs."""
        return tree_digest(self.files, header=CONTENT_DIGEST_HEADER, exclude={SIGNATURE_FILE})

    def extract_to(self, target: Path) -> None:
        """Write the files under ``target`` (new or empty): dirs 0755, files 0644, no links."""
        if target.is_symlink() or (target.exists() and any(target.iterdir())):
            raise FileExistsError(f"{target} must be a new or empty folder")
        target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(target, DIR_MODE)
        for path, data in sorted(self.files.items()):
            reason = path_problem(path)
            if reason:
                raise ValueError(f"{path!r}: {reason}")
            *folders, name = path.split("/")
            current = target
            for folder in folders:
                current = current / folder
                if not current.exists():
                    current.mkdir(mode=DIR_MODE)
                    os.chmod(current, DIR_MODE)
                elif current.is_symlink() or not current.is_dir():
                    raise FileExistsError(f"{current} is in the way")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(current / name, flags, FILE_MODE), "wb") as fh:
                os.fchmod(fh.fileno(), FILE_MODE)
                fh.write(data)


def read_package(
    source: bytes | Path,
    *,
    max_bytes: int = MAX_PACKAGE_BYTES,
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> PluginPackage:
    """Read and check a zip (``bytes`` or a file path) or a development folder."""
    if isinstance(source, Path) and source.is_dir():
        files = _read_directory(source, max_bytes, max_entries)
        sha256 = tree_digest(files).hex()
    else:
        if isinstance(source, Path):
            _check_size(source.stat().st_size, max_bytes)
            source = source.read_bytes()
        _check_size(len(source), max_bytes)
        files = _read_zip(source, max_uncompressed_bytes, max_entries)
        sha256 = hashlib.sha256(source).hexdigest()
    return _package(files, sha256)


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative path inside a package, or None."""
    if not path:
        return "has an empty name"
    if len(path) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if _CONTROL.search(path):
        return "has a control character in its name"
    if "\\" in path:
        return "uses a backslash; paths in a package use /"
    if path.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(path):
        return "starts with a drive letter"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out of the package (..)"
    if any(part in ("", ".") for part in parts):
        return "has an empty or . component"
    return None


def tree_digest(
    files: Mapping[str, bytes],
    *,
    header: bytes = TREE_DIGEST_HEADER,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> bytes:
    """SHA-256 over ``header`` then, in UTF-8 byte order of path, each ``len:path len:data``."""
    digest = hashlib.sha256(header)
    for encoded in sorted(path.encode() for path in files if path not in exclude):
        data = files[encoded.decode()]
        digest.update(b"%d:%s%d:" % (len(encoded), encoded, len(data)))
        digest.update(data)
    return digest.digest()


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadTooLarge(f"The package is {size} bytes; the limit is {max_bytes}")


def _read_zip(data: bytes, max_total: int, max_entries: int) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise InvalidPackage(errors=[problem("package", f"not a zip archive: {exc}")]) from exc
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise PayloadTooLarge(f"The package has {len(infos)} entries; the limit is {max_entries}")
    if sum(info.file_size for info in infos) > max_total:
        raise PayloadTooLarge(f"The package inflates to over {max_total} bytes")
    problems: list[Problem] = []
    files: dict[str, bytes] = {}
    seen: dict[str, str] = {}
    budget = max_total
    for info in infos:
        name = info.orig_filename
        kind = stat.S_IFMT(info.external_attr >> 16)
        reason = path_problem(name.removesuffix("/") if info.is_dir() else name)
        if reason is None and kind == stat.S_IFLNK:
            reason = "is a symbolic link"
        elif reason is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            reason = "is a device, fifo or socket"
        elif reason is None and info.flag_bits & 0x1:
            reason = "is encrypted"
        elif reason is None and name.casefold() in seen:
            reason = f"repeats {seen[name.casefold()]!r}"
        seen.setdefault(name.casefold(), name)
        if reason is None and not info.is_dir():
            try:
                files[name] = _inflate(archive, info, budget)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as exc:
                reason = f"cannot be read: {exc}"
            budget -= len(files.get(name, b""))
        if reason:
            problems.append(problem(name, reason))
    if problems:
        raise InvalidPackage(f"{len(problems)} bad entries in the package", errors=problems)
    return files


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    with archive.open(info) as fh:
        while chunk := fh.read(READ_CHUNK_BYTES):
            size += len(chunk)
            if size > budget:
                raise PayloadTooLarge("The package inflates to more than its size limit")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_directory(root: Path, max_total: int, max_entries: int) -> dict[str, bytes]:
    problems: list[Problem] = []
    files: dict[str, bytes] = {}
    pending = [(root, "")]
    total = count = 0
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                count += 1
                if count > max_entries:
                    raise PayloadTooLarge(f"The folder has over {max_entries} entries")
                reason = path_problem(rel)
                if reason is None and entry.is_symlink():
                    reason = "is a symbolic link"
                elif reason is None and entry.is_dir(follow_symlinks=False):
                    if entry.name not in IGNORED_DIRS:
                        pending.append((Path(entry.path), rel + "/"))
                    continue
                elif reason is None and not entry.is_file(follow_symlinks=False):
                    reason = "is not a regular file"
                if reason:
                    problems.append(problem(rel, reason))
                    continue
                total += entry.stat(follow_symlinks=False).st_size
                _check_size(total, max_total)
                with open(entry.path, "rb", opener=_no_follow) as fh:
                    files[rel] = fh.read()
    if problems:
        raise InvalidPackage(f"{len(problems)} bad entries in the folder", errors=problems)
    return files


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _package(files: dict[str, bytes], sha256: str) -> PluginPackage:
    clashes = [
        problem(name, f"is a file and also the folder of {other!r}")
        for other in files
        for name in _parents(other)
        if name in files
    ]
    if clashes:
        raise InvalidPackage(errors=clashes)
    files = _unwrap(files)
    present = [name for name in MANIFEST_NAMES if name in files]
    if len(present) != 1:
        raise InvalidPackage(errors=[_manifest_problem(files, present)])
    problems: list[Problem] = []
    signature = None
    if SIGNATURE_FILE in files:
        try:
            signature = base64.b64decode(files[SIGNATURE_FILE].strip(), validate=True)
        except (binascii.Error, ValueError):
            problems.append(problem(SIGNATURE_FILE, "must hold the base64 of a signature"))
    manifest = None
    try:
        manifest = load_manifest(files[present[0]], present[0], files=files.keys())
    except InvalidPackage as exc:
        problems = exc.extra["errors"] + problems
    if problems or manifest is None:
        raise InvalidPackage(f"{len(problems)} problem(s) in the package", errors=problems)
    return PluginPackage(manifest, MappingProxyType(files), sha256, signature)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _unwrap(files: dict[str, bytes]) -> dict[str, bytes]:
    """Drop one folder wrapping every file, unless the manifest is already at the root."""
    if any(name in files for name in MANIFEST_NAMES):
        return files
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        strip = len(tops.pop()) + 1
        return {name[strip:]: data for name, data in files.items()}
    return files


def _manifest_problem(files: Mapping[str, bytes], present: list[str]) -> Problem:
    if len(present) > 1:
        return problem("package", f"has both {' and '.join(present)}; keep one")
    nested = sorted(name for name in files if name.rsplit("/", 1)[-1] in MANIFEST_NAMES)
    if nested:
        return problem(nested[0], "the manifest must be at the root of the package")
    return problem("package", f"no {' or '.join(MANIFEST_NAMES)} at the root of the package")
