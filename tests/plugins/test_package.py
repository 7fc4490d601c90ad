"""Reading packages: zips and folders, every unsafe entry refused by name, safe extraction."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import posixpath
import stat
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plugin_support import CODE, MANIFEST

from forecourt.errors import InvalidPackage, PayloadTooLarge
from forecourt.plugins.package import SIGNATURE_FILE, path_problem, read_package, tree_digest

GOOD = {"forecourt-plugin.toml": MANIFEST, "plugin.py": CODE}


def make_zip(entries: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def refused(source: bytes | Path, **kwargs: int) -> dict[str, str]:
    with pytest.raises(InvalidPackage) as caught:
        read_package(source, **kwargs)
    return {item["field"]: item["message"] for item in caught.value.extra["errors"]}


def write_tree(root: Path, entries: dict[str, bytes]) -> Path:
    for name, data in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_zip_is_read_with_its_manifest_files_and_digest() -> None:
    data = make_zip({**GOOD, "lib/helpers.py": b"X = 1\n"})
    package = read_package(data)
    assert package.manifest.id == "com.example.upper"
    assert dict(package.files) == {**GOOD, "lib/helpers.py": b"X = 1\n"}
    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert package.signature is None
    assert package.size == len(MANIFEST) + len(CODE) + 6


def test_a_zip_from_a_path_reads_like_bytes(tmp_path: Path) -> None:
    path = tmp_path / "upper.zip"
    path.write_bytes(make_zip(GOOD))
    assert read_package(path).sha256 == read_package(path.read_bytes()).sha256


def test_one_folder_wrapping_everything_is_dropped() -> None:
    wrapped = make_zip({"upper/": b"", **{f"upper/{k}": v for k, v in GOOD.items()}})
    assert set(read_package(wrapped).files) == set(GOOD)


def test_a_manifest_only_in_a_subfolder_is_refused_by_name() -> None:
    found = refused(make_zip({"README.md": b"hi", "src/forecourt-plugin.toml": MANIFEST}))
    assert "root" in found["src/forecourt-plugin.toml"]


def test_no_manifest_or_two_manifests_are_refused() -> None:
    assert "no forecourt-plugin.toml" in refused(make_zip({"plugin.py": CODE}))["package"]
    both = make_zip({**GOOD, "forecourt-plugin.json": b"{}"})
    assert "keep one" in refused(both)["package"]


def test_manifest_problems_come_with_the_package_checks() -> None:
    found = refused(make_zip({"forecourt-plugin.toml": MANIFEST}))
    assert "plugin.py" in found["entry_point"]


@pytest.mark.parametrize(
    "name",
    [
        "../evil.py",
        "/etc/evil.py",
        "C:/evil.py",
        "lib\\evil.py",
        "lib/../../evil.py",
        "./evil.py",
        "a//b.py",
    ],
)
def test_paths_that_could_escape_are_refused_by_name(name: str) -> None:
    assert name in refused(make_zip({**GOOD, name: b"x"}))


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFIFO | 0o644, "fifo"),
        (stat.S_IFCHR | 0o644, "device"),
    ],
)
def test_links_and_special_files_in_a_zip_are_refused(mode: int, words: str) -> None:
    data = make_zip({**GOOD, "link": b"/etc/passwd"}, modes={"link": mode})
    assert words in refused(data)["link"]


def test_repeated_entries_are_refused_even_differing_only_in_case() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate it writes
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in GOOD.items():
                archive.writestr(name, data)
            archive.writestr("plugin.py", b"evil()")
    assert "repeats" in refused(buffer.getvalue())["plugin.py"]
    assert "repeats" in refused(make_zip({**GOOD, "Plugin.py": b"x"}))["Plugin.py"]


def test_a_file_that_is_also_a_folder_is_refused() -> None:
    assert "folder" in refused(make_zip({**GOOD, "lib": b"x", "lib/a.py": b"y"}))["lib"]


def test_not_a_zip_is_refused() -> None:
    assert "not a zip" in refused(b"PK-but-not-really")["package"]


def test_sizes_over_the_caps_are_payload_too_large(tmp_path: Path) -> None:
    data = make_zip(GOOD)
    with pytest.raises(PayloadTooLarge):
        read_package(data, max_bytes=len(data) - 1)
    path = tmp_path / "big.zip"
    path.write_bytes(data)
    with pytest.raises(PayloadTooLarge):
        read_package(path, max_bytes=len(data) - 1)
    bomb = make_zip({**GOOD, "zeros.bin": bytes(2 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    with pytest.raises(PayloadTooLarge):
        read_package(bomb, max_uncompressed_bytes=1024 * 1024)
    with pytest.raises(PayloadTooLarge):
        read_package(make_zip({**GOOD, "a": b"", "b": b""}), max_entries=3)


def test_the_signature_file_is_read_as_base64() -> None:
    signed = read_package(make_zip({**GOOD, SIGNATURE_FILE: base64.b64encode(b"s" * 64) + b"\n"}))
    assert signed.signature == b"s" * 64
    assert "base64" in refused(make_zip({**GOOD, SIGNATURE_FILE: b"%%%"}))[SIGNATURE_FILE]


def test_a_development_folder_is_read_without_caches(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "upper", {**GOOD, "__pycache__/plugin.pyc": b"\0", "lib/a.py": b""}
    )
    package = read_package(root)
    assert set(package.files) == {*GOOD, "lib/a.py"}
    assert package.sha256 == tree_digest(package.files).hex()


def test_a_folder_digest_depends_on_content_not_on_creation_order(tmp_path: Path) -> None:
    one = write_tree(tmp_path / "one", {"plugin.py": CODE, "forecourt-plugin.toml": MANIFEST})
    two = write_tree(tmp_path / "two", GOOD)
    assert read_package(one).sha256 == read_package(two).sha256
    (two / "plugin.py").write_bytes(CODE + b"# changed\n")
    assert read_package(one).sha256 != read_package(two).sha256


def test_links_and_fifos_in_a_folder_are_refused_by_name(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "upper", GOOD)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "lib").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(root / "pipe")
    found = refused(root)
    assert set(found) == {"passwd", "lib", "pipe"}
    assert "symbolic link" in found["lib"]
    assert "regular file" in found["pipe"]


def test_a_folder_over_the_size_cap_is_payload_too_large(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "upper", {**GOOD, "data.bin": bytes(4096)})
    with pytest.raises(PayloadTooLarge):
        read_package(root, max_bytes=4096)


def test_extract_writes_safe_modes_into_a_new_folder(tmp_path: Path) -> None:
    package = read_package(make_zip({**GOOD, "lib/deep/a.py": b"A = 1\n"}))
    target = tmp_path / "installed" / "upper"
    package.extract_to(target)
    assert (target / "lib/deep/a.py").read_bytes() == b"A = 1\n"
    assert (target / "plugin.py").read_bytes() == CODE
    for path in [target, *target.rglob("*")]:
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_extract_refuses_a_folder_in_use_or_a_link(tmp_path: Path) -> None:
    package = read_package(make_zip(GOOD))
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(FileExistsError):
        package.extract_to(used)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(FileExistsError):
        package.extract_to(link)
    assert not (tmp_path / "elsewhere").exists()


segment = st.text(
    alphabet=st.characters(blacklist_characters="/\\\0", blacklist_categories=["Cc"]),
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))


@given(st.text(max_size=60))
def test_any_accepted_path_stays_inside_the_package(path: str) -> None:
    if path_problem(path) is None:
        joined = posixpath.normpath(posixpath.join("/pkg", path))
        assert joined.startswith("/pkg/")
        assert "\\" not in path


@given(st.lists(segment, min_size=1, max_size=5))
def test_plain_relative_paths_are_accepted(parts: list[str]) -> None:
    path = "/".join(parts)
    if len(path) <= 255 and not (len(parts[0]) >= 2 and parts[0][1] == ":"):
        assert path_problem(path) is None
