"""Publisher signatures: verify(sign(package)), and every way a package fails to be trusted."""

from __future__ import annotations

import base64
import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from plugin_support import CODE, MANIFEST

from forecourt.errors import UntrustedPackage
from forecourt.plugins.integrity import (
    Trust,
    fingerprint,
    generate_publisher_key,
    parse_public_key,
    public_key_string,
    sign_directory,
    sign_package,
    verify_package,
)
from forecourt.plugins.package import SIGNATURE_FILE, read_package

PRIVATE, PUBLIC = generate_publisher_key()
OTHER_PRIVATE, OTHER_PUBLIC = generate_publisher_key()


def make_dir(root: Path, code: bytes = CODE) -> Path:
    root.mkdir()
    (root / "forecourt-plugin.toml").write_bytes(MANIFEST)
    (root / "plugin.py").write_bytes(code)
    return root


def zip_dir(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            archive.write(path, f"upper/{path.relative_to(root)}")
    return buffer.getvalue()


def test_a_signed_folder_verifies_with_its_publisher_key(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "upper")
    written = sign_directory(root, PRIVATE)
    assert written == root / SIGNATURE_FILE
    trust = verify_package(read_package(root), [OTHER_PUBLIC, PUBLIC], allow_unsigned=False)
    assert trust == Trust(signed=True, publisher=fingerprint(PUBLIC))
    assert trust.publisher is not None and trust.publisher.startswith("SHA256:")


def test_the_signature_survives_zipping_the_folder(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "upper")
    sign_directory(root, PRIVATE.decode())
    trust = verify_package(read_package(zip_dir(root)), [PUBLIC], allow_unsigned=False)
    assert trust.signed


@pytest.mark.parametrize("altered", ["plugin.py", "forecourt-plugin.toml"])
def test_changing_any_file_after_signing_breaks_trust(tmp_path: Path, altered: str) -> None:
    root = make_dir(tmp_path / "upper")
    sign_directory(root, PRIVATE)
    with (root / altered).open("ab") as fh:
        fh.write(b"\n# changed\n")
    with pytest.raises(UntrustedPackage):
        verify_package(read_package(root), [PUBLIC], allow_unsigned=True)


def test_a_file_added_after_signing_breaks_trust(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "upper")
    sign_directory(root, PRIVATE)
    (root / "extra.py").write_bytes(b"import os\n")
    with pytest.raises(UntrustedPackage):
        verify_package(read_package(root), [PUBLIC], allow_unsigned=True)


def test_a_signature_by_an_untrusted_key_is_refused_even_when_unsigned_is_allowed(
    tmp_path: Path,
) -> None:
    root = make_dir(tmp_path / "upper")
    sign_directory(root, OTHER_PRIVATE)
    with pytest.raises(UntrustedPackage):
        verify_package(read_package(root), [PUBLIC], allow_unsigned=True)
    with pytest.raises(UntrustedPackage):
        verify_package(read_package(root), [], allow_unsigned=True)


def test_unsigned_packages_only_when_allowed(tmp_path: Path) -> None:
    package = read_package(make_dir(tmp_path / "upper"))
    assert verify_package(package, [PUBLIC], allow_unsigned=True) == Trust(False, None)
    with pytest.raises(UntrustedPackage, match="unsigned"):
        verify_package(package, [PUBLIC], allow_unsigned=False)


def test_a_signature_file_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "upper")
    (root / SIGNATURE_FILE).write_bytes(base64.b64encode(b"short"))
    with pytest.raises(UntrustedPackage):
        verify_package(read_package(root), [PUBLIC], allow_unsigned=True)


@pytest.mark.parametrize(
    "key", ["rsa:AAAA", "ed25519:not base64!", "ed25519:" + base64.b64encode(b"x" * 31).decode()]
)
def test_a_malformed_trusted_key_is_a_configuration_error(tmp_path: Path, key: str) -> None:
    package = read_package(make_dir(tmp_path / "upper"))
    with pytest.raises(ValueError):
        verify_package(package, [key], allow_unsigned=True)


def test_public_key_strings_round_trip() -> None:
    assert PUBLIC.startswith("ed25519:")
    assert public_key_string(parse_public_key(PUBLIC)) == PUBLIC
    assert fingerprint(PUBLIC) != fingerprint(OTHER_PUBLIC)


def test_only_ed25519_private_keys_sign(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError):
        sign_directory(make_dir(tmp_path / "upper"), pem)


@settings(max_examples=25)
@given(code=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=63))
def test_verify_accepts_exactly_what_was_signed(code: bytes, flip: int) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", code)
    package = read_package(buffer.getvalue())
    signature = sign_package(PRIVATE, package)
    good = dataclasses.replace(package, signature=signature)
    assert verify_package(good, [PUBLIC], allow_unsigned=False).signed
    bad_signature = bytearray(signature)
    bad_signature[flip] ^= 0x01
    bad = dataclasses.replace(package, signature=bytes(bad_signature))
    with pytest.raises(UntrustedPackage):
        verify_package(bad, [PUBLIC], allow_unsigned=False)
