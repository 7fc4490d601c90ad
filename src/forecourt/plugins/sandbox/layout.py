"""How a worker is laid out and started: its directories, its filesystem view, its command line.

Each worker gets a directory of its own under ``work_root``::

    <work_root>/w-XXXX/        mode 0711, owned by Forecourt
        root/                  empty: the worker mounts its new root filesystem here
        tmp/                   the plugin's working directory (a private tmpfs inside)
        egress.sock            the egress proxy's socket, when the plugin declared hosts

Inside the worker only the paths of :func:`read_only_paths` exist, read-only, at the same
places as outside, plus ``tmp/``, the egress socket and the Unix sockets the plugin declared.
The worker is started with a clean environment (no ``FORECOURT_`` variable, no secret) and
Python's isolated mode.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forecourt
import forecourt_plugin
from forecourt.plugins.sandbox import _host, pids
from forecourt.plugins.sandbox.limits import SandboxConfig, WorkerSpec

SYSTEM_PATHS = (
    "/lib",
    "/lib32",
    "/lib64",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
PRIVATE_DIR_FACTOR = 2  # the private tmpfs holds this many files at the file-size cap
MIN_PRIVATE_MIB = 16
WORKER_PATH = "/usr/bin:/bin"
# A worker's RLIMIT_CPU is the per-call limit plus this slack; a worker that has used more
# than the slack in total is replaced, so every call gets between cpu_s and cpu_s + 2 s.
CPU_SLACK_S = 1


@dataclass(frozen=True)
class WorkerDirs:
    """The directories of one worker (see the module docstring), and its pids cgroup."""

    base: Path
    cgroup: Path | None = None  # caps the worker's tasks (:mod:`.pids`), where there is one

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def private(self) -> Path:
        return self.base / "tmp"

    @property
    def egress_socket(self) -> Path:
        return self.base / "egress.sock"

    @classmethod
    def create(cls, config: SandboxConfig) -> WorkerDirs:
        """Make a fresh set under ``config.work_root``."""
        config.work_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="w-", dir=config.work_root))
        bounded = "threads" not in config.disabled
        dirs = cls(base, pids.create(base.name, config.max_threads) if bounded else None)
        dirs.base.chmod(0o711)
        dirs.root.mkdir(mode=0o755)
        dirs.private.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(dirs.private, config.uid, config.gid)
        return dirs

    def remove(self) -> None:
        """Delete the directories and the cgroup (the worker must have exited)."""
        shutil.rmtree(self.base, ignore_errors=True)
        if self.cgroup is not None:
            pids.remove(self.cgroup)


def python_paths() -> tuple[str, ...]:
    """The standard library of the interpreter workers run (not the virtualenv's packages)."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    paths = {sysconfig.get_path(name, vars=base) for name in ("stdlib", "platstdlib")}
    return tuple(sorted(os.path.realpath(p) for p in paths if os.path.isdir(p)))


def read_only_paths(spec: WorkerSpec, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every path a worker of ``spec`` may read: system libraries, Python, the plugin's files."""
    plugin = [spec.package_dir, *spec.site_dirs]
    paths = [*SYSTEM_PATHS, *python_paths(), *(os.path.realpath(p) for p in plugin), *extra]
    return tuple(dict.fromkeys(p for p in paths if os.path.lexists(p)))


def setup_message(
    spec: WorkerSpec,
    config: SandboxConfig,
    dirs: WorkerDirs,
    *,
    egress: bool,
    probe: bool = False,
    extra_read_only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The first frame a worker reads: its plan of confinement and what to load."""
    limits = spec.limits
    wasmtime_site = None
    if spec.runtime == "wasm":
        package = wasmtime_package()
        extra_read_only = (*extra_read_only, package)
        wasmtime_site = os.path.dirname(package)
    plan = {
        "userns": use_user_namespace(),
        "uid": config.uid,
        "gid": config.gid,
        "disabled": list(config.disabled),
        "new_root": str(dirs.root),
        "private_dir": str(dirs.private),
        "private_mib": max(limits.file_mib * PRIVATE_DIR_FACTOR, MIN_PRIVATE_MIB),
        "read_only": list(read_only_paths(spec, extra_read_only)),
        "devices": [d for d in DEVICES if os.path.exists(d)],
        "egress_socket": str(dirs.egress_socket) if egress else None,
        "cpu_s": limits.cpu_s + CPU_SLACK_S,
        "memory_mib": limits.memory_mib,
        "file_mib": limits.file_mib,
        "open_files": limits.open_files,
        "host_metrics": spec.host_metrics,
        "unix_sockets": list(spec.unix_sockets),
        "max_threads": config.max_threads,
        "pids_cgroup": None if dirs.cgroup is None else pids.relative(dirs.cgroup),
    }
    return {
        "type": "setup",
        "plan": plan,
        "require_all": config.require == "all",
        "probe": probe,
        "site_dirs": [os.path.realpath(p) for p in spec.site_dirs],
        "package_dir": os.path.realpath(spec.package_dir),
        "entry_point": spec.entry_point,
        "runtime": spec.runtime,
        "cpu_s": limits.cpu_s,
        "memory_mib": limits.memory_mib,
        "wasmtime_site": wasmtime_site,
    }


def use_user_namespace() -> bool:
    """Whether workers confine themselves through a user namespace (Forecourt is not root)."""
    return os.geteuid() != 0


def wasmtime_package() -> str:
    """The directory of the installed ``wasmtime`` package (``LookupError`` if it is missing)."""
    found = importlib.util.find_spec("wasmtime")
    if found is None or not found.submodule_search_locations:
        raise LookupError("the wasmtime package is not installed")
    return os.path.realpath(found.submodule_search_locations[0])


def command(control_in: int, control_out: int) -> list[str]:
    """The worker's command line, given the child's ends of the call pipes."""
    forecourt_dir = Path(forecourt.__file__).resolve().parent
    api_dir = Path(forecourt_plugin.__file__).resolve().parent.parent
    return [
        sys.executable,
        "-I",  # ignore PYTHON* variables and the user's site directory
        "-S",  # no site: no virtualenv packages on sys.path
        "-B",  # write no bytecode
        "-X",
        "utf8",
        str(Path(_host.__file__).resolve()),
        str(forecourt_dir),
        str(api_dir),
        str(control_in),
        str(control_out),
    ]


def environment(dirs: WorkerDirs) -> dict[str, str]:
    """The worker's whole environment: nothing is inherited from Forecourt's."""
    private = str(dirs.private)
    return {"PATH": WORKER_PATH, "HOME": private, "TMPDIR": private, "LANG": "C.UTF-8"}


@dataclass
class Started:
    """A worker process just started, with Forecourt's ends of its three pipes."""

    process: subprocess.Popen[bytes]
    calls: int  # Forecourt writes call frames here
    results: int  # and reads result frames here
    logs: int  # the plugin's stdout and stderr


def start(dirs: WorkerDirs) -> Started:
    """Start a worker process; it waits for its setup frame on ``calls``."""
    opened: list[int] = []
    try:
        for _ in range(3):
            opened += os.pipe2(os.O_CLOEXEC)
        child_calls, calls, results, child_results, logs, child_logs = opened
        process = subprocess.Popen(
            command(child_calls, child_results),
            stdin=subprocess.DEVNULL,
            stdout=child_logs,
            stderr=child_logs,
            pass_fds=(child_calls, child_results),
            env=environment(dirs),
            cwd=dirs.base,
            start_new_session=True,
        )
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    for fd in (child_calls, child_results, child_logs):
        os.close(fd)
    if dirs.cgroup is not None:
        # Before the worker reads its setup, so before it runs anything of its own; if this
        # fails, the worker finds itself outside the cgroup and takes the next bound.
        with contextlib.suppress(OSError):
            pids.attach(dirs.cgroup, process.pid)
    return Started(process, calls, results, logs)
