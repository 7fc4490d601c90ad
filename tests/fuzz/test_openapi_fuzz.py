"""The served OpenAPI document, fuzzed by schemathesis against a real started server.

A Forecourt node runs under uvicorn on the loopback (SQLite in a temporary data directory),
and schemathesis reads its ``/openapi.json`` and calls every operation with the owner key:

- ``test_operations``: for each operation, the examples, coverage and fuzzing phases
  (valid and invalid data: missing and extra fields, wrong types, out-of-range numbers, odd
  strings, unexpected methods), a bounded number of cases each;
- ``test_stateful``: sequences of calls chained by the links schemathesis infers (create a
  key, then read, update, rotate and delete it; create an event type, then fetch it; ...).

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
  where the schema cannot name the value (see ``REGISTRY_REFUSALS``);
- ``missing_required_header``, ``ignored_auth``: a call without the key is a 401;
- ``unsupported_method``, ``allow_header_conformance``: a method the path does not have is a
  405 whose ``Allow`` lists every method the path has;
- ``use_after_free``, ``ensure_resource_availability`` (stateful): a deleted resource is gone,
  a created one can be read.

Calls are deterministic (fixed seed, derandomized Hypothesis, no example database), so a
failure in CI reproduces locally. Side effects stay inside the process: webhook URLs resolve
to the loopback, which the SSRF guard refuses before any send (private addresses are not
allowed), and the node runs no background workers, so nothing is delivered.
"""

from __future__ import annotations

import dataclasses
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

from conftest import free_port
from forecourt.app import create_app
from forecourt.core import Forecourt
from forecourt.settings import DEFAULT_TIERS, OWNER_KEY_FILE, Settings

SEED = 20261201
# Cases per operation in the fuzzing phase; the examples and coverage phases add their own.
MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 40
STATEFUL_MAX_STEPS = 10
SERVER_START_TIMEOUT_S = 30.0
UNLIMITED = 1_000_000_000

# Values a static schema cannot name, each refused with a 422 problem when unknown to the
# registry that holds them: ``positive_data_acceptance`` accepts a 422 on these operations.
REGISTRY_REFUSALS: dict[str, str] = {}


class LoopbackResolver:
    """Every host name resolves to the loopback, which the SSRF guard refuses."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


@dataclasses.dataclass
class Served:
    base_url: str = ""
    owner_key: str = ""
    owner_key_id: str = ""


# The schema is read once at import, to make one test per operation; the server it is checked
# against starts in a fixture, which fills this in.
SERVED = Served()


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        secret_key="fuzz-secret",
        rate_limit_tiers={tier: {"minute": UNLIMITED} for tier in DEFAULT_TIERS},
        ip_rate_limit={"minute": UNLIMITED},
    )


def _document() -> dict[str, Any]:
    """The document the app serves at /openapi.json (``test_served_document`` checks it is)."""
    with tempfile.TemporaryDirectory() as directory:
        document: dict[str, Any] = create_app(_settings(Path(directory) / "data")).openapi()
        return document


def _config() -> SchemathesisConfig:
    operations = [
        {
            "include-operation-id": operation_id,
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
                }
            },
        }
        for operation_id in REGISTRY_REFUSALS
    ]
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "checks": {"enabled": True},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "operations": operations,
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
    # The fuzzer's own key stays valid: revoking, rotating or narrowing it would turn every
    # later call into a 401. Such a call goes to another (unknown) key's path instead.
    for name, value in (case.path_parameters or {}).items():
        if value == SERVED.owner_key_id and case.method.upper() != "GET":
            case.path_parameters[name] = "key_" + "0" * 26
    return case


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    settings = _settings(data_dir)
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
    SERVED.base_url = f"http://127.0.0.1:{port}"
    SERVED.owner_key = (data_dir / OWNER_KEY_FILE).read_text().strip()
    keys = httpx.get(
        f"{SERVED.base_url}/api/v1/keys", headers={"Authorization": f"Bearer {SERVED.owner_key}"}
    )
    SERVED.owner_key_id = next(k["id"] for k in keys.json()["items"] if k["name"] == "owner")
    try:
        yield SERVED
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)


def test_served_document(served: Served) -> None:
    """The fuzzed document is the one the server serves."""
    response = httpx.get(f"{served.base_url}/openapi.json")
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None)
def test_operations(case: Any, served: Served) -> None:
    case.call_and_validate(base_url=served.base_url)


def test_stateful(served: Served) -> None:
    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": served.base_url}

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_MAX_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
