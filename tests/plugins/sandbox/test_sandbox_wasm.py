"""WebAssembly plugins: run by wasmtime in the same sandboxed worker, with fuel and a memory cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import wasmtime
from sandbox_support import sandbox

from forecourt.plugins.sandbox import Limits, WorkerPool, WorkerSpec

PLUGIN = r"""
(module
  (import "forecourt" "log" (func $log (param i32 i32)))
  (import "forecourt" "metric" (func $metric (param i32 i32 f64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "upper-casing")
  (data (i32.const 16) "calls")
  (global $next (mut i32) (i32.const 1024))
  (global $count (mut i32) (i32.const 0))
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $ptr))
  (func (export "upper") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $c i32)
    (call $log (i32.const 0) (i32.const 12))
    (call $metric (i32.const 16) (i32.const 5) (f64.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97))
                     (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (local.get $ptr) (local.get $i))
                            (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "count") (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (global.get $count))
  (func (export "spin") (loop $forever (br $forever)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "crash") (unreachable))
)
"""
WASI = r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (func (export "run") (result i32) (i32.const 0)))
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    (tmp_path / "plugin.wasm").write_bytes(wasmtime.wat2wasm(PLUGIN))
    (tmp_path / "wasi.wasm").write_bytes(wasmtime.wat2wasm(WASI))
    return tmp_path


def wasm_spec(
    package: Path, export: str, file: str = "plugin.wasm", **fields: object
) -> WorkerSpec:
    return WorkerSpec(
        key=f"test.wasm.{export}@1",
        package_dir=package,
        entry_point=f"{file}:{export}",
        runtime="wasm",
        **fields,  # type: ignore[arg-type]
    )


async def call(pool: WorkerPool, spec: WorkerSpec, value: object = None) -> object:
    result = await pool.call(spec, input=value, config={})
    assert result.status == "ok", result
    return result.output


async def test_json_export_with_host_imports(package: Path) -> None:
    async with sandbox() as box:
        result = await box.pool.call(wasm_spec(package, "upper"), input="hello, wasm", config={})
    assert result.status == "ok", result
    assert result.output == "HELLO, WASM"
    assert result.logs == "upper-casing\n"
    assert result.metrics == [{"name": "calls", "value": 1.0, "labels": {}}]


async def test_numeric_export_and_no_state_between_calls(package: Path) -> None:
    async with sandbox() as box:
        assert await call(box.pool, wasm_spec(package, "add"), [2, 40]) == 42
        counts = [await call(box.pool, wasm_spec(package, "count")) for _ in range(3)]
        wrong = await box.pool.call(wasm_spec(package, "add"), input="two", config={})
    assert counts == [1, 1, 1]  # a fresh instance per call
    assert wrong.status == "error" and wrong.error_class == "TypeError"


async def test_fuel_stops_an_endless_loop(package: Path) -> None:
    spec = wasm_spec(package, "spin", limits=Limits(cpu_s=1))
    async with sandbox() as box:
        # No timeout to end it (an hour): only the fuel stops the loop.
        run = box.pool.call(spec, input=None, config={}, timeout_s=3600)
        result = await asyncio.wait_for(run, 60)  # only catches a hang
        crash = await box.pool.call(wasm_spec(package, "crash"), input=None, config={})
    assert result.status == "error", result
    assert result.error_class == "wasm.FuelExhausted"
    assert crash.status == "error" and crash.error_class == "wasm.WasmTrap"
    assert "unreachable" in (crash.error_message or "")


async def test_linear_memory_is_capped(package: Path) -> None:
    spec = wasm_spec(package, "grow", limits=Limits(memory_mib=128))
    async with sandbox() as box:
        assert await call(box.pool, spec, 100) == 1  # 6.4 MiB: fine, returns the old size
        assert await call(box.pool, spec, 30_000) == -1  # 1.9 GiB: refused


async def test_no_host_access_beyond_the_imports(package: Path) -> None:
    async with sandbox() as box:
        result = await box.pool.call(wasm_spec(package, "run", "wasi.wasm"), input=None, config={})
    assert result.status == "error"
    assert "wasi_snapshot_preview1" in (result.error_message or "")
