"""Landlock: the kernel's unprivileged filesystem (and TCP) access control.

A worker restricts itself, once, to an allowlist: read (and map) the paths it was given,
write only its private directory, bind and connect no TCP port, and (ABI 6 and later) send
no signal and reach no abstract Unix socket outside its own domain. The restriction is
inherited by every thread and cannot be lifted. Landlock checks the operation on the final
file, so it holds whatever a plugin does with ``ctypes`` or symlinks.

Called through ``ctypes`` (the syscalls have no libc wrappers); standard library only, because
this runs inside the worker.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

SYS_CREATE_RULESET = 444  # the same number on every architecture (unified syscall table)
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# Filesystem access rights, and the ABI version that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # valid on a non-directory
READ_RIGHTS = EXECUTE | READ_FILE | READ_DIR


class LandlockError(OSError):
    """Landlock is missing, or refused a step of the restriction."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when Landlock is missing or disabled."""
    version = int(_libc.syscall(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION))
    return max(version, 0)


def handled_fs(abi: int) -> int:
    """Every filesystem right ``abi`` knows: all of them are denied unless a rule allows them."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(
    read: Iterable[str], write: Iterable[str], *, read_write_files: Iterable[str] = ()
) -> int:
    """Restrict this process: read ``read``, read and write ``write`` and ``read_write_files``.

    ``read`` and ``write`` are files or directory trees. Everything else on the filesystem is
    denied, as are TCP bind and connect (ABI 4) and signals and abstract Unix sockets beyond
    this domain (ABI 6). Missing paths are skipped. The caller must have set no_new_privs.
    Returns the ABI version used; raises :class:`LandlockError`.
    """
    abi = abi_version()
    if abi < 1:
        raise LandlockError("Landlock is not available in this kernel")
    fs_rights = handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=fs_rights)
    size = 8
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = int(_libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), size, 0))
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        for path in read:
            _allow(ruleset, path, READ_RIGHTS & fs_rights)
        for path in write:
            _allow(ruleset, path, fs_rights)
        for path in read_write_files:
            _allow(ruleset, path, READ_FILE | WRITE_FILE)
        if _libc.syscall(SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if _libc.syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise _error(f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _error(step: str) -> LandlockError:
    errno = ctypes.get_errno()
    return LandlockError(errno, f"{step}: {os.strerror(errno)}")
