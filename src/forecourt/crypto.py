"""Encryption of secrets Forecourt must be able to read back (webhook signing secrets).

AES-256-GCM under a key derived (HKDF-SHA256) from the server secret, with a purpose label
so one secret never serves two uses. Tokens are ``v1.<base64url(nonce || ciphertext)>``.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
VERSION = "v1."


class DecryptionFailed(Exception):
    """The token was not made with this server secret, or was altered."""


class SecretBox:
    """Encrypts and decrypts short strings for one purpose (e.g. "webhook-secret")."""

    def __init__(self, server_secret: bytes, purpose: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"forecourt:{purpose}".encode()
        ).derive(server_secret)
        self._aead = AESGCM(key)
        self._aad = purpose.encode()

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self._aad)
        return VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(VERSION):
            raise DecryptionFailed("unknown token version")
        try:
            raw = base64.urlsafe_b64decode(token[len(VERSION) :].encode())
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("token does not decrypt with this server secret") from exc
