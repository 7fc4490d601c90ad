"""The plugin sandbox: each plugin version runs in worker processes confined by the kernel.

Forecourt never runs plugin code in its own process. A :class:`WorkerPool` starts workers
(a small standalone program, :mod:`.worker`) with a clean environment; each worker confines
itself (:mod:`.confine`: namespaces, a read-only root filesystem, resource limits, an
unprivileged user, no_new_privs, :mod:`.landlock`, :mod:`.seccomp`) before it imports the
plugin, then serves calls over its own pipes (:mod:`.protocol`). Declared network hosts are
reached through the egress proxy only (:mod:`.egress`); WebAssembly plugins run in wasmtime
inside the same kind of worker (:mod:`.wasm`). :func:`detect` reports which protections this
host actually gives (:mod:`.capabilities`). See ``docs/plugins-sandbox.md``.

    pool = WorkerPool(SandboxConfig(work_root=data_dir / "sandbox"))
    await pool.start()
    spec = WorkerSpec(key="com.example.upper@1.2.0", package_dir=path, entry_point="upper:run")
    result = await pool.call(spec, input="hello", config={})
    result.status, result.output   # "ok", "HELLO"
    await pool.close()
"""

from __future__ import annotations

from forecourt.plugins.sandbox.capabilities import Protection, SandboxReport, detect
from forecourt.plugins.sandbox.limits import Limits, SandboxConfig, WorkerSpec
from forecourt.plugins.sandbox.pool import WorkerPool
from forecourt.plugins.sandbox.result import CallResult

__all__ = [
    "CallResult",
    "Limits",
    "Protection",
    "SandboxConfig",
    "SandboxReport",
    "WorkerPool",
    "WorkerSpec",
    "detect",
]
