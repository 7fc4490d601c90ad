"""Publisher signatures on plugin packages: Ed25519 over the package's content digest.

A publisher keeps a private key (PKCS#8 PEM) and hands out its public key as
``ed25519:<base64 of the raw 32 bytes>``; an installation lists the keys it trusts. The
signature, ``forecourt-plugin.sig`` at the package root (base64), signs
``SIGNATURE_CONTEXT + PluginPackage.content_digest()``: the manifest and every other file, so
neither the manifest nor the code can change without breaking it.

:func:`verify_package` accepts an unsigned package only when told to; a signature that does not
verify with a trusted key is refused whatever the setting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from forecourt.errors import UntrustedPackage
from forecourt.plugins.package import SIGNATURE_FILE, PluginPackage, read_package

KEY_PREFIX = "ed25519:"
SIGNATURE_CONTEXT = b"forecourt-plugin-signature-v1\n"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Trust:
    """The outcome of :func:`verify_package`: signed or not, and by whom (key fingerprint)."""

    signed: bool
    publisher: str | None


def generate_publisher_key() -> tuple[bytes, str]:
    """A new key pair: (private key as unencrypted PKCS#8 PEM, public key string)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_key_string(private.public_key())


def public_key_string(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64 raw>`` for ``key``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key in an ``ed25519:<base64>`` string; ValueError if it is not one."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a publisher key starts with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a publisher key is base64 after its prefix") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(public_key: str) -> str:
    """``SHA256:<base64>`` of the raw key, as OpenSSH prints fingerprints."""
    raw = parse_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def load_private_key(private_key_pem: bytes | str) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM; ValueError if it is another kind of key."""
    data = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("a publisher key must be an Ed25519 key")
    return key


def sign_package(private_key_pem: bytes | str, package: PluginPackage) -> bytes:
    """The raw 64-byte signature of ``package`` (base64 it into ``forecourt-plugin.sig``)."""
    key = load_private_key(private_key_pem)
    return key.sign(SIGNATURE_CONTEXT + package.content_digest())


def sign_directory(directory: Path, private_key_pem: bytes | str) -> Path:
    """Sign a development folder in place: writes (or replaces) its signature file.

    The folder must already be a valid package. Returns the signature file's path.
    """
    signature = sign_package(private_key_pem, read_package(directory))
    path = directory / SIGNATURE_FILE
    path.write_bytes(base64.b64encode(signature) + b"\n")
    return path


def verify_package(
    package: PluginPackage, trusted_keys: Sequence[str], *, allow_unsigned: bool
) -> Trust:
    """Check the package's signature against ``trusted_keys`` (``ed25519:…`` strings).

    Raises UntrustedPackage if the package is unsigned and ``allow_unsigned`` is false, or if
    it is signed but no trusted key verifies the signature. A malformed trusted key is a
    configuration error: ValueError.
    """
    keys = [(key, parse_public_key(key)) for key in trusted_keys]
    if package.signature is None:
        if allow_unsigned:
            return Trust(signed=False, publisher=None)
        raise UntrustedPackage("The package is unsigned, and this installation requires signatures")
    if len(package.signature) != SIGNATURE_BYTES:
        raise UntrustedPackage(f"{SIGNATURE_FILE} does not hold an Ed25519 signature")
    message = SIGNATURE_CONTEXT + package.content_digest()
    for text, key in keys:
        try:
            key.verify(package.signature, message)
        except InvalidSignature:
            continue
        return Trust(signed=True, publisher=fingerprint(text))
    raise UntrustedPackage(
        "The package's signature does not verify with any trusted publisher key "
        "(the package was altered after signing, or its publisher is not trusted here)"
    )
