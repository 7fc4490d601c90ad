"""The served OpenAPI document, fuzzed by schemathesis against a real started server.

A Forecourt node runs under uvicorn on the loopback (SQLite in a temporary data directory),
and schemathesis reads its ``/openapi.json`` and calls every operation with the owner key:

- ``test_operations``: for each operation, the examples, coverage and fuzzing phases
  (valid and invalid data: missing and extra fields, wrong types, out-of-range numbers, odd
  strings, unexpected methods), a bounded number of cases each;
- ``test_stateful``: sequences of calls chained by the links schemathesis infers (create a
  key, then read, update, rotate and delete it; create an event type, then fetch it; ...);
- ``test_stateful_postgres``: a smaller stateful pass on a node on PostgreSQL + Redis.

The document the operations are drawn from is built at import (one test per operation);
``test_served_document`` checks it is the one the server serves.

Every check is on, and each must pass on every call:

- ``not_a_server_error``: no 5xx, whatever the input;
- ``status_code_conformance``: every status is one the operation documents (the central
  responses of ``forecourt.http.openapi``: 401/403 where a scope is needed, 404 where a path
  names a resource, 413/422 where a body is read, 429 everywhere the rate limit applies...);
- ``content_type_conformance``: errors are ``application/problem+json`` and documented so;
- ``response_headers_conformance``: documented response headers (``Allow``, ``Retry-After``)
  are present and well-formed;
- ``response_schema_conformance``: every body matches its documented schema;
- ``negative_data_rejection``: data that violates the schema is refused with a 4xx
  (``enabled: 0`` is not a boolean, a negative number is not a time, ...);
- ``positive_data_acceptance``: data that the schema allows is not refused as invalid, except
  with a 422 naming only fields whose values a registry holds (``REGISTRY_FIELDS``: cursors,
  registered event types, installed plugins, resolvable receivers...) or paths inside free
  JSON beyond the codec's limits (``FREE_JSON_PATH``), each with its reason;
- ``missing_required_header``, ``ignored_auth``: a call without the key is a 401;
- ``unsupported_method``, ``allow_header_conformance``: a method the path does not have is a
  405 whose ``Allow`` lists every method the path has;
- ``use_after_free``, ``ensure_resource_availability`` (stateful): a deleted resource is gone
  (but a deleted key is revoked and stays readable, by design), a created one can be read.

``filter_failure`` drops nothing else, but the HTTP server's own 400 to a request it cannot
parse (it never reaches Forecourt). The fuzzer's own key and tenant are never revoked,
rotated, suspended or deleted (``map_case``): every later call would be a 401.

Calls are deterministic (fixed seed, derandomized Hypothesis, no example database), so a
failure in CI reproduces locally; budgets (``MAX_EXAMPLES``...) bound its running time.
Side effects stay inside the process: webhook URLs resolve to the loopback, which the SSRF
guard refuses before any send (private addresses are not allowed), and the node runs no
background workers, so nothing is delivered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData, UseAfterFree

from conftest import REDIS_URL, free_port
from forecourt.app import create_app
from forecourt.core import Forecourt
from forecourt.settings import DEFAULT_TIERS, OWNER_KEY_FILE, Settings
from forecourt.webhooks import ssrf

SEED = 20261201
# Cases per operation in the fuzzing phase; the examples and coverage phases add their own.
MAX_EXAMPLES = 10
STATEFUL_EXAMPLES = 20
POSTGRES_STATEFUL_EXAMPLES = 10
STATEFUL_MAX_STEPS = 10
SERVER_START_TIMEOUT_S = 30.0
UNLIMITED = 1_000_000_000

# Fields whose valid values a static schema cannot name: a value the schema allows may still
# be unknown to the registry or state that holds them, and is then refused with a 422 problem
# naming the field. ``positive_data_acceptance`` accepts such a 422 when every field the
# problem names is one of these ("*" stands for a list index).
REGISTRY_FIELDS: dict[str, str] = {
    "cursor": "a page cursor is one the previous page handed out",
    "type": "an event's type is one registered in the tenant's catalog",
    "events.*.type": "the same, in a batch",
    "url": "a webhook receiver must resolve to a public address (SSRF guard; here every "
    "name resolves to the loopback)",
    "plugin_id": "a plugin installed in this installation",
    "version": "an installed version of that plugin",
    "upgrade_to": "the same, as an upgrade target",
    "package": "a plugin package is an archive with a manifest, signed by a trusted publisher",
    "tier": "a rate-limit tier configured on this installation",
    "expires_at": "a time in the future (the document cannot name now)",
    "event_types": "whether a plugin instance takes event types depends on its plugin's type",
    "input": "a plugin's input must match that plugin's own input schema",
    "points.*.time": "a point's time is within raw retention of now (the document cannot name now)",
    "source": "'forecourt' and plugin instance ids (pin_...) are sources of Forecourt's own",
    "from": "a range's start is before its end",
    "step": "a range holds at most 11,000 steps",
    "tenants.*": "a tenant of this installation, by id or slug",
}
# A path inside a field of free JSON (``data``, ``schema``, ``metadata``, ``config``...):
# "any JSON" in the document, within the codec's limits (64-bit integers, nesting depth).
HTTP_SERVER_REFUSAL = b"Invalid HTTP request received."
FREE_JSON_PATH = re.compile(r"^(events\.\*\.)?(data|schema|metadata|config|input)[.\[]")


class LoopbackResolver:
    """Every host name resolves to the loopback, which the SSRF guard refuses."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


@dataclasses.dataclass
class Served:
    base_url: str = ""
    owner_key: str = ""
    protected: frozenset[str] = frozenset()


