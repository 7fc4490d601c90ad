"""``forecourt events …``, ``forecourt webhooks …`` and ``forecourt worker`` as an operator
runs them, on SQLite, next to a running ``forecourt serve`` on the same data folder (or with
no server at all), delivering to a receiver on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from processes import Node, ThreadedReceiver, wait_until

from commands import clean_env
from commands import run as cli
from conftest import free_port
from forecourt.client import Client, verify_webhook
from receivers import Received, Reply

DELIVERY_TIMEOUT_S = 15.0
ATTEMPT_RE = re.compile(r"^attempt att_\w+: (\S+) in \d+ ms$")
NO_RETRIES = {"kind": "none"}


@dataclass
class Setup:
    """A data folder, the environment every process of the test gets, and a receiver
    answering 200 on /ok and 500 on /down."""

    env: dict[str, str]
    cwd: Path
    receiver: ThreadedReceiver

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.env, self.cwd, *args)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def owner_key(self) -> str:
        return (Path(self.env["FORECOURT_DATA_DIR"]) / "owner-key").read_text().strip()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with ThreadedReceiver() as receiver:
        receiver.reply("/down", Reply(status=500, body=b"broken"))
        yield Setup(
            clean_env(tmp_path / "data", webhook_allow_private="127.0.0.0/8"), tmp_path, receiver
        )


@pytest.fixture
def server(setup: Setup) -> Iterator[Node]:
    """``forecourt serve`` (API and in-process workers) on the test's data folder."""
    node = Node.serve(setup.env, setup.cwd)
    try:
        yield node.start()
    finally:
        node.kill()


@pytest.fixture
def client(setup: Setup, server: Node) -> Iterator[Client]:
    with Client(server.base_url, setup.owner_key(), timeout=20.0) as sdk:
        yield sdk


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The exit code, one ``error:`` line on stderr, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def verified(secret: str, got: Received) -> dict[str, Any]:
    verify_webhook(secret, got.body, got.headers)
    envelope: dict[str, Any] = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    return envelope


