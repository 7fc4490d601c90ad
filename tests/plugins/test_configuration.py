"""Instance configuration: validation naming the field, secrets masked, kept and sealed."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt.crypto import DecryptionFailed, SecretBox
from forecourt.errors import InvalidInput
from forecourt.plugins.configuration import (
    MASK,
    mask,
    merge_update,
    seal,
    secret_paths,
    unseal,
    validate_config,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url", "token"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "pattern": "^https?://"},
        "bind": {"type": "string", "format": "ipv4"},
        "token": {"type": "string", "secret": True},
        "retries": {"type": "integer", "minimum": 0},
        "smtp": {
            "type": "object",
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "maximum": 65535},
                "password": {"type": "string", "writeOnly": True},
            },
        },
    },
}
CONFIG: dict[str, Any] = {
    "url": "https://example.com/hook",
    "token": "s3cret",
    "retries": 2,
    "smtp": {"host": "mail.example.com", "port": 587, "password": "pw"},
}
BOX = SecretBox(os.urandom(32), "plugin-config")


def invalid(config: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_config(SCHEMA, config)
    return caught.value


def test_a_valid_configuration_passes() -> None:
    validate_config(SCHEMA, CONFIG)


def test_the_first_bad_field_is_named_and_every_problem_listed() -> None:
    error = invalid({**CONFIG, "retries": -1, "smtp": {"port": 70000}, "extra": 1})
    fields = [item["field"] for item in error.extra["errors"]]
    assert set(fields) == {"config.retries", "config.smtp.port", "config.extra"}
    assert error.field == fields[0]
    assert error.detail == error.extra["errors"][0]["message"]


def test_missing_and_badly_formatted_fields() -> None:
    assert invalid({"url": "https://x"}).field == "config.token"
    assert invalid({**CONFIG, "url": "ftp://x"}).field == "config.url"
    assert invalid({**CONFIG, "bind": "10.0.0.300"}).field == "config.bind"
    assert invalid([]).field == "config"


def test_secret_paths_walk_nested_objects() -> None:
    assert secret_paths(SCHEMA) == ["token", "smtp.password"]
    assert secret_paths({"type": "object"}) == []


def test_mask_hides_only_secrets_that_are_set() -> None:
    masked = mask(CONFIG, SCHEMA)
    assert masked["token"] == masked["smtp"]["password"] == MASK
    assert masked["url"] == CONFIG["url"]
    assert CONFIG["token"] == "s3cret"
    assert "token" not in mask({"url": "https://x"}, SCHEMA)


def test_an_update_sending_the_mask_back_keeps_the_secret() -> None:
    update = {**mask(CONFIG, SCHEMA), "retries": 5}
    merged = merge_update(CONFIG, update, SCHEMA)
    assert merged == {**CONFIG, "retries": 5}


def test_an_update_can_change_or_remove_a_secret() -> None:
    changed = merge_update(CONFIG, {**CONFIG, "token": "new"}, SCHEMA)
    assert changed["token"] == "new"
    assert changed["smtp"]["password"] == "pw"
    removed = merge_update(CONFIG, {"url": CONFIG["url"], "token": MASK}, SCHEMA)
    assert removed == {"url": CONFIG["url"], "token": "s3cret"}
    assert merge_update({}, {"url": "https://x", "token": MASK}, SCHEMA) == {"url": "https://x"}


def test_seal_encrypts_only_secrets_and_unseal_restores_them() -> None:
    sealed = seal(CONFIG, SCHEMA, BOX)
    assert sealed["token"] != "s3cret" and sealed["token"].startswith("v1.")
    assert sealed["smtp"]["password"].startswith("v1.")
    assert sealed["url"] == CONFIG["url"] and sealed["smtp"]["port"] == 587
    assert unseal(sealed, SCHEMA, BOX) == CONFIG


def test_a_secret_sealed_under_another_server_secret_does_not_unseal() -> None:
    sealed = seal(CONFIG, SCHEMA, SecretBox(os.urandom(32), "plugin-config"))
    with pytest.raises(DecryptionFailed):
        unseal(sealed, SCHEMA, BOX)


@given(st.text(max_size=100), st.text(max_size=100))
def test_unseal_inverts_seal(token: str, password: str) -> None:
    config = {**CONFIG, "token": token, "smtp": {**CONFIG["smtp"], "password": password}}
    assert unseal(seal(config, SCHEMA, BOX), SCHEMA, BOX) == config
