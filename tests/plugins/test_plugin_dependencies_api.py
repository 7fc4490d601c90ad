"""A package's own dependencies: installed from PyPI at install time into the plugin's own
environment, importable in the sandbox; a failed install is a clear 422 and leaves nothing."""

from __future__ import annotations

from typing import Any

from plugin_support import execute, files, install, instance, start, upload, zip_bytes

USES_SIX = """
import six


def run(payload):
    return {"records": [{"six": six.__version__, "text": six.ensure_text(b"ok")}]}
"""


async def test_a_pinned_dependency_is_installed_and_importable(harness_factory: Any) -> None:
    h = await start(harness_factory)
    await install(h, files(USES_SIX, config_schema=None, dependencies=["six==1.17.0"]))
    created = await instance(h, config={})
    result = await execute(h, created["id"], {"records": []})
    assert result["status"] == "ok", result
    assert result["output"] == {"records": [{"six": "1.17.0", "text": "ok"}]}
    site = h.fc.settings.plugins_dir / "com.example.upper" / "1.0.0" / "site"
    assert (site / "six.py").exists()


async def test_a_dependency_that_cannot_be_installed_is_422_and_leaves_nothing(
    harness_factory: Any,
) -> None:
    h = await start(harness_factory)
    package = files(USES_SIX, config_schema=None, dependencies=["forecourt-no-such-package==0.0.1"])
    response = await upload(h, zip_bytes(package))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("dependency-install-failed")
    assert "forecourt-no-such-package" in problem["detail"]
    listed = await h.client.get("/api/v1/plugins/com.example.upper", headers=h.auth())
    assert listed.status_code == 404
    assert not (h.fc.settings.plugins_dir / "com.example.upper").exists()
