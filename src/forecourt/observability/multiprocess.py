"""prometheus_client's multiprocess mode for ``forecourt serve`` and ``forecourt worker``.

Every process that shares a data folder writes its metric values to memory-mapped files in
``DATA_DIR/prometheus`` (``FORECOURT_PROMETHEUS_DIR``), named with its pid; a scrape of any
of them merges every file, so counters add up across the API nodes and workers of a host.
``prepare()`` must run before ``prometheus_client`` is first imported, which reads
``PROMETHEUS_MULTIPROC_DIR`` once.

The folder's life, under a lock so processes starting together agree:

- a process starting while no process of the folder is alive wipes it (a new run starts
  from zero, as Prometheus expects of a restart);
- otherwise it only takes away the live gauges of processes that are gone
  (``mark_process_dead``); their counters and histograms stay, so a total never goes down
  while the installation runs;
- a process that stops takes away its own live gauges.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import sys
from pathlib import Path

from forecourt.settings import ensure_private_dir

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".lock"
MARKER_PREFIX = "live-"
_PID = re.compile(r"_(\d+)\.db$")


def prepare(path: Path) -> Path:
    """Make ``path`` this process's multiprocess folder (unless one was set already) and
    tidy it; return the folder in use."""
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    existing = os.environ.get(MULTIPROC_ENV)
    folder = Path(existing) if existing else path
    # The files are created by prometheus_client with the umask's mode: the folder (0700)
    # is what keeps them the owner's.
    ensure_private_dir(folder, tighten=True)
    # Before anything imports prometheus_client (its value class is chosen at import).
    os.environ[MULTIPROC_ENV] = str(folder)
    pid = os.getpid()
    with (folder / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pids = _pids(folder) - {pid}
        alive = {p for p in pids if _alive(p)}
        if not alive:
            for entry in folder.iterdir():
                if entry.name != LOCK_FILE:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        else:
            for dead in pids - alive:
                _forget(folder, dead)
        (folder / f"{MARKER_PREFIX}{pid}").touch()
    atexit.register(_stopped, folder, pid)
    return folder


def _pids(folder: Path) -> set[int]:
    pids = set()
    for entry in folder.iterdir():
        if entry.name.startswith(MARKER_PREFIX):
            with contextlib.suppress(ValueError):
                pids.add(int(entry.name[len(MARKER_PREFIX) :]))
        elif (match := _PID.search(entry.name)) is not None:
            pids.add(int(match.group(1)))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget(folder: Path, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        (folder / f"{MARKER_PREFIX}{pid}").unlink()


def _stopped(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the hook
        with contextlib.suppress(OSError):
            _forget(folder, pid)
