"""The sandbox's value objects: what one call may use, what one worker runs, how the pool runs.

- :class:`Limits`: per-call wall clock and the kernel resource limits of a worker.
- :class:`WorkerSpec`: one plugin version: its files, entry point, dependencies, hosts, and
  what of the host it may see (host-wide statistics, declared Unix sockets).
- :class:`SandboxConfig`: the installation's choices: sandbox user, pool sizes, what
  protections are required, the egress proxy's SSRF policy, the tasks a worker may hold and
  how long unused workers are kept.

All are frozen and checked on construction (``ValueError`` naming the field).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

NOBODY = 65534  # uid and gid of the unprivileged "nobody" user
MAX_SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes, the last one a NUL
MIN_MEMORY_MIB = 64  # below this the Python interpreter cannot start
MIN_THREADS = 4  # a worker's main thread, and a few for the plugin
MAX_THREADS = 4096
PROTECTION_NAMES = (
    "threads",
    "user",
    "no_new_privs",
    "rlimits",
    "network_namespace",
    "mount_namespace",
    "landlock",
    "seccomp",
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# Entry points: ``module.path:function`` (python) and ``dir/file.wasm:export`` (wasm).
PYTHON_ENTRY_RE = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT})$")
WASM_ENTRY_RE = re.compile(rf"^((?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+\.wasm):({_IDENT})$")


@dataclass(frozen=True)
class Limits:
    """What one call of a plugin may use."""

    timeout_s: float = 30.0  # wall clock per call; over it the worker is killed ("timeout")
    cpu_s: int = 30  # CPU seconds per call (RLIMIT_CPU, re-armed before each call)
    memory_mib: int = 256  # address space of the worker (RLIMIT_AS)
    file_mib: int = 64  # largest file the plugin may write (RLIMIT_FSIZE)
    open_files: int = 64  # file descriptors (RLIMIT_NOFILE)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if self.cpu_s < 1:
            raise ValueError("cpu_s must be at least 1")
        if self.memory_mib < MIN_MEMORY_MIB:
            raise ValueError(f"memory_mib must be at least {MIN_MEMORY_MIB}")
        if self.file_mib < 1:
            raise ValueError("file_mib must be at least 1")
        if self.open_files < 16:
            raise ValueError("open_files must be at least 16")


@dataclass(frozen=True)
class WorkerSpec:
    """One plugin version, as the pool runs it; ``key`` names its pool of workers."""

    key: str  # e.g. "com.example.upper@1.2.0"
    package_dir: Path  # the plugin's files, read-only inside the sandbox
    entry_point: str  # python "module:function"; wasm "file.wasm:export"
    runtime: Literal["python", "wasm"] = "python"
    site_dirs: tuple[Path, ...] = ()  # the plugin's installed dependencies, read-only
    network_hosts: tuple[str, ...] = ()  # "host" or "host:port", reachable via egress only
    limits: Limits = field(default_factory=Limits)
    host_metrics: bool = False  # a procfs with the host-wide statistics files
    unix_sockets: tuple[str, ...] = ()  # absolute paths of sockets bound in at the same place

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("key must not be empty")
        if self.runtime not in ("python", "wasm"):
            raise ValueError("runtime must be 'python' or 'wasm'")
        pattern = PYTHON_ENTRY_RE if self.runtime == "python" else WASM_ENTRY_RE
        if not pattern.fullmatch(self.entry_point) or ".." in self.entry_point.split("/"):
            raise ValueError(f"entry_point {self.entry_point!r} is not valid for {self.runtime}")
        object.__setattr__(self, "site_dirs", tuple(Path(p) for p in self.site_dirs))
        object.__setattr__(self, "network_hosts", tuple(self.network_hosts))
        object.__setattr__(self, "unix_sockets", tuple(self.unix_sockets))
        for path in self.unix_sockets:
            problem = socket_path_problem(path)
            if problem:
                raise ValueError(f"unix socket {path!r} {problem}")


def socket_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a Unix socket a plugin declares, or None."""
    if not path.startswith("/") or path == "/":
        return "must be an absolute path to a socket"
    if os.path.normpath(path) != path or path.startswith("//"):
        return "must be a normalised path: no '.', '..', '//' or trailing '/'"
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        return "must not contain control characters"
    if len(path.encode()) > MAX_SOCKET_PATH_BYTES:
        return f"is over the {MAX_SOCKET_PATH_BYTES} bytes a socket path can have"
    return None


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How this installation runs plugins."""

    uid: int = NOBODY  # plugin code runs as this user when Forecourt is root
    gid: int = NOBODY
    work_root: Path  # per-worker private directories are made here
    warm_workers: int = 1  # idle workers kept per key
    max_workers_per_key: int = 4  # concurrent calls per key
    require: Literal["all", "available"] = "available"  # "all": refuse if a protection is missing
    allow_private: str = "false"  # FORECOURT_WEBHOOK_ALLOW_PRIVATE, for the egress proxy
    disabled: tuple[str, ...] = ()  # protections switched off (reported as unavailable)
    max_threads: int = 64  # tasks (threads, processes) one worker may hold at once
    idle_timeout_s: float = 300.0  # a key unused this long has its idle workers stopped

    def __post_init__(self) -> None:
        if not MIN_THREADS <= self.max_threads <= MAX_THREADS:
            raise ValueError(f"max_threads must be between {MIN_THREADS} and {MAX_THREADS}")
        if not self.idle_timeout_s > 0:
            raise ValueError("idle_timeout_s must be positive")
        if self.uid == 0 or self.gid == 0:
            raise ValueError("uid and gid must not be 0: plugin code never runs as root")
        if not 0 <= self.warm_workers <= self.max_workers_per_key:
            raise ValueError("warm_workers must be between 0 and max_workers_per_key")
        if self.max_workers_per_key < 1:
            raise ValueError("max_workers_per_key must be at least 1")
        if self.require not in ("all", "available"):
            raise ValueError("require must be 'all' or 'available'")
        unknown = set(self.disabled) - set(PROTECTION_NAMES)
        if unknown:
            raise ValueError(f"disabled names unknown protections: {sorted(unknown)}")
        object.__setattr__(self, "work_root", Path(self.work_root))
        object.__setattr__(self, "disabled", tuple(self.disabled))
