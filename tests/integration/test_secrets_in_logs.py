"""Secrets never reach a log line, the terminal or the audit log.

One full flow on a fresh installation, with every log record captured (every logger, at
DEBUG) and the process's stdout and stderr: the first start's owner key, keys created and
rotated, a webhook endpoint with a secret and a custom header of its own, its secret revealed
and rotated, a delivery to a receiver on loopback, a user created, signed in (once with a
wrong password), acting through the session cookie and CSRF token, changing password, and
signing out. Every secret value the flow saw is then looked for in every line, in the ring
of recent records and what GET /api/v1/system/logs shows of it, and in every audit row.
The one exception: the owner key, shown once on the terminal at first start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from conftest import Harness
from forecourt.audit.models import AuditEntry
from forecourt.http.middleware.access import SESSION_COOKIE
from forecourt.observability.logring import RING
from forecourt.users.routes import CSRF_COOKIE
from receivers import Receiver

CUSTOM_SECRET = "whsec_" + "c2VjcmV0LWNob3Nlbi1ieS10aGUtdXNlci0xMjM0NTY3OA=="
HEADER_VALUE = "hdr-value-7f3a9c1e5b2d4f60"
PASSWORD = "correct horse battery staple 9431"
NEW_PASSWORD = "a second passphrase, longer 5712"
WRONG_PASSWORD = "not the password at all 0274"
EMAIL = "ada@example.com"
TAIL = 16  # a secret's last characters: enough to be the secret, never a shown prefix
# The database drivers' statement and row tracing (off unless an operator turns it on) shows
# every value written or read. It may show what is stored in clear by design (a session's
# CSRF token, which its non-HttpOnly cookie holds anyway; custom header values, masked in
# responses and the audit log), never what is stored hashed or encrypted.
DB_TRACES = ("sqlalchemy.engine", "aiosqlite", "asyncpg")


class Secrets:
    """Every secret value the flow saw, named."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, bool]] = {}

    def add(self, name: str, value: Any, *, stored_in_clear: bool = False) -> str:
        assert isinstance(value, str) and len(value) >= 12, (name, value)
        self.values[name] = (value, stored_in_clear)
        return value

    def needles(self) -> Iterator[tuple[str, str, bool]]:
        """What to look for: each value, and its tail (a log may drop a known prefix)."""
        for name, (value, in_clear) in self.values.items():
            yield name, value, in_clear
            yield f"{name} (its last {TAIL} characters)", value[-TAIL:], in_clear


