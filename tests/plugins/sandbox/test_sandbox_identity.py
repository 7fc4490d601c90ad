"""Who plugin code runs as, and what it inherits: an unprivileged user, nothing of Forecourt's."""

from __future__ import annotations

import pytest
from sandbox_support import sandbox


async def test_plugin_runs_as_unprivileged_user_without_groups() -> None:
    async with sandbox() as box:
        seen = await box.output("identity")
    assert seen["uid"] == seen["euid"] == 65534
    assert seen["gid"] == 65534
    assert seen["groups"] == []


async def test_no_new_privs_and_seccomp_are_set_in_the_plugin() -> None:
    async with sandbox() as box:
        seen = await box.output("identity")
    assert seen["no_new_privs"] == 1
    assert seen["seccomp"] == 2  # SECCOMP_MODE_FILTER


async def test_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECOURT_SECRET_KEY", "s3cret-from-the-parent")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    async with sandbox() as box:
        seen = await box.output("identity")
    environ: dict[str, str] = seen["environ"]
    assert not [name for name in environ if name.startswith("FORECOURT_")]
    assert "s3cret-from-the-parent" not in environ.values()
    assert set(environ) == {"PATH", "HOME", "TMPDIR", "LANG"}
    assert environ["HOME"] == seen["cwd"]
