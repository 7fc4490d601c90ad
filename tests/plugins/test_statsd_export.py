"""The built-in statsd_export against a real UDP listener on loopback: every datagram parsed,
every selected point arrived once with its tags, across runs bounded in size and a failed run
that the next one makes up for."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from exporter_support import point, run_once, write_points
from plugin_support import execute, instance, start, wait_until

from forecourt.plugins import exports

STATSD = "forecourt.statsd-export"
SETTINGS = {"webhook_allow_private": "127.0.0.0/8"}
WAIT_S = 30.0  # only catches a hang


class Listener:
    """A StatsD agent's socket on 127.0.0.1: what arrived, each datagram parsed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.datagrams: list[bytes] = []

    def drain(self) -> list[bytes]:
        """Every datagram that has arrived and not been read yet."""
        self.sock.setblocking(False)
        seen = []
        try:
            while True:
                seen.append(self.sock.recv(65536))
        except BlockingIOError:
            pass
        self.datagrams += seen
        return seen


@pytest.fixture
def listener() -> Iterator[Listener]:
    udp = Listener()
    try:
        yield udp
    finally:
        udp.sock.close()


Line = tuple[str, str, str, tuple[str, ...], int | None]  # name, value, type, tags, seconds


def parse(datagram: bytes) -> list[Line]:
    """Every DogStatsD line of a datagram, strictly: anything else fails the test."""
    lines = []
    for text in datagram.decode().split("\n"):
        head, *fields = text.split("|")
        name, value = head.split(":")
        kind, tags, stamp = fields[0], (), None
        assert kind in ("g", "c"), text
        for extra in fields[1:]:
            if extra.startswith("#"):
                tags = tuple(extra[1:].split(","))
            elif extra.startswith("T"):
                stamp = int(extra[1:])
            else:
                raise AssertionError(f"unexpected field {extra!r} in {text!r}")
        float(value)
        lines.append((name, value, kind, tags, stamp))
    return lines


def received(listener: Listener, size: int) -> list[Line]:
    lines = []
    for datagram in listener.drain():
        assert len(datagram) <= size, len(datagram)
        lines += parse(datagram)
    return lines


async def test_every_selected_point_arrives_once_with_its_tags(
    harness_factory: Any, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Points read two series at a time, so merging the queries' answers is part of the test.
    monkeypatch.setattr(exports, "SERIES_PER_QUERY", 2)
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h,
        plugin_id=STATSD,
        name="statsd",
        config={
            "address": listener.address,
            "prefix": "fc.",
            "counts": ["jobs.*"],
            "timestamps": True,
            "series": ["app.*", "jobs.*"],
            "max_points_per_run": 7,
            "max_datagram_bytes": 512,
        },
    )
    points = [
        point("app.latency_s", 0.25 + i, 8 - i / 2, env="prod", route="/a b,c|d") for i in range(9)
    ]
    points += [point("jobs.done", i, 8 - i / 2, queue="mail") for i in range(8)]
    points += [point("app.temperature", -3.5, 3)]
    points += [point("other.ignored", 1, 5)]  # not selected
    await write_points(h, points)
    # Another tenant's series of the same name is never this instance's to send.
    other = await h.create_tenant("other")
    await write_points(h, [point("app.latency_s", 99, 6, env="prod")], key=other["admin_key"])

    lines: list[Line] = []
    for _ in range(3):  # 18 selected points, at most 7 a run
        execution = await run_once(h, created, STATSD)
        assert execution["status"] == "ok", execution
    await_all = 18 + 1  # one more line: the zero before the negative gauge
    lines = received(listener, 512)
    assert len(lines) == await_all, lines

    expected: Counter[Line] = Counter()
    for p in points[:-1]:
        seconds = int(_epoch(p["time"]))
        kind = "c" if p["name"].startswith("jobs.") else "g"
        tags = tuple(sorted(f"{k}:{v}" for k, v in {**p["labels"], "source": "app"}.items()))
        tags = tuple(t.replace(" ", "_").replace(",", "_").replace("|", "_") for t in tags)
        value = p["value"]
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        if kind == "g" and value < 0:
            expected[("fc." + p["name"], "0", kind, tags, seconds)] += 1
        expected[("fc." + p["name"], text, kind, tags, seconds)] += 1
    assert Counter(lines) == expected
    assert lines[-2][:3] == ("fc.app.temperature", "0", "g")  # the zero goes first

    # Nothing new: a run sends nothing and succeeds.
    execution = await run_once(h, created, STATSD)
    assert execution["status"] == "ok", execution
    assert received(listener, 512) == []


async def test_a_failed_run_is_made_up_for_by_the_next_without_repeats(
    harness_factory: Any, listener: Listener
) -> None:
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h, plugin_id=STATSD, name="statsd", config={"address": listener.address, "tags": False}
    )
    await write_points(h, [point("app.requests", i, 8 - i) for i in range(3)])
    assert (await run_once(h, created, STATSD))["status"] == "ok"
    first = received(listener, 1432)
    assert sorted(value for _, value, *_ in first) == ["0", "1", "2"]
    assert all(tags == () for *_, tags, _ in first)

    # The agent's name stops resolving: the run fails, and the cursor stays.
    await write_points(h, [point("app.requests", 10 + i, 4 - i) for i in range(3)])
    response = await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}",
        json={"config": {"address": "statsd.invalid:8125", "tags": False}},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    failed = await run_once(h, created, STATSD)
    assert failed["status"] == "error", failed
    assert "statsd.invalid" in (failed["error_message"] or ""), failed

    response = await h.client.patch(
        f"/api/v1/plugin-instances/{created['id']}",
        json={"config": {"address": listener.address, "tags": False}},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    assert (await run_once(h, created, STATSD))["status"] == "ok"
    again = received(listener, 1432)
    assert sorted(value for _, value, *_ in again) == ["10", "11", "12"]


async def test_a_bad_address_is_refused_and_changes_nothing(harness_factory: Any) -> None:
    h = await start(harness_factory, **SETTINGS)
    for address in ("127.0.0.1", "http://127.0.0.1:8125", "127.0.0.1:8125/x", "a b:1"):
        response = await h.client.post(
            "/api/v1/plugin-instances",
            json={"plugin_id": STATSD, "name": "statsd", "config": {"address": address}},
            headers=h.auth(),
        )
        assert response.status_code == 422, (address, response.text)
        assert "address" in response.text
    listed = await h.client.get(
        "/api/v1/plugin-instances", params={"plugin_id": STATSD}, headers=h.auth()
    )
    assert [i for i in listed.json()["items"] if i["plugin_id"] == STATSD] == []


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


async def test_run_from_the_api_it_sends_records_and_leaves_the_cursor(
    harness_factory: Any, listener: Listener
) -> None:
    h = await start(harness_factory, **SETTINGS)
    created = await instance(
        h, plugin_id=STATSD, name="statsd", config={"address": listener.address}
    )
    records = [{"name": "deploys", "value": 1, "labels": {"app": "shop"}}]
    result = await execute(h, created["id"], {"records": records, "format": "statsd"})
    assert result["status"] == "ok", result

    async def arrived() -> list[Line]:
        return received(listener, 1432)

    assert await wait_until(arrived, timeout_s=WAIT_S) == [
        ("deploys", "1", "g", ("app:shop",), None)
    ]
    # The scheduled export still starts where it would have.
    await write_points(h, [point("app.requests", 3, 4)])
    assert (await run_once(h, created, STATSD))["status"] == "ok"
    assert [line[:2] for line in received(listener, 1432)] == [("app.requests", "3")]
