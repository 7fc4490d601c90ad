"""Seccomp: the system calls a worker may not make, filtered by the kernel.

The filter allows by default and refuses (``EPERM`` unless noted) the calls a plugin has no
use for and a sandbox escape would need:

- new processes: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD`` (threads stay
  possible), ``clone3`` (``ENOSYS``, so the C library falls back to ``clone``), ``execve``;
- other processes' memory: ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``;
- namespaces and mounts: ``unshare``, ``setns``, ``mount`` and the new mount API,
  ``pivot_root``, ``chroot``;
- sockets other than ``AF_UNIX`` (``EAFNOSUPPORT``): the network goes through the egress
  proxy's Unix socket only;
- raising resource limits (``setrlimit``, ``prlimit64`` with a new limit);
- kernel surfaces: modules, ``kexec``, ``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``io_uring`` (its operations bypass seccomp), keyrings, clocks, ``reboot``, ``swapon``.

Built with libseccomp (``libseccomp.so.2``) through ``ctypes``, so it resolves system call
numbers for the running architecture and kills any call made through another one (x32,
32-bit). Standard library only, because this runs inside the worker.
"""

from __future__ import annotations

import ctypes
import errno
import functools

LIBRARY = "libseccomp.so.2"
ACT_ALLOW = 0x7FFF0000
ACT_ERRNO = 0x00050000  # | the errno to return
CMP_NE = 1
CMP_MASKED_EQ = 7
CLONE_THREAD = 0x00010000
AF_UNIX = 1
PR_GET_SECCOMP = 21
SECCOMP_MODE_FILTER = 2

DENIED = (
    "fork", "vfork", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise", "kcmp",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setrlimit", "personality", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "quotactl_fd", "open_by_handle_at", "name_to_handle_at", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm",
    "lookup_dcookie", "syslog", "uselib", "vhangup",
)  # fmt: skip


class SeccompError(OSError):
    """libseccomp is missing, or could not build or load the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def library_available() -> bool:
    """Whether libseccomp can be loaded here (loading it now, for :func:`install` later)."""
    try:
        _load()
    except SeccompError:
        return False
    return True


def install(*, threads: bool = True) -> int:
    """Load the filter into this process (and its future threads) for good; how many rules
    it holds (a system call this architecture lacks needs none).

    ``threads=False`` refuses ``clone`` altogether, threads included: the bound on a worker's
    tasks where nothing can count them. The caller must have set no_new_privs. Raises
    :class:`SeccompError`.
    """
    lib = _load()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise SeccompError(errno.ENOMEM, "seccomp_init failed")
    try:
        deny = ACT_ERRNO | errno.EPERM
        added = sum(_rule(lib, ctx, deny, name) for name in DENIED)
        if threads:
            added += _rule(lib, ctx, deny, "clone", _ArgCmp(0, CMP_MASKED_EQ, CLONE_THREAD, 0))
        else:
            added += _rule(lib, ctx, ACT_ERRNO | errno.EAGAIN, "clone")
        added += _rule(lib, ctx, ACT_ERRNO | errno.ENOSYS, "clone3")
        added += _rule(
            lib, ctx, ACT_ERRNO | errno.EAFNOSUPPORT, "socket", _ArgCmp(0, CMP_NE, AF_UNIX, 0)
        )
        added += _rule(lib, ctx, deny, "prlimit64", _ArgCmp(2, CMP_NE, 0, 0))
        status = lib.seccomp_load(ctx)
        if status < 0:
            raise SeccompError(-status, f"seccomp_load: {errno.errorcode.get(-status, status)}")
    finally:
        lib.seccomp_release(ctx)
    return added


def active() -> bool:
    """Whether this process runs under a seccomp filter."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == SECCOMP_MODE_FILTER)


def _rule(lib: ctypes.CDLL, ctx: int, action: int, name: str, *conditions: _ArgCmp) -> bool:
    """Add one rule; False when ``name`` is not a system call on this architecture."""
    number = int(lib.seccomp_syscall_resolve_name(name.encode()))
    if number == -1:
        return False
    array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
    status = int(lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array))
    if status < 0:
        raise SeccompError(-status, f"seccomp_rule_add({name}): {errno.errorcode.get(-status)}")
    return True


@functools.cache
def _load() -> ctypes.CDLL:
    """The library, loaded once (the worker loads it before its filesystem view shrinks)."""
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise SeccompError(errno.ENOENT, f"libseccomp is not installed ({exc})") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib
