"""A pids cgroup per worker: the kernel's count of its tasks (threads and processes), capped.

A worker whose plugin starts threads without end would fill the host's process table; a
cgroup of the ``pids`` controller caps what one worker may hold at ``pids.max``, whatever
user it runs as (``RLIMIT_NPROC``, the fallback, counts every process of a uid, so all the
workers that share the sandbox user share it too).

Forecourt makes ``forecourt-sandbox-<pid>/`` under its own cgroup of the pids hierarchy and,
in it, one cgroup per worker, named after the worker's directory. The worker is moved into
its cgroup before it reads its setup (so before any code of its own runs a thread), and checks
from inside that it is there (:mod:`.confine`). The cgroup goes when the worker's directories
do. Both hierarchies are supported: cgroup v1 (a ``pids`` mount) and v2 (where ``pids`` must
be enabled in the subtree of Forecourt's cgroup, which the kernel allows only when that
cgroup holds no process of its own, as in most containers' root cgroup). Where neither can be
written (not root, a read-only ``/sys/fs/cgroup``), :func:`hierarchy` is None and workers fall
back to the next bound.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PREFIX = "forecourt-sandbox-"


@functools.cache
def hierarchy() -> Path | None:
    """The directory worker cgroups are made in (made now), or None where there is none."""
    if os.geteuid() != 0:
        return None
    for candidate in (_v1, _v2):
        with contextlib.suppress(OSError):
            found = candidate()
            if found is not None:
                atexit.register(remove, found)  # empty by then: every worker is gone
                return found
    return None


def _v1() -> Path | None:
    mount = CGROUP_ROOT / "pids"
    own = _own("pids")
    if own is None or not (mount / "cgroup.procs").exists():
        return None
    parent = mount / own.lstrip("/") / f"{GROUP_PREFIX}{os.getpid()}"
    parent.mkdir(exist_ok=True)
    return parent


def _v2() -> Path | None:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    own = _own("")
    if own is None or not controllers.exists() or "pids" not in controllers.read_text().split():
        return None
    base = CGROUP_ROOT / own.lstrip("/")
    if "pids" not in (base / "cgroup.subtree_control").read_text().split():
        (base / "cgroup.subtree_control").write_text("+pids")  # EBUSY if it holds processes
    parent = base / f"{GROUP_PREFIX}{os.getpid()}"
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text("+pids")
    return parent


def _own(controller: str) -> str | None:
    """This process's cgroup in the hierarchy of ``controller`` ("": the v2 hierarchy)."""
    with open("/proc/self/cgroup") as file:
        for line in file:
            _, names, path = line.rstrip("\n").split(":", 2)
            if (controller == "" and names == "") or controller in names.split(","):
                return path
    return None


def create(name: str, max_tasks: int) -> Path | None:
    """A cgroup for one worker that may hold at most ``max_tasks`` tasks; None if there is no
    pids hierarchy here or it could not be made."""
    parent = hierarchy()
    if parent is None:
        return None
    group = parent / name
    try:
        group.mkdir()
    except OSError:  # taken (a worker of another work_root by that name), or not allowed
        return None
    try:
        (group / "pids.max").write_text(str(max_tasks))
    except OSError:
        remove(group)
        return None
    return group


def attach(group: Path, pid: int) -> None:
    """Move process ``pid`` (a worker not yet running code of its own) into ``group``."""
    (group / "cgroup.procs").write_text(str(pid))


def relative(group: Path) -> str:
    """``group`` as its members read it in ``/proc/self/cgroup``."""
    mount = CGROUP_ROOT / "pids" if (CGROUP_ROOT / "pids").is_dir() else CGROUP_ROOT
    if not group.is_relative_to(mount):
        mount = CGROUP_ROOT
    return "/" + str(group.relative_to(mount))


def remove(group: Path) -> None:
    """Remove a worker's cgroup (its processes have exited; nothing happens if it is gone)."""
    with contextlib.suppress(OSError):
        group.rmdir()
