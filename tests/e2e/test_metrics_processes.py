"""/metrics when several processes serve: two ``forecourt serve`` nodes sharing a PostgreSQL
database and a data folder (so a multiprocess folder), each sent its own requests; a scrape
of either, parsed with prometheus_client's own text parser, counts the requests and events
of both. A node that stops keeps its counts in the totals (counters never go down while the
installation runs) and takes its live gauges with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import Node
from prometheus_client.parser import text_string_to_metric_families

from commands import clean_env
from commands import run as cli
from conftest import RUN_ID

pytestmark = pytest.mark.postgres

SECRET_KEY = "metrics-processes-" + RUN_ID
REQUESTS = {"a": 3, "b": 5}
EVENTS = {"a": 2, "b": 4}
KEYS_ROUTE = {"route": "/api/v1/keys", "method": "GET", "status": "2xx"}


def scrape(node: Node) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(node.base_url + "/metrics", timeout=10.0)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def nodes(tmp_path: Path, empty_pg_database: str) -> Iterator[dict[str, Node]]:
    env = clean_env(tmp_path / "data", database_url=empty_pg_database, secret_key=SECRET_KEY)
    migrated = cli(env, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    started: dict[str, Node] = {}
    try:
        # A bootstraps the empty database before B starts: one first start.
        started["a"] = Node.serve(env, tmp_path, name="a").start()
        started["b"] = Node.serve(env, tmp_path, "--no-workers", name="b").start()
        yield started
    finally:
        for node in started.values():
            node.kill()


def test_a_scrape_of_either_node_counts_both(nodes: dict[str, Node], tmp_path: Path) -> None:
    owner = (tmp_path / "data" / "owner-key").read_text().strip()
    auth = {"Authorization": f"Bearer {owner}"}
    for name, node in nodes.items():
        with httpx.Client(base_url=node.base_url, headers=auth, timeout=10.0) as client:
            for _ in range(REQUESTS[name]):
                assert client.get("/api/v1/keys").status_code == 200
            for index in range(EVENTS[name]):
                sent = client.post(
                    "/api/v1/events", json={"type": "dashboard.created", "data": {"n": index}}
                )
                assert sent.status_code in (200, 201, 202), sent.text

    folder = tmp_path / "data" / "prometheus"
    pids = {node.process.pid for node in nodes.values() if node.process is not None}
    assert all(any(str(pid) in f.name for f in folder.iterdir()) for pid in pids)

    total_requests = sum(REQUESTS.values())
    total_events = sum(EVENTS.values())
    for node in nodes.values():
        found = scrape(node)
        assert value(found, "forecourt_http_requests_total", **KEYS_ROUTE) == total_requests
        assert value(found, "forecourt_events_published_total") == total_events
        assert (
            value(
                found,
                "forecourt_http_request_duration_seconds_count",
                route="/api/v1/keys",
                method="GET",
            )
            == total_requests
        )
        # One queue, read once for the installation: present on either node (an empty queue
        # reads 0 whether or not processes were summed, so that is not what this shows).
        assert found[("forecourt_delivery_queue_depth", frozenset())] == 0

    assert nodes["b"].terminate() == 0
    after = scrape(nodes["a"])
    assert value(after, "forecourt_http_requests_total", **KEYS_ROUTE) == total_requests
    assert value(after, "forecourt_events_published_total") == total_events
