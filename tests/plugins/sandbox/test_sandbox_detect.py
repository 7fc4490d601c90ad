"""Detection: the report says what workers really get, and require="all" enforces it."""

from __future__ import annotations

import pytest
from sandbox_support import config, corpus_spec, sandbox

import forecourt.plugins.sandbox as sandbox_package
from forecourt.errors import SandboxUnavailable
from forecourt.plugins.sandbox import WorkerPool, detect
from forecourt.plugins.sandbox.limits import PROTECTION_NAMES


def test_every_protection_is_available_here() -> None:
    report = detect(config())
    assert report.complete, report.to_dict()
    assert [p.name for p in report.protections if p.required] == list(PROTECTION_NAMES)
    assert "uid 65534" in report["user"].detail
    assert report["landlock"].detail.startswith("ABI ")
    document = report.to_dict()
    assert document["complete"] is True
    assert set(document["protections"]) == {*PROTECTION_NAMES, "wasm_runtime"}
    assert document["protections"]["wasm_runtime"]["required"] is False


def test_detection_is_cached() -> None:
    assert detect(config()) is detect(config())


def test_a_disabled_protection_is_reported_missing() -> None:
    report = detect(config(disabled=("landlock", "seccomp")))
    assert not report.complete
    assert report.missing == ("landlock", "seccomp")
    assert report["landlock"].detail == "disabled by the configuration"
    assert report["user"].available


async def test_require_all_refuses_when_a_protection_is_missing() -> None:
    pool = WorkerPool(config(require="all", disabled=("seccomp",)))
    with pytest.raises(SandboxUnavailable, match="seccomp"):
        await pool.start()
    with pytest.raises(SandboxUnavailable):
        await pool.call(corpus_spec("upper"), input="x", config={})
    await pool.close()


async def test_require_all_runs_when_everything_is_there() -> None:
    async with sandbox(require="all") as box:
        assert await box.output("upper", "x") == "X"


async def test_require_available_runs_with_what_there_is() -> None:
    async with sandbox(disabled=("landlock",)) as box:
        assert box.pool.report.missing == ("landlock",)
        assert await box.output("upper", "x") == "X"


def test_public_names() -> None:
    assert sorted(sandbox_package.__all__) == sandbox_package.__all__
    for name in sandbox_package.__all__:
        assert getattr(sandbox_package, name) is not None


async def test_worker_itself_refuses_when_a_required_protection_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even if detection were wrong, a worker missing a protection never runs plugin code."""
    complete = detect(config())
    monkeypatch.setattr("forecourt.plugins.sandbox.capabilities.detect", lambda *a, **k: complete)
    pool = WorkerPool(config(require="all", disabled=("seccomp",)))
    try:
        await pool.start()  # believes the report
        result = await pool.call(corpus_spec("upper"), input="x", config={})
    finally:
        await pool.close()
    assert result.status == "refused"
    assert result.error_class == "SandboxUnavailable"
