"""System calls plugin code may not make, whether through Python or straight through ctypes."""

from __future__ import annotations

import errno
import json

import pytest
from sandbox_support import sandbox


async def test_os_fork_in_a_loop_always_fails() -> None:
    async with sandbox() as box:
        seen = await box.output("fork_loop", 50)
    assert seen == {"forked": 0, "errors": [errno.EPERM]}


async def test_process_creation_through_ctypes_fails() -> None:
    async with sandbox() as box:
        seen = await box.output("raw_syscalls")
    for name in ("libc_fork", "sys_fork", "sys_clone"):
        assert seen[name] == {"result": -1, "errno": errno.EPERM}, name
    # clone3 answers "not implemented", so the C library falls back to clone (filtered above).
    assert seen["sys_clone3"] == {"result": -1, "errno": errno.ENOSYS}


async def test_threads_still_work() -> None:
    async with sandbox() as box:
        assert await box.output("threads") is True


async def test_other_escapes_are_refused() -> None:
    async with sandbox() as box:
        seen = await box.output("escapes")
    assert seen["ptrace"] == {"result": -1, "errno": errno.EPERM}
    assert seen["unshare_user"] == {"result": -1, "errno": errno.EPERM}
    assert seen["mount"] == {"result": -1, "errno": errno.EPERM}
    assert seen["kill_parent"]["errno"] == errno.EPERM
    assert seen["execv"]["errno"] == errno.EPERM
    assert seen["raise_memory_limit"]["error"] in ("ValueError", "PermissionError")
    assert seen["chroot"]["errno"] == errno.EPERM


async def test_only_unix_sockets_can_be_created() -> None:
    async with sandbox() as box:
        seen = await box.output("sockets")
    for family in ("inet", "inet6", "netlink", "packet"):
        assert seen[family]["errno"] == errno.EAFNOSUPPORT, family
    assert seen["ctypes_inet"] == {"result": -1, "errno": errno.EAFNOSUPPORT}
    assert seen["unix"] == {"ok": None}


async def test_fork_is_stopped_by_seccomp() -> None:
    """The fork tests above fail when the filter is off: seccomp is what stops it."""
    async with sandbox(disabled=("seccomp",)) as box:
        assert box.pool.report["seccomp"].available is False
        assert await box.output("fork_loop", 3) == {"forked": 3, "errors": []}


def test_the_filter_counts_the_rules_it_holds() -> None:
    """In a process of its own (the filter is for good): every denied call this architecture
    has gets a rule, plus the four with conditions or their own answer."""
    import subprocess
    import sys

    from forecourt.plugins.sandbox import seccomp

    if not seccomp.library_available():
        pytest.fail("libseccomp is not available on this machine")
    program = (
        "import ctypes, json\n"
        "from forecourt.plugins.sandbox import seccomp\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS\n"
        "lib = seccomp._load()\n"
        "resolve = lib.seccomp_syscall_resolve_name\n"
        "known = [n for n in seccomp.DENIED if resolve(n.encode()) != -1]\n"
        "print(json.dumps([seccomp.install(), len(known), seccomp.active()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    installed, known, active = json.loads(done.stdout)
    assert active
    assert installed == known + 4
