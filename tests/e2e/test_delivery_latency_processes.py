"""The delivery latency histogram across processes: an API node (``forecourt serve
--no-workers``) and a delivery node (``forecourt worker``) share a PostgreSQL database and a
data folder (so a multiprocess folder). Events published through the API node are delivered
by the worker to a receiver on loopback; a scrape of the API node, which delivers nothing
itself, parsed with prometheus_client's text parser, shows every delivery the worker ended.
Once the worker has stopped, its observations stay in the totals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import Node, ThreadedReceiver, wait_until
from prometheus_client.parser import text_string_to_metric_families

from commands import clean_env
from commands import run as cli
from conftest import RUN_ID

pytestmark = pytest.mark.postgres

SECRET_KEY = "delivery-latency-" + RUN_ID
EVENTS = 3
DELIVERY_TIMEOUT_S = 30.0
COUNT = "forecourt_delivery_latency_seconds_count"
SUM = "forecourt_delivery_latency_seconds_sum"


def scrape(node: Node) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(node.base_url + "/metrics", timeout=10.0)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def succeeded(node: Node, name: str) -> float:
    return scrape(node).get((name, frozenset({("outcome", "succeeded")})), 0.0)


@pytest.fixture
def nodes(tmp_path: Path, empty_pg_database: str) -> Iterator[dict[str, Node]]:
    env = clean_env(
        tmp_path / "data",
        database_url=empty_pg_database,
        secret_key=SECRET_KEY,
        webhook_allow_private="127.0.0.0/8",
        delivery_poll_interval_s="0.1",
    )
    migrated = cli(env, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    started: dict[str, Node] = {}
    try:
        # The API node bootstraps the empty database before the worker starts.
        started["api"] = Node.serve(env, tmp_path, "--no-workers", name="api").start()
        started["worker"] = Node.worker(env, tmp_path).start()
        yield started
    finally:
        for node in started.values():
            node.kill()


def test_the_api_node_shows_what_the_worker_delivered(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    api = nodes["api"]
    owner = (tmp_path / "data" / "owner-key").read_text().strip()
    with (
        ThreadedReceiver() as receiver,
        httpx.Client(
            base_url=api.base_url, headers={"Authorization": f"Bearer {owner}"}, timeout=10.0
        ) as client,
    ):
        created = client.post(
            "/api/v1/webhooks", json={"url": receiver.url(), "event_types": ["dashboard.*"]}
        )
        assert created.status_code == 201, created.text
        assert succeeded(api, COUNT) == 0  # a fresh folder: nothing observed before
        began = time.time()
        for index in range(EVENTS):
            sent = client.post(
                "/api/v1/events", json={"type": "dashboard.created", "data": {"n": index}}
            )
            assert sent.status_code in (200, 201, 202), sent.text
        wait_until(
            lambda: succeeded(api, COUNT) == EVENTS,
            DELIVERY_TIMEOUT_S,
            "the worker's deliveries in the API node's scrape",
        )
        span = time.time() - began
    assert len(receiver.received()) == EVENTS
    # Each delivery took no longer than the test watched it.
    assert 0 < succeeded(api, SUM) <= EVENTS * span

    assert nodes["worker"].terminate() == 0
    assert succeeded(api, COUNT) == EVENTS