# The schema is read once at import, to make one test per operation; the server it is checked
# against starts in a fixture, which fills this in.
SERVED = Served()


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        secret_key="fuzz-secret",
        rate_limit_tiers={tier: {"minute": UNLIMITED} for tier in DEFAULT_TIERS},
        ip_rate_limit={"minute": UNLIMITED},
        # The event stream answers a bounded response, which the fuzzer reads to its end.
        stream_max_duration_s=0.2,
    )


def _document() -> dict[str, Any]:
    """The document the app serves at /openapi.json (``test_served_document`` checks it is)."""
    with tempfile.TemporaryDirectory() as directory:
        document: dict[str, Any] = create_app(_settings(Path(directory) / "data")).openapi()
        return document


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "checks": {"enabled": True},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
        }
    )


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())


@schema.auth(refresh_interval=None)
class OwnerKey:
    """The owner key of the started server, as a bearer token."""

    def get(self, case: Any, context: Any) -> str:
        return SERVED.owner_key

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    # The fuzzer's own key and tenant stay usable: revoking, rotating or narrowing the key, or
    # suspending or deleting the tenant, would turn every later call into a 401. Such a call
    # goes to an unknown resource's path instead.
    for name, value in (case.path_parameters or {}).items():
        if value in SERVED.protected and case.method.upper() != "GET":
            case.path_parameters[name] = "zz" + "0" * 24
    return case


@schema.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a 422 for values only a registry knows (``REGISTRY_FIELDS``),
    and a key or event type read after its DELETE: deleting a key revokes it, and deleting
    an event type archives it; both stay readable (as revoked, as archived) for the audit
    trail and for the events that carry the type."""
    if isinstance(failure, UseAfterFree) and case.path.startswith(
        ("/api/v1/keys/", "/api/v1/event-types/")
    ):
        return False
    if response.status_code == 400 and response.content == HTTP_SERVER_REFUSAL:
        # The HTTP server's own answer to a malformed request (a header it cannot parse),
        # sent before Forecourt sees the request.
        return False
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return True
    fields = [re.sub(r"\.\d+(?=\.|$)", ".*", e["field"]) for e in response.json()["errors"]]
    return not fields or not all(
        field in REGISTRY_FIELDS or FREE_JSON_PATH.match(field) for field in fields
    )


@contextlib.contextmanager
def _serve(settings: Settings) -> Iterator[Served]:
    """A node under uvicorn on the loopback; ``SERVED`` names it while it runs."""
    fc = Forecourt(settings)
    fc.webhook_config = dataclasses.replace(fc.webhook_config, resolver=LoopbackResolver())
    app = create_app(settings, forecourt=fc, run_workers=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="fuzz-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    previous = dataclasses.replace(SERVED)
    SERVED.base_url = f"http://127.0.0.1:{port}"
    SERVED.owner_key = (settings.data_dir / OWNER_KEY_FILE).read_text().strip()
    auth = {"Authorization": f"Bearer {SERVED.owner_key}"}
    keys = httpx.get(f"{SERVED.base_url}/api/v1/keys", headers=auth)
    tenants = httpx.get(f"{SERVED.base_url}/api/v1/tenants", headers=auth)
    SERVED.protected = frozenset(
        [k["id"] for k in keys.json()["items"]]
        + [t[field] for t in tenants.json()["items"] for field in ("id", "slug")]
    )
    # Nothing leaves this machine: the guard refuses every address, a public IP literal in a
    # generated URL too (names already resolve to the refused loopback).
    refuse_all = pytest.MonkeyPatch()
    refuse_all.setattr(ssrf, "_refusal_of", lambda _address, _policy: "not allowed here")
    try:
        yield SERVED
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)
        refuse_all.undo()
        SERVED.base_url, SERVED.owner_key = previous.base_url, previous.owner_key
        SERVED.protected = previous.protected


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The SQLite node every operation's test calls."""
    with _serve(_settings(tmp_path_factory.mktemp("fuzz") / "data")) as node:
        yield node


def test_served_document(served: Served) -> None:
    """The fuzzed document is the one the server serves."""
    response = httpx.get(f"{served.base_url}/openapi.json")
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None)
def test_operations(case: Any, served: Served) -> None:
    case.call_and_validate(base_url=served.base_url)


def _run_stateful(base_url: str, examples: int) -> None:
    """Chains of calls; every step's failures are collected, then reported all at once.

    Each step depends on the server's earlier answers, which Hypothesis cannot replay: a
    failure is recorded where it is found (no shrinking, no replay), and a run that Hypothesis
    ends early because a chain drew differently than before keeps what it found so far.
    """
    failures: list[str] = []
    steps = 0

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url}

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            nonlocal steps
            steps += 1
            try:
                super().validate_response(response, case, *args, **kwargs)
            except FailureGroup as group:
                failures.append(str(group))

    with contextlib.suppress(hypothesis.errors.FlakyStrategyDefinition):
        Machine.run(
            settings=hypothesis.settings(
                max_examples=examples,
                stateful_step_count=STATEFUL_MAX_STEPS,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
        )
    assert not failures, "\n\n".join(failures)
    assert steps >= examples, f"only {steps} stateful steps ran"


def test_stateful(served: Served) -> None:
    _run_stateful(served.base_url, STATEFUL_EXAMPLES)


@pytest.mark.postgres
@pytest.mark.redis
def test_stateful_postgres(pg_database: str, redis_prefix: str, tmp_path: Path) -> None:
    """A smaller stateful pass on PostgreSQL + Redis."""
    settings = _settings(tmp_path / "data").model_copy(
        update={"database_url": pg_database, "redis_url": REDIS_URL, "redis_prefix": redis_prefix}
    )
    with _serve(settings) as node:
        _run_stateful(node.base_url, POSTGRES_STATEFUL_EXAMPLES)
