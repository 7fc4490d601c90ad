"""Plugin calls per second: a warm sandboxed worker against a fresh process per call.

Run by hand from the project root, as root (the sandbox drops to an unprivileged user)::

    python -m bench.plugin_call [--calls N] [--spawns N]

The plugin upper-cases a string. The sandboxed side calls it through ``WorkerPool`` with every
protection on (namespaces, read-only root, rlimits, unprivileged user, Landlock, seccomp), one
call at a time, then from two tasks at once. The baseline, measured in the same run, starts a
fresh ``python -I -S -c`` per call (no sandbox at all): the cost a pool of warm workers avoids.
The cold start of a sandboxed worker is shown as well. Targets: at least 20 times the
per-call-spawn rate, and a p50 under 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forecourt.plugins.sandbox import SandboxConfig, WorkerPool, WorkerSpec

CALLS = 2_000
SPAWNS = 100
WARMUP_CALLS = 100
COLD_STARTS = 10
CONCURRENCY = 2  # the machine has two cores
TEXT = "hello, forecourt"
PLUGIN = "def run(text):\n    return text.upper()\n"
SPAWN_CODE = "import sys; sys.stdout.write(sys.argv[1].upper())"
TARGET_RATIO = 20.0
TARGET_P50_MS = 2.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def sandboxed(work: Path, calls: int) -> dict[str, float]:
    package = work / "upper"
    package.mkdir()
    (package / "upper.py").write_text(PLUGIN)
    config = SandboxConfig(work_root=work / "workers", warm_workers=CONCURRENCY)
    pool = WorkerPool(config)
    await pool.start()
    spec = WorkerSpec(key="bench.upper@1.0.0", package_dir=package, entry_point="upper:run")
    try:
        for _ in range(WARMUP_CALLS):
            assert (await pool.call(spec, input=TEXT, config={})).output == TEXT.upper()
        latencies: list[float] = []
        started = time.perf_counter()
        for _ in range(calls):
            before = time.perf_counter()
            result = await pool.call(spec, input=TEXT, config={})
            latencies.append((time.perf_counter() - before) * 1000)
            assert result.output == TEXT.upper(), result
        sequential_s = time.perf_counter() - started

        async def worker(count: int) -> None:
            for _ in range(count):
                assert (await pool.call(spec, input=TEXT, config={})).ok

        started = time.perf_counter()
        await asyncio.gather(*(worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)))
        concurrent_s = time.perf_counter() - started

    finally:
        await pool.close()
    cold_pool = WorkerPool(SandboxConfig(work_root=work / "workers", warm_workers=0))
    cold: list[float] = []
    try:
        for _ in range(COLD_STARTS):  # a new key each time: a worker is started for the call
            cold_spec = WorkerSpec(key=f"bench.cold.{len(cold)}", package_dir=package,
                                   entry_point="upper:run")  # fmt: skip
            before = time.perf_counter()
            assert (await cold_pool.call(cold_spec, input=TEXT, config={})).ok
            cold.append((time.perf_counter() - before) * 1000)
    finally:
        await cold_pool.close()
    return {
        "per_s": calls / sequential_s,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "concurrent_per_s": (calls // CONCURRENCY) * CONCURRENCY / concurrent_s,
        "cold_ms": statistics.median(cold),
    }


def spawned(spawns: int) -> dict[str, float]:
    command = [sys.executable, "-I", "-S", "-B", "-c", SPAWN_CODE, TEXT]
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(spawns):
        before = time.perf_counter()
        output = subprocess.run(command, capture_output=True, check=True).stdout.decode()
        latencies.append((time.perf_counter() - before) * 1000)
        assert output == TEXT.upper()
    return {
        "per_s": spawns / (time.perf_counter() - started),
        "p50_ms": statistics.median(latencies),
    }


def report(ours: dict[str, float], baseline: dict[str, float]) -> None:
    ratio = ours["per_s"] / baseline["per_s"]
    print(f"{'':34} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'sandboxed, warm worker':34} {ours['per_s']:>10.0f} {ours['p50_ms']:>8.3f} "
          f"{ours['p99_ms']:>8.3f}")  # fmt: skip
    print(f"{f'sandboxed, {CONCURRENCY} tasks':34} {ours['concurrent_per_s']:>10.0f}")
    print(f"{'fresh python -c per call':34} {baseline['per_s']:>10.0f} {baseline['p50_ms']:>8.3f}")
    print(f"{'sandboxed cold start (p50)':34} {'':>10} {ours['cold_ms']:>8.1f}")
    print(f"warm sandboxed / per-call spawn: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x)")
    print(f"warm p50: {ours['p50_ms']:.3f} ms (target < {TARGET_P50_MS:.0f} ms); "
          f"p50 ratio spawn / warm: {baseline['p50_ms'] / ours['p50_ms']:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--spawns", type=int, default=SPAWNS)
    args = parser.parse_args()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="forecourt-bench-plugins-"))
    work.chmod(0o711)
    try:
        ours = asyncio.run(sandboxed(work, args.calls))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = spawned(args.spawns)
    report(ours, baseline)
    print(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