def deliveries(client: Client, endpoint_id: str, **filters: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.webhooks.deliveries(endpoint_id, limit=200, **filters)[
        "items"
    ]
    return items


# -- events publish ------------------------------------------------------------------------


def test_events_publish_prints_the_envelope(setup: Setup, client: Client) -> None:
    result = setup.ok("events", "publish", "dashboard.created", "--data", '{"id": 1}')
    envelope = json.loads(result.stdout)
    assert envelope["type"] == "dashboard.created"
    assert envelope["id"].startswith("evt_")
    assert envelope["tenant"].startswith("ten_")
    assert envelope["severity"] == "info"
    assert envelope["data"] == {"id": 1}
    assert envelope["specversion"] == "1.0"
    assert envelope["datacontenttype"] == "application/json"
    # Stored, and the running server sees it.
    stored = client.events.get(envelope["id"])
    assert stored["type"] == "dashboard.created"
    assert stored["data"] == {"id": 1}


def test_events_publish_takes_subject_severity_and_id(setup: Setup) -> None:
    result = setup.ok(
        "events",
        "publish",
        "alert.triggered",
        "--data",
        '{"rule": "p95 > 1s"}',
        "--subject",
        "alert/9",
        "--severity",
        "critical",
        "--id",
        "my-own-id-1",
    )
    envelope = json.loads(result.stdout)
    assert (envelope["id"], envelope["subject"], envelope["severity"]) == (
        "my-own-id-1",
        "alert/9",
        "critical",
    )


def test_events_publish_rejects_bad_json(setup: Setup) -> None:
    line = assert_clean_error(setup("events", "publish", "dashboard.created", "--data", "{bad"))
    assert "--data" in line
    assert "JSON" in line


def test_events_publish_rejects_an_unknown_type(setup: Setup, client: Client) -> None:
    line = assert_clean_error(setup("events", "publish", "nope.never", "--data", "{}"))
    assert "nope.never" in line
    assert client.events.list(type="nope.never")["items"] == []


# -- webhooks list / test ------------------------------------------------------------------


def test_webhooks_list_shows_endpoints_made_over_the_api(setup: Setup, client: Client) -> None:
    assert setup.ok("webhooks", "list").stdout == ""
    dashboards = client.webhooks.create(setup.receiver.url("/ok"), ["dashboard.*"])
    everything = client.webhooks.create(setup.receiver.url("/all"))
    client.webhooks.disable(everything["id"])
    rows = {
        line.split("\t")[0]: line.split("\t")[1:]
        for line in setup.ok("webhooks", "list").stdout.strip().splitlines()
    }
    assert rows == {
        dashboards["id"]: ["enabled", "dashboard.*", setup.receiver.url("/ok")],
        everything["id"]: ["disabled", "*", setup.receiver.url("/all")],
    }


def test_webhooks_test_reports_the_attempt(setup: Setup, client: Client) -> None:
    healthy = client.webhooks.create(setup.receiver.url("/ok"), ["dashboard.*"])
    broken = client.webhooks.create(setup.receiver.url("/down"), ["dashboard.*"])

    result = setup.ok("webhooks", "test", healthy["id"])
    match = ATTEMPT_RE.match(result.stdout.strip())
    assert match, result.stdout
    assert match.group(1) == "200"
    [got] = setup.receiver.received("/ok")
    envelope = verified(healthy["secret"], got)
    assert envelope["type"] == "webhook.test"
    assert envelope["data"]["endpoint_id"] == healthy["id"]

    failed = setup("webhooks", "test", broken["id"])
    assert failed.returncode == 1, failed.stderr
    match = ATTEMPT_RE.match(failed.stdout.strip())
    assert match, failed.stdout
    assert match.group(1) == "500"
    [got] = setup.receiver.received("/down")
    verified(broken["secret"], got)


def test_a_failed_test_event_is_not_retried_in_the_background(setup: Setup, client: Client) -> None:
    broken = client.webhooks.create(setup.receiver.url("/down"))
    assert setup("webhooks", "test", broken["id"]).returncode == 1
    [probe] = deliveries(client, broken["id"], event_type="webhook.test")
    assert probe["attempts"] == 1
    assert probe["status"] != "retrying"
    assert probe["next_attempt_at"] is None


def test_webhooks_test_of_a_receiver_that_is_not_listening(setup: Setup, client: Client) -> None:
    endpoint = client.webhooks.create(f"http://127.0.0.1:{free_port()}/gone")
    result = setup("webhooks", "test", endpoint["id"])
    assert result.returncode == 1, result.stderr
    match = ATTEMPT_RE.match(result.stdout.strip())
    assert match, result.stdout
    assert match.group(1) == "connection"


@pytest.mark.usefixtures("server")
def test_webhooks_test_of_an_unknown_endpoint(setup: Setup) -> None:
    line = assert_clean_error(setup("webhooks", "test", "ep_doesnotexist"))
    assert "ep_doesnotexist" in line


# -- webhooks recover ----------------------------------------------------------------------


def test_webhooks_recover_requeues_the_failed_deliveries(setup: Setup, client: Client) -> None:
    broken = client.webhooks.create(
        setup.receiver.url("/down"), ["dashboard.*"], retry_policy=NO_RETRIES
    )
    healthy = client.webhooks.create(setup.receiver.url("/ok"), ["dashboard.*"])
    for index in range(3):
        setup.ok("events", "publish", "dashboard.updated", "--data", json.dumps({"id": index}))
    setup.ok("events", "publish", "query.executed", "--data", "{}")  # matches neither
    wait_until(
        lambda: len(deliveries(client, broken["id"], status="failed")) == 3,
        DELIVERY_TIMEOUT_S,
        "three failed deliveries",
    )
    wait_until(
        lambda: len(deliveries(client, healthy["id"], status="succeeded")) == 3,
        DELIVERY_TIMEOUT_S,
        "three succeeded deliveries",
    )
    assert len(setup.receiver.received("/down")) == 3  # no retries: one attempt each

    line = setup.ok("webhooks", "recover", broken["id"], "--since", "1h").stdout.strip()
    assert line == "re-queued 3 deliveries"
    # Only failed deliveries go back: the healthy endpoint's succeeded ones stay.
    assert setup.ok("webhooks", "recover", healthy["id"], "--since", "1h").stdout.strip() == (
        "re-queued 0 deliveries"
    )
    # A time after they were made selects none of them.
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert setup.ok("webhooks", "recover", broken["id"], "--since", later).stdout.strip() == (
        "re-queued 0 deliveries"
    )

    # The server's worker attempts each again, with the same webhook-id.
    wait_until(
        lambda: len(setup.receiver.received("/down")) == 6,
        DELIVERY_TIMEOUT_S,
        "the re-queued deliveries to be attempted",
    )
    ids = Counter(r.webhook_id for r in setup.receiver.received("/down"))
    assert sorted(ids.values()) == [2, 2, 2]
    assert len(setup.receiver.received("/ok")) == 3


@pytest.mark.usefixtures("server")
@pytest.mark.parametrize("since", ["garbage", "6 hours", "-1h"])
def test_webhooks_recover_rejects_a_bad_since(setup: Setup, since: str) -> None:
    line = assert_clean_error(setup("webhooks", "recover", "ep_whatever", "--since", since))
    assert "--since" in line


# -- worker --------------------------------------------------------------------------------


def test_worker_delivers_what_was_published_while_nothing_ran(setup: Setup) -> None:
    server = Node.serve(setup.env, setup.cwd)
    worker = Node.worker(setup.env, setup.cwd)
    try:
        server.start()
        with Client(server.base_url, setup.owner_key()) as sdk:
            endpoint = sdk.webhooks.create(setup.receiver.url("/ok"), ["dashboard.*"])
        assert server.terminate() == 0

        published = json.loads(
            setup.ok("events", "publish", "dashboard.viewed", "--data", '{"id": 5}').stdout
        )
        assert setup.receiver.received() == []

        worker.start()
        [got] = wait_until(
            lambda: setup.receiver.received("/ok"),
            DELIVERY_TIMEOUT_S,
            f"the worker to deliver\n{worker.output()}",
        )
        envelope = verified(endpoint["secret"], got)
        assert envelope["id"] == published["id"]
        assert envelope["data"] == {"id": 5}
        assert worker.terminate() == 0
        assert "forecourt worker stopped" in worker.output()
        assert "Traceback" not in worker.output()
        assert len(setup.receiver.received()) == 1
    finally:
        worker.kill()
        server.kill()
