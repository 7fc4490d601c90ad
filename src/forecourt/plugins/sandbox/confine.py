"""Confinement a worker applies to itself, in order, before any plugin code is imported.

1. **Namespaces**: a network namespace of its own (only a loopback interface, down: no
   route anywhere) and mount, IPC and UTS namespaces. When Forecourt is not root, a user
   namespace first, mapping Forecourt's uid to the sandbox uid, so the rest needs no privilege.
2. **Root filesystem**: a fresh tmpfs becomes ``/`` (``pivot_root``) holding only read-only
   binds of what the plugin needs (its package, its dependencies, the Python standard
   library, shared libraries), ``/dev/null`` and friends, the egress socket, and a private
   size-capped tmpfs as its working directory. The old root is detached: nothing else of the
   host (``/root``, ``/etc/shadow``, the data folder, other processes' sockets) exists.
   A plugin granted ``host_metrics`` gets a procfs with the host-wide statistics files and,
   read-only, the network device counters of Forecourt's network namespace; one granted
   ``unix_sockets`` gets each declared socket (a socket, nothing else) bound at its path.
0. **Tasks**: at most ``max_threads`` threads at once, counted by the worker's pids cgroup
   (:mod:`.pids`), else by ``RLIMIT_NPROC`` on the sandbox uid, else no thread at all
   (seccomp), so a plugin cannot fill the host's process table.
3. **Resource limits**: CPU seconds, address space, file size, open files, no core dumps.
4. **User**: supplementary groups dropped (but for the groups through which a declared
   socket is reachable), then gid and uid set to the unprivileged sandbox user, which clears
   every capability; the process is made non-dumpable.
5. **no_new_privs**, then **Landlock** (:mod:`.landlock`) and **seccomp** (:mod:`.seccomp`).

Each step reports whether it took effect; the worker refuses to run plugin code when the
admin requires every protection and one is missing. Standard library only: this runs inside
the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forecourt.plugins.sandbox import landlock, seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
CAPABILITY_VERSION_3 = 0x20080522
ROOT_TMPFS_OPTIONS = "size=1m,mode=0755"  # holds only mount points
PROC_OPTIONS = "hidepid=invisible,subset=pid"  # only processes this one may see, no /proc/sys
# host_metrics: still no other process, plus /proc/stat, /proc/meminfo, /proc/loadavg...
HOST_METRICS_PROC_OPTIONS = "hidepid=invisible"
# host_metrics: where the network device counters of Forecourt's network namespace appear, in
# the format of /proc/net/dev (the worker's own /proc/net shows its namespace: loopback only).
HOST_NETWORK_DIR = "/run/forecourt/host"
HOST_NET_DEV = HOST_NETWORK_DIR + "/net/dev"
MIB = 1024 * 1024
HOSTNAME = "sandbox"


_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Plan:
    """What the worker must do to itself; sent by Forecourt in the setup message."""

    userns: bool  # Forecourt is not root: isolate with a user namespace instead
    uid: int
    gid: int
    disabled: frozenset[str]
    new_root: str  # an empty directory to mount the new root on
    private_dir: str  # the working directory, a private tmpfs
    private_mib: int
    read_only: tuple[str, ...]  # files and directories, bound read-only at the same path
    devices: tuple[str, ...]
    egress_socket: str | None
    cpu_s: int
    memory_mib: int
    file_mib: int
    open_files: int
    host_metrics: bool = False  # a procfs with the host-wide statistics files
    unix_sockets: tuple[str, ...] = ()  # bound read-write at the same path, if sockets
    max_threads: int = 64  # tasks (threads) the worker may hold at once
    pids_cgroup: str | None = None  # the worker's pids cgroup, as /proc/self/cgroup names it

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Plan:
        """The plan in a setup message."""
        fields = dict(message)
        fields["disabled"] = frozenset(fields["disabled"])
        fields["read_only"] = tuple(fields["read_only"])
        fields["devices"] = tuple(fields["devices"])
        fields["unix_sockets"] = tuple(fields.get("unix_sockets", ()))
        return cls(**fields)


Outcome = dict[str, dict[str, Any]]  # protection -> {"available": bool, "detail": str}


def confine(plan: Plan) -> Outcome:
    """Apply every protection ``plan`` does not disable; what took effect, step by step."""
    seccomp.library_available()  # loaded now: the library is not visible after pivot_root
    steps: list[tuple[str, Callable[[Plan, Outcome], str]]] = [
        ("threads", _threads),  # first: it reads the host's /proc, and sets a limit as root
        ("network_namespace", _network_namespace),
        ("mount_namespace", _mount_namespace),
        ("rlimits", _rlimits),
        ("user", _user),
        ("no_new_privs", _no_new_privs),
        ("landlock", _landlock),
        ("seccomp", _seccomp),
    ]
    if plan.userns and "user" not in plan.disabled:
        steps.insert(0, ("user_namespace", _user_namespace))
    outcome: Outcome = {}
    for name, step in steps:
        if name in plan.disabled:
            outcome[name] = {"available": False, "detail": "disabled by the configuration"}
            continue
        try:
            detail = step(plan, outcome)
        except (OSError, ValueError) as exc:
            outcome[name] = {"available": False, "detail": f"failed: {exc}"}
        else:
            outcome[name] = {**outcome.get(name, {}), "available": True, "detail": detail}
    if plan.userns:
        outcome["user"] = _userns_user(outcome.pop("user_namespace", None), outcome.get("user"))
    threads = outcome["threads"]
    if threads.get("mechanism") == "seccomp" and not outcome["seccomp"]["available"]:
        threads.update(available=False, detail=f"no bound: {outcome['seccomp']['detail']}")
    return outcome


def _userns_user(namespace: dict[str, Any] | None, drop: dict[str, Any] | None) -> dict[str, Any]:
    """The user protection without root: never available, since every plugin shares one uid."""
    if namespace is None or drop is None:
        detail = "disabled by the configuration"
    elif not namespace["available"]:
        detail = f"no user namespace ({namespace['detail']})"
    elif not drop["available"]:
        detail = f"capabilities could not be dropped ({drop['detail']})"
    else:
        detail = f"{namespace['detail']}, capabilities dropped"
    return {
        "available": False,
        "detail": f"Forecourt is not root, so plugin code runs as its uid: {detail}",
    }


def _user_namespace(plan: Plan, done: Outcome) -> str:
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{plan.uid} {outer_uid} 1")
    _write("/proc/self/gid_map", f"{plan.gid} {outer_gid} 1")
    return f"uid {outer_uid} mapped to {plan.uid} in a user namespace"


def _threads(plan: Plan, done: Outcome) -> str:
    """Bound the tasks the worker may hold, with the first mechanism that works here: its
    pids cgroup, else RLIMIT_NPROC on the sandbox uid (as root only: without root the uid is
    Forecourt's own), else a seccomp filter that lets no thread start."""
    if plan.pids_cgroup is not None and _in_cgroup(plan.pids_cgroup):
        done["threads"] = {"mechanism": "pids_cgroup"}
        return f"a pids cgroup per worker: at most {plan.max_threads} tasks at once"
    if not plan.userns and "user" not in plan.disabled:
        resource.setrlimit(resource.RLIMIT_NPROC, (plan.max_threads, plan.max_threads))
        done["threads"] = {"mechanism": "rlimit_nproc"}
        return (
            f"RLIMIT_NPROC {plan.max_threads} on uid {plan.uid}: counts every task of that "
            "uid, shared by the workers that run as it (no pids cgroup here)"
        )
    done["threads"] = {"mechanism": "seccomp"}
    return "seccomp: no thread may be started (no pids cgroup, and no uid of its own)"


def _in_cgroup(path: str) -> bool:
    """Whether this process is in the pids cgroup ``path`` (v1 ``pids`` line or v2's)."""
    with open("/proc/self/cgroup") as file:
        for line in file:
            _, names, found = line.rstrip("\n").split(":", 2)
            if ("pids" in names.split(",") or names == "") and found == path:
                return True
    return False


def _network_namespace(plan: Plan, done: Outcome) -> str:
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    return "own network namespace: a loopback interface, down, and no route anywhere"


def _mount_namespace(plan: Plan, done: Outcome) -> str:
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _libc.sethostname(HOSTNAME.encode(), len(HOSTNAME))
    root = plan.new_root
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, ROOT_TMPFS_OPTIONS)
    exposed: list[str] = []
    for path in sorted(set(plan.read_only)):
        if any(path == done or path.startswith(done.rstrip("/") + "/") for done in exposed):
            continue
        if _expose(path, root):
            exposed.append(path)
    for device in plan.devices:
        if os.path.exists(device):
            _bind(device, root + device, MS_NOSUID)
    private = root + plan.private_dir
    os.makedirs(private, exist_ok=True)
    options = f"size={plan.private_mib}m,mode=0700,uid={plan.uid},gid={plan.gid}"
    _mount("tmpfs", private, "tmpfs", MS_NOSUID | MS_NODEV, options)
    if plan.egress_socket:
        _bind(plan.egress_socket, root + plan.egress_socket, MS_NOSUID | MS_NODEV)
    sockets = [path for path in plan.unix_sockets if _bind_socket(path, root)]
    os.makedirs(root + "/proc", exist_ok=True)
    options = HOST_METRICS_PROC_OPTIONS if plan.host_metrics else PROC_OPTIONS
    proc = _libc.mount(b"proc", (root + "/proc").encode(), b"proc", MS_NOSUID | MS_NODEV,
                       options.encode())  # fmt: skip
    network = plan.host_metrics and _bind_host_network_counters(root)
    os.chdir(root)
    _check(_libc.pivot_root(b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount2(old root)")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(plan.private_dir)
    extra = "" if proc == 0 else "; /proc is absent"
    if plan.host_metrics:
        extra += "; host-wide statistics in /proc" if proc == 0 else ""
        extra += f", host network counters in {HOST_NET_DEV}" if network else ""
    if plan.unix_sockets:
        extra += f"; unix sockets {sockets} of {list(plan.unix_sockets)} declared"
    return f"a new root with {len(exposed)} read-only paths and a private tmpfs{extra}"


def _rlimits(plan: Plan, done: Outcome) -> str:
    limits = {
        resource.RLIMIT_CPU: (plan.cpu_s, plan.cpu_s + 1),
        resource.RLIMIT_AS: (plan.memory_mib * MIB,) * 2,
        resource.RLIMIT_FSIZE: (plan.file_mib * MIB,) * 2,
        resource.RLIMIT_NOFILE: (plan.open_files,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for kind, (soft, hard) in limits.items():
        resource.setrlimit(kind, (soft, hard))
    return (
        f"cpu {plan.cpu_s} s, address space {plan.memory_mib} MiB, file size "
        f"{plan.file_mib} MiB, {plan.open_files} open files, no core dumps"
    )


def _user(plan: Plan, done: Outcome) -> str:
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if plan.userns:
        header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
        _check(_libc.capset(header, data), "capset")
        return "capabilities dropped"
    groups = socket_groups(plan.unix_sockets, plan.gid)
    os.setgroups(groups)
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    if 0 in os.getresuid() or sorted(os.getgroups()) != groups:
        raise OSError(f"still uid {os.getresuid()} with groups {os.getgroups()}")
    # Set after the uid change, which clears it: the worker dies with Forecourt.
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    extra = f"groups {groups} of its declared sockets" if groups else "no supplementary groups"
    return f"uid {plan.uid}, gid {plan.gid}, {extra}, no capabilities"


def socket_groups(paths: tuple[str, ...], gid: int) -> list[int]:
    """The groups through which the sockets at ``paths`` can be connected to (never group 0).

    A socket is reachable by the sandbox user through its group when the group may write it;
    a socket only root may use stays out of reach.
    """
    groups: set[int] = set()
    for path in paths:
        try:
            found = os.stat(path)
        except OSError:
            continue
        if stat.S_ISSOCK(found.st_mode) and found.st_mode & stat.S_IWGRP:
            groups.add(found.st_gid)
    return sorted(groups - {0, gid})


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _no_new_privs(plan: Plan, done: Outcome) -> str:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        raise OSError("no_new_privs did not stick")
    return "set: no exec can gain privileges"


def _landlock(plan: Plan, done: Outcome) -> str:
    read = [*plan.read_only, *plan.devices]
    if done.get("mount_namespace", {}).get("available"):
        # The worker's own procfs: itself only, and the host-wide statistics with host_metrics.
        # Without the mount namespace /proc is the host's, every process's: never allowed.
        read.append("/proc")
        if plan.host_metrics:
            read.append(HOST_NET_DEV)
    # Connecting to a socket writes to it. Sockets only: without the mount namespace a declared
    # path is the host's, whatever it names.
    writable_files = ["/dev/null", *(path for path in plan.unix_sockets if _is_socket(path))]
    abi = landlock.restrict(read, [plan.private_dir], read_write_files=writable_files)
    return f"ABI {abi}: read-only paths, writable private directory, no TCP, scoped signals"


def _seccomp(plan: Plan, done: Outcome) -> str:
    threads = done.get("threads", {}).get("mechanism") != "seccomp"
    rules = seccomp.install(threads=threads)
    if not seccomp.active():
        raise OSError("the filter is not active")
    return f"filter of {rules} system call rules"


def _bind_socket(path: str, root: str) -> bool:
    """Bind the socket at ``path`` to the same place under ``root``; False if it is missing or
    not a socket (a declared path never exposes a file or a directory)."""
    if _through_link(root, path):
        return False
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # not there now (the service is not running): the plugin finds nothing
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        # Through the descriptor: the inode just checked is the one bound, whatever the path
        # names by now. Read-write: connecting to a socket is a write.
        _bind(f"/proc/self/fd/{fd}", root + path, MS_NOSUID | MS_NODEV)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _bind_host_network_counters(root: str) -> bool:
    """Bind, read-only, the network device counters of Forecourt's (the parent's) network
    namespace at HOST_NET_DEV under ``root``; False if that failed.

    The file is bound, not a directory: nothing else of that namespace (its sockets, routes,
    connections) is visible, and the worker stays in its own namespace with no route out.
    """
    target = root + HOST_NET_DEV
    try:
        _bind(f"/proc/{os.getppid()}/net/dev", target, MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)  # an empty file would read as a host without interfaces
        return False
    return True


def _through_link(root: str, path: str) -> bool:
    """Whether a directory on the way to ``path`` under ``root`` is a symbolic link (one made
    by :func:`_expose` would lead out of the new root while it is being built)."""
    current = root
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return True
    return False


def _expose(path: str, root: str) -> bool:
    """Make ``path`` appear read-only at the same place under ``root``; False if missing."""
    if not os.path.lexists(path):
        return False
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return True
    _bind(path, target, MS_RDONLY | MS_NOSUID | MS_NODEV, directory=os.path.isdir(path))
    return True


def _bind(source: str, target: str, flags: int, *, directory: bool = False) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if directory:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def _mount(
    source: str | None, target: str, kind: str | None, flags: int, options: str | None = None
) -> None:
    encoded = [None if value is None else value.encode() for value in (source, target, kind)]
    data = None if options is None else options.encode()
    _check(_libc.mount(*encoded, flags, data), f"mount({source}, {target})")


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _check(status: int, step: str) -> None:
    if status != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{step}: {os.strerror(errno)}")
