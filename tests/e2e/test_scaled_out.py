"""Events to webhooks through real processes, driven with the SDK, received on loopback.

Scaled out: a fresh PostgreSQL database migrated with ``forecourt migrate``, then an API node
(``forecourt serve --no-workers``) and a delivery node (``forecourt worker``) sharing it and
Redis. Embedded: ``forecourt serve`` alone on SQLite, delivering in-process. The same flow
runs on both: subscribe to ``dashboard.*``, publish, receive every matching event once and
signed (checked with the SDK's ``verify_webhook`` and with the ``standardwebhooks``
library), rotate the secret, test the endpoint, ride out a receiver outage, and stop cleanly
on SIGTERM.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from processes import Node, ThreadedReceiver, terminate_all, wait_until

from commands import clean_env
from commands import run as cli
from conftest import REDIS_URL, RUN_ID
from forecourt.client import Client, WebhookVerificationError, verify_webhook
from receivers import Received, Reply

SECRET_KEY = "scaled-out-secret-" + RUN_ID
DELIVERY_TIMEOUT_S = 15.0
HOOK = "/hook"
OUTAGE_BODY = b"down for maintenance"


@dataclass
class Deployment:
    """The running nodes of one deployment and where its API answers."""

    nodes: list[Node]
    base_url: str
    data_dir: Path

    def owner_key(self) -> str:
        return (self.data_dir / "owner-key").read_text().strip()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.output()}" for n in self.nodes)


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("scaled-out", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    data_dir = tmp_path / "data"
    settings = {"webhook_allow_private": "127.0.0.0/8", "secret_key": SECRET_KEY}
    nodes: list[Node] = []
    try:
        if request.param == "embedded":
            env = clean_env(data_dir, **settings)
            nodes.append(Node.serve(env, tmp_path).start())
        else:
            env = clean_env(
                data_dir,
                database_url=request.getfixturevalue("empty_pg_database"),
                redis_url=REDIS_URL,
                redis_prefix=request.getfixturevalue("redis_prefix"),
                **settings,
            )
            migrated = cli(env, tmp_path, "migrate")
            assert migrated.returncode == 0, migrated.stderr
            # The API node bootstraps the empty database (tenant, owner key) before the
            # worker starts, so there is exactly one first start.
            nodes.append(Node.serve(env, tmp_path, "--no-workers").start())
            nodes.append(Node.worker(env, tmp_path).start())
        assert not (request.param == "scaled-out" and (data_dir / "forecourt.db").exists())
        yield Deployment(nodes, nodes[0].base_url, data_dir)
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver() as started:
        yield started


def verify_with_both(secret: str, got: Received) -> dict[str, Any]:
    """The envelope, once the SDK and the standardwebhooks library both accept the request
    as signed with ``secret``."""
    verify_webhook(secret, got.body, got.headers)
    envelope: dict[str, Any] = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert envelope == json.loads(got.body)
    return envelope


def signatures(got: Received) -> list[str]:
    lowered = {k.lower(): v for k, v in got.headers.items()}
    return str(lowered["webhook-signature"]).split(" ")


def deliveries_of(client: Client, endpoint_id: str, **filters: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.webhooks.deliveries(endpoint_id, cursor=cursor, limit=100, **filters)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_events_reach_a_verified_receiver(
    deployment: Deployment, receiver: ThreadedReceiver
) -> None:
    with Client(deployment.base_url, deployment.owner_key(), timeout=20.0) as client:
        endpoint = client.webhooks.create(receiver.url(HOOK), ["dashboard.*"])
        endpoint_id, secret = endpoint["id"], endpoint["secret"]
        assert secret.startswith("whsec_")

        # -- publish: ten matching events, ten that no endpoint subscribes to -------------
        wanted: list[str] = []
        for index in range(20):
            if index % 2:
                client.events.publish("query.executed", {"query": index})
            else:
                wanted.append(client.events.publish("dashboard.created", {"id": index})["id"])
        got = wait_until(
            lambda: len(receiver.received(HOOK)) >= len(wanted) and receiver.received(HOOK),
            DELIVERY_TIMEOUT_S,
            f"{len(wanted)} deliveries\n{deployment.logs()}",
        )
        envelopes = [verify_with_both(secret, r) for r in got]
        assert sorted(e["id"] for e in envelopes) == sorted(wanted)
        assert {e["type"] for e in envelopes} == {"dashboard.created"}
        assert len({r.webhook_id for r in got}) == len(wanted)
        assert all(r.headers["User-Agent"].startswith("Forecourt-Webhooks/") for r in got)
        with pytest.raises(WebhookVerificationError):
            verify_webhook("whsec_" + "A" * 44, got[0].body, got[0].headers)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(got[0].body + b" ", got[0].headers)

        # The API records each attempt just after the receiver answers it.
        listed = wait_until(
            lambda: (
                (rows := deliveries_of(client, endpoint_id))
                and all(d["status"] == "succeeded" for d in rows)
                and rows
            ),
            DELIVERY_TIMEOUT_S,
            "every delivery recorded as succeeded",
        )
        assert len(listed) == len(wanted)
        assert {d["event_type"] for d in listed} == {"dashboard.created"}
        assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in listed)
        assert {d["id"] for d in listed} == {r.webhook_id for r in got}
        detail = client.deliveries.get(listed[0]["id"])
        [attempt] = detail["attempt_log"]
        assert attempt["status_code"] == 200
        assert attempt["response_excerpt"] == "ok"
        assert attempt["error_class"] is None

        # -- rotate: the old and the new secret both sign during the overlap ------------
        before_rotation = len(receiver.received(HOOK))
        rotated = client.webhooks.rotate_secret(endpoint_id)
        new_secret = rotated["secret"]
        assert new_secret.startswith("whsec_") and new_secret != secret
        expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=5)
        after_rotation = client.events.publish("dashboard.updated", {"id": 99})["id"]
        [signed_twice] = wait_until(
            lambda: [
                r for r in receiver.received(HOOK) if json.loads(r.body)["id"] == after_rotation
            ],
            DELIVERY_TIMEOUT_S,
            "the delivery after the rotation",
        )
        assert len(signatures(signed_twice)) == 2
        verify_with_both(secret, signed_twice)
        verify_with_both(new_secret, signed_twice)

        # -- test: a signed webhook.test, sent now, its attempt returned ----------------
        tested = client.webhooks.test(endpoint_id)
        assert tested["status_code"] == 200
        assert tested["attempt_no"] == 1
        probe = [r for r in receiver.received(HOOK) if json.loads(r.body)["type"] == "webhook.test"]
        assert len(probe) == 1
        assert verify_with_both(new_secret, probe[0])["data"]["endpoint_id"] == endpoint_id

        # -- outage: attempts fail and are logged; nothing is lost ----------------------
        receiver.reply(HOOK, Reply(status=500, body=OUTAGE_BODY))
        for index in range(3):
            client.events.publish("dashboard.deleted", {"id": 100 + index})
        failing = wait_until(
            lambda: (
                (rows := deliveries_of(client, endpoint_id, event_type="dashboard.deleted"))
                and len(rows) == 3
                and all(d["status"] == "retrying" for d in rows)
                and rows
            ),
            DELIVERY_TIMEOUT_S,
            "three deliveries retrying",
        )
        for row in failing:
            assert row["attempts"] == 1
            assert row["last_status_code"] == 500
            [failed] = client.deliveries.get(row["id"])["attempt_log"]
            assert failed["status_code"] == 500
            assert failed["response_excerpt"] == OUTAGE_BODY.decode()

        receiver.reply(HOOK, Reply())
        chosen = failing[0]["id"]
        assert client.deliveries.retry(chosen)["status"] in ("pending", "delivering", "succeeded")
        retried = wait_until(
            lambda: (found := client.deliveries.get(chosen))["status"] == "succeeded" and found,
            DELIVERY_TIMEOUT_S,
            "the retried delivery to succeed",
        )
        assert retried["attempts"] == 2
        assert [a["status_code"] for a in retried["attempt_log"]] == [500, 200]
        assert [r.webhook_id for r in receiver.received(HOOK)].count(chosen) == 2
        # The other two come back on their own (the default schedule's next step is 5 s).
        wait_until(
            lambda: all(
                d["status"] == "succeeded"
                for d in deliveries_of(client, endpoint_id, event_type="dashboard.deleted")
            ),
            DELIVERY_TIMEOUT_S,
            "the other deliveries to recover by themselves",
        )
        ids = Counter(r.webhook_id for r in receiver.received(HOOK))
        assert all(ids[d["id"]] == 2 for d in failing)
        # Every request since the rotation, failed attempts included, carries both signatures.
        for got_one in receiver.received(HOOK)[before_rotation:]:
            verify_with_both(secret, got_one)
            verify_with_both(new_secret, got_one)

    assert terminate_all(deployment.nodes) == [0] * len(deployment.nodes), deployment.logs()
    assert "Traceback" not in deployment.logs(), deployment.logs()


@pytest.mark.postgres
def test_a_worker_refuses_an_unmigrated_database(tmp_path: Path, empty_pg_database: str) -> None:
    env = clean_env(tmp_path / "data", database_url=empty_pg_database, redis_url=REDIS_URL)
    result = cli(env, tmp_path, "worker")
    assert result.returncode == 1, result.stderr
    assert "forecourt migrate" in result.stderr
    assert "Traceback" not in result.stderr
