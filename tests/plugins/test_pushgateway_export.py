"""The built-in pushgateway_export against Debian's prometheus-pushgateway, started here on a
free loopback port; what it then serves on /metrics is parsed with prometheus_client's
parser. ``make test`` installs the package when it is missing (scripts/install-test-tools.sh);
without the program these tests fail, saying so."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from exporter_support import point, run_once, write_points
from plugin_support import instance, start
from prometheus_client.parser import text_string_to_metric_families

PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
PLUGIN = "forecourt.pushgateway-export"
SETTINGS = {"webhook_allow_private": "127.0.0.0/8"}
START_WAIT_S = 30.0  # only catches a hang
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Gateway:
    """A prometheus-pushgateway process on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            str(PUSHGATEWAY),
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--persistence.file=",  # in memory: Debian's default file outlives the test
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + START_WAIT_S
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(self.url + "/-/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self.process.returncode is None, "prometheus-pushgateway exited"
                assert asyncio.get_running_loop().time() < deadline, "no ready gateway"
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), START_WAIT_S)
        self.process = None

    async def samples(self, job: str) -> Samples:
        """The samples of ``job``'s groups on the gateway's /metrics, parsed."""
        async with httpx.AsyncClient() as client:
            response = await client.get(self.url + "/metrics")
        assert response.status_code == 200
        found: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.labels.get("job") == job:
                    labels = frozenset(sample.labels.items())
                    assert (sample.name, labels) not in found, sample
                    found[(sample.name, labels)] = sample.value
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    if not os.access(PUSHGATEWAY, os.X_OK):
        pytest.fail(
            f"{PUSHGATEWAY} is missing: install Debian's prometheus-pushgateway "
            "(`make test` does, as root: scripts/install-test-tools.sh)"
        )
    running = Gateway(free_port())
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def test_the_latest_values_are_pushed_with_their_labels_escaped(
    harness_factory: Any, gateway: Gateway
) -> None:
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h,
        plugin_id=PLUGIN,
        name="pushgateway",
        config={
            "url": gateway.url,
            "job": "forecourt-test",
            "grouping": {"instance": "node/1"},
            "prefix": "fc_",
            "counts": ["jobs.*"],
            "series": ["app.*", "jobs.*"],
        },
    )
    tricky = 'say "hi" \\ then\nnewline, é'
    await write_points(
        h,
        [
            point("app.latency_s", 0.5, 8, route=tricky),
            point("app.latency_s", 0.75, 7, route=tricky),  # the later one is pushed
            point("app.latency_s", 2.0, 7, route="/b"),
            point("jobs.done", 42, 6, queue="mail", instance="ignored"),
            point("other.ignored", 1, 6),
        ],
    )
    execution = await run_once(h, created, PLUGIN)
    assert execution["status"] == "ok", execution

    group = {"job": "forecourt-test", "instance": "node/1"}
    pushed = await gateway.samples("forecourt-test")
    ours = {key: value for key, value in pushed.items() if key[0].startswith("fc_")}
    assert ours == {
        sample("fc_app_latency_s", **group, route=tricky, source="app"): 0.75,
        sample("fc_app_latency_s", **group, route="/b", source="app"): 2.0,
        sample("fc_jobs_done_total", **group, queue="mail", source="app"): 42.0,
    }

    # The next run pushes only what is new; POST keeps the rest of the group.
    await write_points(h, [point("app.latency_s", 9.5, 3, route="/b")])
    assert (await run_once(h, created, PLUGIN))["status"] == "ok"
    pushed = await gateway.samples("forecourt-test")
    assert pushed[sample("fc_app_latency_s", **group, route="/b", source="app")] == 9.5
    assert pushed[sample("fc_app_latency_s", **group, route=tricky, source="app")] == 0.75


async def test_a_push_that_fails_is_made_up_for_by_the_next_run(
    harness_factory: Any, gateway: Gateway
) -> None:
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h, plugin_id=PLUGIN, name="pushgateway", config={"url": gateway.url, "job": "retry"}
    )
    await gateway.stop()
    await write_points(h, [point("app.requests", 5, 6)])
    failed = await run_once(h, created, PLUGIN)
    assert failed["status"] == "error", failed
    assert "Pushgateway was not reached" in (failed["error_message"] or ""), failed

    await gateway.start()
    assert (await run_once(h, created, PLUGIN))["status"] == "ok"
    pushed = await gateway.samples("retry")
    assert pushed[sample("app_requests", job="retry", instance="", source="app")] == 5.0


async def test_a_bad_configuration_is_refused_and_changes_nothing(harness_factory: Any) -> None:
    h = await start(harness_factory, **SETTINGS)
    for config in (
        {"url": "ftp://127.0.0.1:9091"},
        {"url": "http://127.0.0.1:9091/metrics/job/x"},
        {"url": "http://user@127.0.0.1:9091"},
        {"url": "http://127.0.0.1:9091", "grouping": {"job": "x"}},
        {"url": "http://127.0.0.1:9091", "grouping": {"bad-name": "x"}},
        {"url": "http://127.0.0.1:9091", "method": "GET"},
        {"job": "x"},
    ):
        response = await h.client.post(
            "/api/v1/plugin-instances",
            json={"plugin_id": PLUGIN, "name": "pushgateway", "config": config},
            headers=h.auth(),
        )
        assert response.status_code == 422, (config, response.text)
    listed = await h.client.get("/api/v1/plugin-instances", headers=h.auth())
    assert [i for i in listed.json()["items"] if i["plugin_id"] == PLUGIN] == []


async def test_put_replaces_the_group_with_what_the_run_pushes(
    harness_factory: Any, gateway: Gateway
) -> None:
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h,
        plugin_id=PLUGIN,
        name="pushgateway",
        config={"url": gateway.url, "job": "put", "method": "PUT"},
    )
    await write_points(h, [point("app.a", 1, 6), point("app.b", 2, 6)])
    assert (await run_once(h, created, PLUGIN))["status"] == "ok"
    both = await gateway.samples("put")
    assert {name for name, _ in both} >= {"app_a", "app_b"}

    await write_points(h, [point("app.a", 3, 3)])
    assert (await run_once(h, created, PLUGIN))["status"] == "ok"
    after = await gateway.samples("put")
    assert after[sample("app_a", job="put", instance="", source="app")] == 3.0
    assert "app_b" not in {name for name, _ in after}  # no new point: out of the group
