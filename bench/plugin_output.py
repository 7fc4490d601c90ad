"""/healthz latency while a plugin's 16 MiB output is handled, through a real server.

Run from the project root, as root (the sandbox drops to an unprivileged user)::

    python -m bench.plugin_output [--runs N] [--baseline S]

The server runs under uvicorn in a process of its own (SQLite, the default settings, plugins
allowed 1 GiB). A transformation plugin returns 16 MiB of records (about 490,000), the
largest answer a worker may send. A thread of this process polls ``/healthz`` one request
after the other and times each answer; the execute request is sent from a process of its
own, so that receiving its 16 MiB does not delay the poller here. The baseline, measured in
the same run, is the poller with no plugin running; the figure is its worst latency while a
16 MiB output is produced, read, checked, recorded and sent. Printed: max and p99 of both,
and their ratios. Target: the worst poll under 100 ms.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx

from bench._common import bench_settings, machine, percentile, server
from bench._common import serve as serve_app

RUNS = 3
BASELINE_S = 5.0
RUN_TIMEOUT_S = 300.0
TARGET_MAX_MS = 100.0
MAX_FRAME_BYTES = 16 * 1024 * 1024  # forecourt_plugin._wire's cap on one answer
RECORD = '{"i":1000000,"s":"abcdefghijklm"}'  # about the size of each record returned
RECORDS = (MAX_FRAME_BYTES - 4096) // (len(RECORD) + 1)
PLUGIN_ID = "com.example.big"
CODE = """
def big(payload):
    count = payload["records"][0]["count"]
    return {"records": [{"i": 1000000 + i % 1000, "s": "abcdefghijklm"} for i in range(count)]}
"""
MANIFEST = f"""
id = "{PLUGIN_ID}"
name = "Big"
version = "1.0.0"
type = "transformation"
entry_point = "plugin:big"

[resources]
memory_mib = 1024
timeout_s = 120
"""
# Sent from a process of its own: prints the status, the run's status and the body's size.
EXECUTE = """
import sys, httpx
url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
response = httpx.post(url, json={"input": {"records": [{"count": count}]}},
                      headers={"Authorization": "Bearer " + key}, timeout=float(sys.argv[4]))
status = response.json()["status"] if response.status_code == 200 else response.text[:500]
print(response.status_code, status, len(response.content))
"""


def serve(port: int) -> None:
    from forecourt.app import create_app

    serve_app(create_app(bench_settings()), port)


def package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("forecourt-plugin.toml", MANIFEST)
        archive.writestr("plugin.py", CODE)
    return buffer.getvalue()


class Poller:
    """Polls /healthz from a thread, one request after the other, timing each answer."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=RUN_TIMEOUT_S)
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="healthz-poller")

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            ok = self.client.get("/healthz").status_code == 200
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.failures += not ok


def prepare(base_url: str, auth: dict[str, str]) -> str:
    """Install the plugin and make an instance of it; its id."""
    with httpx.Client(base_url=base_url, headers=auth, timeout=60) as client:
        files = {"package": ("plugin.zip", package(), "application/zip")}
        response = client.post("/api/v1/plugins", files=files)
        response.raise_for_status()
        response = client.post(
            "/api/v1/plugin-instances", json={"plugin_id": PLUGIN_ID, "name": "big"}
        )
        response.raise_for_status()
        instance_id: str = response.json()["id"]
        return instance_id


def execute(url: str, key: str, count: int) -> str:
    """Run the instance from a process of its own; what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", EXECUTE, url, key, str(count), str(RUN_TIMEOUT_S)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S + 30,
        check=True,
    )
    return done.stdout.strip()


def line(label: str, latencies: list[float]) -> str:
    return (
        f"{label}: {len(latencies)} polls, max {max(latencies):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms, p50 {percentile(latencies, 0.50):.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.plugin_output", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=RUNS, help="16 MiB outputs measured")
    parser.add_argument(
        "--baseline", type=float, default=BASELINE_S, help="seconds of polls with no plugin"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port)
        return

    env = {"FORECOURT_PLUGIN_ALLOW_UNSIGNED": "true", "FORECOURT_PLUGIN_MAX_MEMORY_MIB": "1024"}
    with server("bench.plugin_output", env) as running:
        owner = (Path(running.workdir) / "data" / "owner-key").read_text().strip()
        auth = {"Authorization": f"Bearer {owner}"}
        instance_id = prepare(running.base_url, auth)
        url = f"{running.base_url}/api/v1/plugin-instances/{instance_id}/execute"
        print(f"plugin_output: {machine()}", flush=True)
        # Warm up: the worker, the answer pool's process, the connections.
        print(f"plugin_output: warm-up runs: {execute(url, owner, 10)}, "
              f"{execute(url, owner, RECORDS)}", flush=True)  # fmt: skip
        with Poller(running.base_url) as idle:
            time.sleep(args.baseline)
        baseline = idle.latencies_ms
        during: list[float] = []
        failures = idle.failures
        for number in range(args.runs):
            with Poller(running.base_url) as busy:
                outcome = execute(url, owner, RECORDS)
            during += busy.latencies_ms
            failures += busy.failures
            print(f"plugin_output: run {number + 1}: {outcome}; "
                  f"{line('healthz', busy.latencies_ms)}", flush=True)  # fmt: skip
    print("plugin_output: " + line("baseline, no plugin running", baseline), flush=True)
    print("plugin_output: " + line(f"during {args.runs} 16 MiB outputs", during), flush=True)
    worst, usual = max(during), max(baseline)
    verdict = "ok" if worst < TARGET_MAX_MS else f"OVER the {TARGET_MAX_MS:g} ms target"
    print(
        f"plugin_output: worst /healthz latency {worst:.1f} ms during a 16 MiB output "
        f"(target < {TARGET_MAX_MS:g} ms: {verdict}); ratio max during/baseline = "
        f"{worst / usual:.1f}, p99 during/baseline = "
        f"{percentile(during, 0.99) / percentile(baseline, 0.99):.1f}",
        flush=True,
    )
    if failures:
        print(f"plugin_output: {failures} polls were not 200; the figure is not valid")


if __name__ == "__main__":
    main()
