"""What protections this host gives plugin workers, found by trying them.

:func:`detect` starts one probe worker with the installation's configuration and an empty
plugin; the worker applies every protection exactly as a real worker does and reports, step by
step, what took effect and why not (:mod:`.confine`). Nothing is inferred from kernel versions
or configuration files, so the report cannot claim a protection the kernel refused. The probe
runs once per configuration (about 0.1 s) and is cached.

The report is what an admin sees (``to_dict()``), and what ``require="all"`` checks.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import select
import subprocess
from dataclasses import dataclass
from typing import Any

from forecourt.plugins.sandbox import layout
from forecourt.plugins.sandbox.limits import PROTECTION_NAMES, SandboxConfig, WorkerSpec
from forecourt_plugin import _wire

PROBE_TIMEOUT_S = 15.0
WASM_RUNTIME = "wasm_runtime"


@dataclass(frozen=True)
class Protection:
    """One protection: whether plugin workers get it here, and the evidence."""

    name: str
    available: bool
    detail: str
    required: bool = True  # counted by ``complete`` (the wasm runtime is optional)


@dataclass(frozen=True)
class SandboxReport:
    """Every protection, as found on this host for one configuration."""

    protections: tuple[Protection, ...]

    def __getitem__(self, name: str) -> Protection:
        for protection in self.protections:
            if protection.name == name:
                return protection
        raise KeyError(name)

    @property
    def complete(self) -> bool:
        """Whether every required protection is available."""
        return not self.missing

    @property
    def missing(self) -> tuple[str, ...]:
        """The required protections that are not available."""
        return tuple(p.name for p in self.protections if p.required and not p.available)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON: ``{"complete": bool, "protections": {name: {...}}}``."""
        return {
            "complete": self.complete,
            "protections": {
                p.name: {"available": p.available, "detail": p.detail, "required": p.required}
                for p in self.protections
            },
        }

    @classmethod
    def from_outcome(cls, outcome: dict[str, Any]) -> SandboxReport:
        """A report from a worker's account of its confinement, plus the wasm runtime."""
        protections = []
        for name in PROTECTION_NAMES:
            found = outcome.get(name)
            if isinstance(found, dict):
                available, detail = bool(found.get("available")), str(found.get("detail", ""))
            else:
                available, detail = False, "not reported by the worker"
            protections.append(Protection(name, available, detail))
        protections.append(wasm_runtime())
        return cls(tuple(protections))


def wasm_runtime() -> Protection:
    """Whether ``runtime="wasm"`` plugins can run (the ``wasmtime`` package is installed)."""
    if importlib.util.find_spec("wasmtime") is None:
        return Protection(WASM_RUNTIME, False, "the wasmtime package is not installed", False)
    version = importlib.metadata.version("wasmtime")
    return Protection(WASM_RUNTIME, True, f"wasmtime {version}: fuel and memory caps", False)


def detect(config: SandboxConfig, *, refresh: bool = False) -> SandboxReport:
    """The protections workers get under ``config`` on this host (cached; ``refresh`` re-probes)."""
    if refresh:
        _detect.cache_clear()
    return _detect(dataclasses.replace(config, require="available"))


@functools.lru_cache(maxsize=16)
def _detect(config: SandboxConfig) -> SandboxReport:
    try:
        outcome = _probe(config)
    except (OSError, _wire.FrameError, TimeoutError) as exc:
        failed = {
            name: {"available": False, "detail": f"the probe failed: {exc}"}
            for name in PROTECTION_NAMES
        }
        return SandboxReport.from_outcome(failed)
    return SandboxReport.from_outcome(outcome)


def _probe(config: SandboxConfig) -> dict[str, Any]:
    """Start a worker with an empty plugin; its report of each protection."""
    dirs = layout.WorkerDirs.create(config)
    try:
        package = dirs.base / "package"
        package.mkdir(mode=0o755)
        spec = WorkerSpec(key="probe", package_dir=package, entry_point="probe:probe")
        setup = layout.setup_message(spec, config, dirs, egress=False, probe=True)
        started = layout.start(dirs)
        try:
            _wire.write_frame(started.calls, setup)
            readable, _, _ = select.select([started.results], [], [], PROBE_TIMEOUT_S)
            if not readable:
                raise TimeoutError(f"the probe worker did not answer within {PROBE_TIMEOUT_S} s")
            answer = _wire.read_frame(started.results)
        finally:
            for fd in (started.calls, started.results, started.logs):
                os.close(fd)
            _reap(started.process)
        if not isinstance(answer, dict) or not isinstance(answer.get("protections"), dict):
            raise _wire.FrameError("the probe worker exited without a report")
        outcome: dict[str, Any] = answer["protections"]
        return outcome
    finally:
        dirs.remove()


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
