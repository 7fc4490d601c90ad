"""Without root, workers confine themselves through a user namespace, and say what that lacks.

Forecourt runs as root here, so the fallback is forced: the workers take the path they take
when Forecourt is not root (a user namespace maps its uid to 65534 and every capability is
dropped). What it cannot give, a uid of its own for plugin code, is reported missing.
"""

from __future__ import annotations

import errno

import pytest
from sandbox_support import WORK_ROOT, sandbox

from forecourt.plugins.sandbox import layout


async def test_user_namespace_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "use_user_namespace", lambda: True)
    async with sandbox(work_root=WORK_ROOT / "userns") as box:
        report = box.pool.report
        assert report.missing == ("user",)
        assert "user namespace" in report["user"].detail
        assert "capabilities dropped" in report["user"].detail
        seen = await box.output("identity")
        assert seen["uid"] == 65534 and seen["no_new_privs"] == 1 and seen["seccomp"] == 2
        assert (await box.output("read_file", "/etc/shadow"))["errno"] == errno.ENOENT
        assert (await box.output("fork_loop", 3))["errors"] == [errno.EPERM]
        assert (await box.output("escapes"))["mount"]["errno"] == errno.EPERM
        assert await box.output("upper", "works") == "WORKS"
        answer = await box.output(
            "fetch", {"url": "http://example.com/"}, network_hosts=("api.example.com",)
        )
        assert answer["error"] == "EgressRefused"  # the proxy's socket is reachable
