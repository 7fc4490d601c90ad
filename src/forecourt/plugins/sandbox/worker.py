"""The program inside a worker process: confine itself, load the entry point, serve calls.

Forecourt sends frames (:mod:`forecourt_plugin._wire`) on one pipe and reads answers on
another; the plugin's stdout and stderr are a third pipe, read as logs. The first frame is the
setup (the :class:`~.confine.Plan` and the entry point); the worker answers ``ready`` (with
what each protection did) or ``refused`` (a required protection is missing; it then exits).
Every later frame is a call, answered by one result, in order, until the call pipe closes.

Standard library only (plus :mod:`forecourt_plugin`): nothing of Forecourt's server runs here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import site
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

import forecourt_plugin
from forecourt.plugins.sandbox import confine
from forecourt_plugin import _wire

MAX_ERROR_MESSAGE_CHARS = 4096
EXIT_REFUSED = 2

Entry = Callable[[Any], Any]


def serve(control_in: int, control_out: int) -> int:
    """Run the worker until its call pipe closes; the process exit status."""
    parent = os.getppid()
    setup = _wire.read_frame(control_in)
    if setup is None:
        return 0
    plan = confine.Plan.from_message(setup["plan"])
    runtime: ModuleType | None = None
    if setup["runtime"] == "wasm" and not setup["probe"]:
        from forecourt.plugins.sandbox import wasm  # now: these files vanish with confinement

        wasm.prepare(setup["wasmtime_site"])
        runtime = wasm
    protections = confine.confine(plan)
    if os.getppid() != parent:  # Forecourt died before the death signal was armed
        return EXIT_REFUSED
    if setup["require_all"] and not all(p["available"] for p in protections.values()):
        _wire.write_frame(control_out, {"type": "refused", "protections": protections})
        return EXIT_REFUSED
    for stream in (sys.stdout, sys.stderr):  # one write per line keeps the two in order
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    forecourt_plugin._start(plan.egress_socket)
    sys.path.insert(0, setup["package_dir"])
    for site_dir in setup["site_dirs"]:  # after the standard library, with their .pth files
        site.addsitedir(site_dir)
    entry, entry_error = (None, None) if setup["probe"] else _load(setup, runtime)
    ready = {"type": "ready", "pid": os.getpid(), "protections": protections}
    _wire.write_frame(control_out, {**ready, "entry_error": entry_error})
    while (request := _wire.read_frame(control_in)) is not None:
        frame = memoryview(_answer(request, entry, entry_error))
        while frame:
            frame = frame[os.write(control_out, frame) :]
    return 0


def _load(
    setup: dict[str, Any], runtime: ModuleType | None
) -> tuple[Entry | None, dict[str, str] | None]:
    """The entry point's callable, or why it could not be loaded."""
    target, _, name = setup["entry_point"].rpartition(":")
    try:
        if runtime is not None:
            path = os.path.join(setup["package_dir"], target)
            entry: Entry = runtime.load(path, name, setup)
            return entry, None
        module = importlib.import_module(target)
        function = getattr(module, name)
        if not callable(function):
            raise TypeError(f"{setup['entry_point']} is not callable")
        return function, None
    except BaseException as exc:  # whatever the plugin's import raised
        traceback.print_exc()
        sys.stderr.flush()
        return None, _describe(exc)


def _answer(
    request: dict[str, Any], entry: Entry | None, entry_error: dict[str, str] | None
) -> bytes:
    """Run one call; its result, as a frame."""
    result: dict[str, Any] = {"type": "result", "id": request.get("id")}
    forecourt_plugin._begin_call(request.get("config") or {})
    try:
        if entry is None:
            result.update(status="error", **(entry_error or _no_entry()))
        else:
            output = entry(request.get("input"))
            json.dumps(output, allow_nan=False)
            result.update(status="ok", output=output)
    except MemoryError:
        result.update(status="error", error_class="MemoryError", error_message="out of memory")
    except BaseException as exc:  # a plugin may raise anything, even SystemExit
        traceback.print_exc()
        result.update(status="error", **_describe(exc))
    finally:
        metrics, events = forecourt_plugin._end_call()
        _flush()
    result.update(metrics=metrics, events=events)
    try:
        return _wire.encode(result)
    except ValueError as exc:
        too_large = {"error_class": "OutputTooLarge", "error_message": str(exc)}
        return _wire.encode({**result, "status": "error", "output": None, **too_large})


def _describe(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    message = str(exc)
    if isinstance(exc, TypeError) and "JSON serializable" in message:
        message = f"the output is not JSON-serialisable: {message}"
    return {"error_class": name, "error_message": message[:MAX_ERROR_MESSAGE_CHARS]}


def _no_entry() -> dict[str, str]:
    return {"error_class": "RuntimeError", "error_message": "the worker has no entry point"}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
