"""WebAssembly plugins (``runtime="wasm"``), run by wasmtime inside an ordinary sandboxed worker.

The module runs with no access to the host but the functions Forecourt gives it as imports
(module ``forecourt``): ``log(ptr, len)``, ``metric(name_ptr, name_len, value: f64)`` and
``emit(type_ptr, type_len, data_ptr, data_len)`` (UTF-8 strings in its memory; ``data`` is
JSON). No WASI: no files, clock, randomness or network. Each call gets a fresh instance (no
state survives a call), a fuel budget derived from ``cpu_s`` (running out traps, the call fails
with ``wasm.FuelExhausted``) and a cap on linear memory; the worker's own limits still apply.

The export is called one of two ways:

- **JSON**: ``(func (param i32 i32) (result i64))`` with the module exporting ``memory`` and
  ``alloc(len) -> ptr``. The input's JSON is written at ``alloc(len)``; the export returns
  ``ptr << 32 | len`` of the output's JSON in memory.
- **numbers**: any other signature of numeric parameters and results; the input is a number or
  a list of numbers, the output a number, a list of them, or ``None``.

Standard library and wasmtime only: this runs inside the worker.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import forecourt_plugin

FUEL_PER_CPU_S = 500_000_000  # fuel units (about one per wasm instruction) per CPU second
MEMORY_SHARE = 2  # linear memory may use at most 1/MEMORY_SHARE of the worker's address space
MAX_WASM_STACK_BYTES = 512 * 1024
GUARD_BYTES = 64 * 1024
MIB = 1024 * 1024
HOST_MODULE = "forecourt"


class WasmTrap(Exception):
    """The module trapped (unreachable, out of bounds, division by zero, ...)."""

    __module__ = "wasm"


class FuelExhausted(WasmTrap):
    """The module used up its fuel: the per-call CPU limit of a wasm plugin."""

    __module__ = "wasm"


def prepare(site_dir: str) -> None:
    """Import wasmtime from ``site_dir`` before the worker's filesystem view shrinks."""
    sys.path.insert(0, site_dir)
    try:
        import wasmtime  # noqa: F401 - loads the native library while it is reachable
    finally:
        sys.path.remove(site_dir)


def load(path: str, export: str, setup: dict[str, Any]) -> Callable[[Any], Any]:
    """A callable running ``export`` of the module at ``path`` with the limits in ``setup``."""
    import wasmtime

    config = wasmtime.Config()
    config.consume_fuel = True
    config.parallel_compilation = False  # no compiler threads inside the sandbox
    config.memory_reservation = 0  # no large virtual reservations: RLIMIT_AS is small
    config.memory_reservation_for_growth = GUARD_BYTES
    config.memory_guard_size = GUARD_BYTES
    config.max_wasm_stack = MAX_WASM_STACK_BYTES
    config.wasm_threads = False
    engine = wasmtime.Engine(config)
    module = wasmtime.Module.from_file(engine, os.path.realpath(path))
    fuel = int(setup["cpu_s"]) * FUEL_PER_CPU_S
    memory_bytes = int(setup["memory_mib"]) * MIB // MEMORY_SHARE
    if not any(item.name == export for item in module.exports):
        raise LookupError(f"{os.path.basename(path)} exports no {export!r}")

    def call(value: Any) -> Any:
        store = wasmtime.Store(engine)
        store.set_fuel(fuel)
        store.set_limits(memory_size=memory_bytes)
        linker = wasmtime.Linker(engine)
        _define_host(linker)
        try:
            instance = linker.instantiate(store, module)
            return _invoke(store, instance, export, value)
        except wasmtime.Trap as trap:
            if trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                raise FuelExhausted(f"the module ran out of fuel ({fuel} units)") from None
            raise WasmTrap(trap.message) from None

    return call


def _invoke(store: Any, instance: Any, export: str, value: Any) -> Any:
    exports = instance.exports(store)
    function = exports[export]
    kind = function.type(store)
    params = [str(p) for p in kind.params]
    results = [str(r) for r in kind.results]
    memory, alloc = exports.get("memory"), exports.get("alloc")
    if params == ["i32", "i32"] and results == ["i64"] and memory is not None and alloc is not None:
        data = json.dumps(value).encode()
        pointer = alloc(store, len(data))
        memory.write(store, data, pointer)
        packed = function(store, pointer, len(data)) & 0xFFFFFFFFFFFFFFFF
        start, length = packed >> 32, packed & 0xFFFFFFFF
        return json.loads(bytes(memory.read(store, start, start + length)))
    arguments = value if isinstance(value, list) else [] if value is None else [value]
    if len(arguments) != len(params) or not all(_is_number(a) for a in arguments):
        raise TypeError(f"{export} takes {len(params)} number(s): {', '.join(params) or 'none'}")
    converted = [
        int(a) if p in ("i32", "i64") else float(a) for a, p in zip(arguments, params, strict=True)
    ]
    return function(store, *converted)


def _define_host(linker: Any) -> None:
    import wasmtime

    i32, f64 = wasmtime.ValType.i32(), wasmtime.ValType.f64()

    def text(caller: Any, pointer: int, length: int) -> str:
        memory = caller.get("memory")
        if memory is None:
            raise WasmTrap("the module exports no memory")
        return bytes(memory.read(caller, pointer, pointer + length)).decode("utf-8", "replace")

    def log(caller: Any, pointer: int, length: int) -> None:
        forecourt_plugin.log(text(caller, pointer, length))

    def metric(caller: Any, pointer: int, length: int, value: float) -> None:
        forecourt_plugin.metric(text(caller, pointer, length), value)

    def emit(
        caller: Any, type_pointer: int, type_length: int, data_pointer: int, size: int
    ) -> None:
        data = json.loads(text(caller, data_pointer, size))
        forecourt_plugin.emit(text(caller, type_pointer, type_length), data)

    host = (
        ("log", [i32, i32], log),
        ("metric", [i32, i32, f64], metric),
        ("emit", [i32, i32, i32, i32], emit),
    )
    for name, params, function in host:
        linker.define_func(HOST_MODULE, name, wasmtime.FuncType(params, []), function, True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