def _hear_everything(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG for every logger known now; the capture handler on those that do not propagate."""
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)
            if not logger.propagate and caplog.handler not in logger.handlers:
                logger.addHandler(caplog.handler)


def _unhear(caplog: pytest.LogCaptureFixture) -> None:
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and caplog.handler in logger.handlers:
            logger.removeHandler(caplog.handler)


def _record_text(record: logging.LogRecord) -> str:
    """A record as any formatter could write it: message, exception, stack, every attribute."""
    formatted = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    return f"{formatted}\n{vars(record)!r}"


async def _audit_rows(h: Harness) -> list[str]:
    async with h.fc.sessionmaker() as session:
        rows = (await session.scalars(select(AuditEntry))).all()
    columns = [column.name for column in AuditEntry.__table__.columns]
    return [repr({c: getattr(row, c) for c in columns}) for row in rows]


async def _flow(h: Harness, receiver: Receiver, secrets: Secrets) -> None:
    owner = h.auth()

    async def ok(method: str, url: str, expected: int = 200, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", owner)
        response = await h.client.request(method, url, **kwargs)
        assert response.status_code == expected, (method, url, response.text)
        return response.json() if response.content else None

    # Keys: created, used, rotated, used again.
    created = await ok(
        "POST",
        "/api/v1/keys",
        201,
        json={"name": "publisher", "scopes": ["events:publish", "webhooks:read"]},
    )
    publisher = secrets.add("a created key", created["key"])
    await ok("GET", "/api/v1/webhooks", headers=h.auth(publisher))
    rotated = await ok("POST", f"/api/v1/keys/{created['id']}/rotate", json={})
    publisher = secrets.add("a rotated key", rotated["key"])
    secrets.add("a second created key", (await ok(
        "POST", "/api/v1/keys", 201, json={"name": "reader", "scopes": ["keys:read"]}
    ))["key"])  # fmt: skip

    # Webhooks: one with its own secret and header, one with a generated secret.
    endpoint = await ok(
        "POST",
        "/api/v1/webhooks",
        201,
        json={
            "url": receiver.url("/hook"),
            "event_types": ["dashboard.*"],
            "secret": secrets.add("a webhook secret given by the user", CUSTOM_SECRET),
            "headers": {
                "X-Api-Token": secrets.add(
                    "a custom header value", HEADER_VALUE, stored_in_clear=True
                )
            },
            "description": "with a secret of its own",
        },
    )
    other = await ok(
        "POST", "/api/v1/webhooks", 201, json={"url": receiver.url("/other"), "event_types": []}
    )
    revealed = await ok("GET", f"/api/v1/webhooks/{other['id']}/secret")
    secrets.add("a generated webhook secret", revealed["secret"])
    if other.get("secret"):
        assert other["secret"] == revealed["secret"]
    assert (await ok("GET", f"/api/v1/webhooks/{endpoint['id']}/secret"))["secret"] == (
        CUSTOM_SECRET
    )
    new_secret = await ok("POST", f"/api/v1/webhooks/{endpoint['id']}/secret/rotate", json={})
    secrets.add("a rotated webhook secret", new_secret["secret"])

    # A delivery, signed with both secrets during the overlap, with the custom header.
    await ok(
        "POST",
        "/api/v1/events",
        201,
        json={"type": "dashboard.created", "data": {"name": "Q3"}},
        headers=h.auth(publisher),
    )
    await receiver.wait_for(
        lambda: any(r.path == "/hook" for r in receiver.completed), 30.0, "the delivery"
    )
    [delivered] = [r for r in receiver.received if r.path == "/hook"]
    assert delivered.headers["X-Api-Token"] == HEADER_VALUE

    # Users: created with a password, a failed and a good sign-in, cookie and CSRF use.
    user = await ok(
        "POST",
        "/api/v1/users",
        201,
        json={"email": EMAIL, "password": secrets.add("a password", PASSWORD), "role": "member"},
    )
    secrets.add("a wrong password", WRONG_PASSWORD)
    failed = await h.client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": WRONG_PASSWORD}
    )
    assert failed.status_code == 401, failed.text
    signed_in = await h.client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    token = secrets.add("a session token", signed_in.cookies[SESSION_COOKIE])
    csrf = secrets.add("a CSRF token", signed_in.json()["csrf_token"], stored_in_clear=True)
    assert signed_in.cookies[CSRF_COOKIE] == csrf
    h.client.cookies.clear()
    cookies = {"Cookie": f"{SESSION_COOKIE}={token}; {CSRF_COOKIE}={csrf}"}
    me = await ok("GET", "/api/v1/auth/me", headers=cookies)
    assert me
    # A write without the CSRF token is refused; with a wrong one too.
    for given in ({}, {"X-CSRF-Token": "wrong-" + csrf[::-1]}):
        refused = await h.client.post("/api/v1/auth/logout", headers={**cookies, **given})
        assert refused.status_code == 403, refused.text
    await ok(
        "PATCH",
        f"/api/v1/users/{user['id']}",
        json={"password": secrets.add("a new password", NEW_PASSWORD)},
    )
    again = await h.client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": NEW_PASSWORD}
    )
    assert again.status_code == 200, again.text
    second_token = secrets.add("a second session token", again.cookies[SESSION_COOKIE])
    second_csrf = secrets.add(
        "a second CSRF token", again.json()["csrf_token"], stored_in_clear=True
    )
    h.client.cookies.clear()
    await h.client.post(
        "/api/v1/auth/logout",
        headers={
            "Cookie": f"{SESSION_COOKIE}={second_token}; {CSRF_COOKIE}={second_csrf}",
            "X-CSRF-Token": second_csrf,
        },
    )
    # The old key, in its rotation grace, refused a scope; the password sent as a key.
    refused = await h.client.get("/api/v1/keys", headers=h.auth(created["key"]))
    assert refused.status_code == 403, refused.text
    unknown = await h.client.get("/api/v1/keys", headers=h.auth(PASSWORD))
    assert unknown.status_code == 401, unknown.text


async def test_no_secret_reaches_a_log_line_the_terminal_or_the_audit_log(
    harness_factory: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    secrets = Secrets()
    _hear_everything(caplog)
    try:
        async with Receiver() as receiver:
            h: Harness = await harness_factory(
                webhook_allow_private="127.0.0.0/8", delivery_poll_interval_s=0.05
            )
            _hear_everything(caplog)  # loggers made while starting
            owner = h.owner_key
            await _flow(h, receiver, secrets)
            audit = await _audit_rows(h)
            records = [(r.name, _record_text(r)) for r in caplog.records]
            # The ring of recent records, directly and as GET /api/v1/system/logs shows it.
            records += [(f"ring {e.logger}", e.message) for e in RING.entries()]
            shown = await h.client.get(
                "/api/v1/system/logs", params={"level": "debug", "limit": 2000}, headers=h.auth()
            )
            assert shown.status_code == 200, shown.text
            records += [("GET /api/v1/system/logs", shown.text)]
    finally:
        _unhear(caplog)
    terminal = capfd.readouterr()
    out = terminal.out + terminal.err

    assert len(records) > 20  # the capture did hear the flow
    assert len(audit) >= 8
    leaks = []
    for name, needle, in_clear in secrets.needles():
        leaks += [
            (name, f"log {by}", line)
            for by, line in records
            if needle in line and not (in_clear and by.startswith(DB_TRACES))
        ]
        leaks += [(name, "audit", row) for row in audit if needle in row]
        leaks += [(name, "terminal", line) for line in out.splitlines() if needle in line]
    for needle in (owner, owner[-TAIL:]):
        leaks += [("the owner key", f"log {by}", line) for by, line in records if needle in line]
        leaks += [("the owner key", "audit", row) for row in audit if needle in row]
    # The owner key: at most its one display at first start (none when not on a terminal).
    assert out.count(owner[-TAIL:]) <= 1
    where = sorted({(name, place) for name, place, _ in leaks})
    samples = "\n".join(line[:400] for _, _, line in leaks[:5])
    assert where == [], f"{where}\n{samples}"


def test_the_needles_are_secrets_not_shared_words() -> None:
    # Each tail is specific enough that finding it means finding the secret.
    for value in (CUSTOM_SECRET, HEADER_VALUE, PASSWORD, NEW_PASSWORD, WRONG_PASSWORD):
        assert re.search(r"[0-9]", value[-TAIL:]), value
