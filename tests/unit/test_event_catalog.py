"""The event catalog and the pure parts of publishing: names, schemas, sizes, sameness."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecourt.errors import InvalidInput, PayloadTooLarge
from forecourt.events import catalog
from forecourt.events.catalog import BUILTINS, NAME_RE, SYSTEM_CATEGORY, TypeView
from forecourt.events.outbox import canonical, prepare, same_request

TENANT = "ten_01TEST"

APP_TYPES = {
    "data_source": ["created", "updated", "deleted"],
    "query": ["created", "updated", "deleted", "executed"],
    "dashboard": ["created", "updated", "deleted", "viewed"],
    "alert": ["triggered", "resolved"],
    "export": ["completed"],
    "user": ["created", "updated", "deleted"],
}
SYSTEM_TYPES = [
    "key.created",
    "key.rotated",
    "key.revoked",
    "endpoint.disabled",
    "endpoint.enabled",
    "webhook.test",
    "plugin.failed",
    "plugin.execution_completed",
    "plugin.installed",
    "plugin.uninstalled",
    "connection.revoked",
]
AMOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "lines": {"type": "array", "items": {"properties": {"sku": {"type": "string"}}}},
    },
}


def custom(schema: dict[str, Any] | None = None) -> TypeView:
    return TypeView("invoice.paid", "invoice", "", schema=schema, builtin=False)


def test_every_default_type_is_built_in_with_its_category_and_a_description() -> None:
    for category, actions in APP_TYPES.items():
        for action in actions:
            view = BUILTINS[f"{category}.{action}"]
            assert view.category == category
            assert view.description
            assert view.builtin and view.schema is None and view.publishable
    for name in SYSTEM_TYPES:
        assert BUILTINS[name].category == SYSTEM_CATEGORY
        assert BUILTINS[name].description
    assert len(BUILTINS) == sum(map(len, APP_TYPES.values())) + len(SYSTEM_TYPES)
    assert all(NAME_RE.match(name) for name in BUILTINS)


def test_grouped_puts_builtin_categories_first_then_custom_ones_by_name() -> None:
    types = [
        *catalog.BUILTIN_TYPES,
        TypeView("zeta.b", "zeta", "", builtin=False),
        TypeView("billing.b", "billing", "", builtin=False),
        TypeView("billing.a", "billing", "", builtin=False),
        TypeView("dashboard.shared", "dashboard", "", builtin=False),
    ]
    groups = catalog.grouped(types)
    names = [name for name, _ in groups]
    assert names == [*APP_TYPES, SYSTEM_CATEGORY, "billing", "zeta"]
    by_name = dict(groups)
    assert [t.name for t in by_name["billing"]] == ["billing.a", "billing.b"]
    assert "dashboard.shared" in [t.name for t in by_name["dashboard"]]
    assert [t.name for t in by_name["dashboard"]] == sorted(t.name for t in by_name["dashboard"])


@pytest.mark.parametrize(
    "name", ["invoice.paid", "a.b", "data_source.v2.created", "x1.y_2", "a." + "b" * 126]
)
def test_good_type_names(name: str) -> None:
    assert catalog.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["invoice", "Invoice.paid", "invoice..paid", ".paid", "invoice.", "in-voice.paid", "a.b c", ""],
)
def test_bad_type_names(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_name(name)
    assert caught.value.field == "name"


def test_names_longer_than_the_column_are_refused() -> None:
    with pytest.raises(InvalidInput):
        catalog.check_name("a." + "b" * 127)


@given(st.text(alphabet="ab_.Z-9 ", max_size=12))
def test_check_name_accepts_exactly_the_pattern(name: str) -> None:
    expected = re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", name) is not None
    try:
        catalog.check_name(name)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted is expected


def test_the_system_category_is_reserved() -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_category(SYSTEM_CATEGORY)
    assert caught.value.field == "category"
    with pytest.raises(InvalidInput):
        catalog.check_category("Two words")
    assert catalog.check_category("billing") == "billing"


@pytest.mark.parametrize(
    "schema", [{"type": "nope"}, {"minimum": "zero"}, {"properties": []}, [], "object"]
)
def test_invalid_schemas_are_refused_naming_schema(schema: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_schema(schema)
    assert caught.value.field == "schema"


def test_valid_schema_is_returned() -> None:
    assert catalog.check_schema(AMOUNT_SCHEMA) is AMOUNT_SCHEMA


@pytest.mark.parametrize(
    ("data", "field", "json_path"),
    [
        ({"amount": -1}, "data.amount", "$.amount"),
        ({}, "data", "$"),
        ({"amount": 1, "lines": [{"sku": "a"}, {"sku": 5}]}, "data.lines.1.sku", "$.lines[1].sku"),
        ("not an object", "data", "$"),
    ],
)
def test_data_errors_name_the_json_path(data: Any, field: str, json_path: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.validate_data(AMOUNT_SCHEMA, data)
    assert caught.value.field == field
    assert caught.value.extra["json_path"] == json_path
    assert caught.value.extra["errors"][0]["field"] == field


def test_data_matching_the_schema_or_without_schema_passes() -> None:
    catalog.validate_data(AMOUNT_SCHEMA, {"amount": 0, "lines": [{"sku": "a"}]})
    catalog.validate_data(None, {"anything": [1, 2, 3]})


def test_formats_are_checked() -> None:
    schema = {"properties": {"ip": {"type": "string", "format": "ipv4"}}}
    catalog.validate_data(schema, {"ip": "192.0.2.1"})
    with pytest.raises(InvalidInput) as caught:
        catalog.validate_data(schema, {"ip": "192.0.2.300"})
    assert caught.value.field == "data.ip"


def test_prepare_fills_the_defaults() -> None:
    draft = prepare(BUILTINS["dashboard.created"], TENANT, data={"id": 1})
    assert draft.ce_id == draft.id and draft.id.startswith("evt_")
    assert not draft.explicit_id and not draft.explicit_time
    assert draft.source == f"/forecourt/{TENANT}"
    assert draft.severity == "info"
    assert abs((datetime.now(UTC) - draft.time).total_seconds()) < 5
    assert draft.size_bytes > len('{"id":1}')


def test_prepare_keeps_what_was_given_and_reads_naive_times_as_utc() -> None:
    draft = prepare(
        BUILTINS["alert.triggered"],
        TENANT,
        data=None,
        id="a-1",
        source="urn:app",
        subject="alerts/1",
        time=datetime(2026, 1, 2, 3, 4, 5),
        severity="critical",
    )
    assert (draft.ce_id, draft.source, draft.subject, draft.severity) == (
        "a-1",
        "urn:app",
        "alerts/1",
        "critical",
    )
    assert draft.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert draft.explicit_id and draft.explicit_time


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"severity": "loud"}, "severity"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"subject": "s" * 513}, "subject"),
        ({"source": ""}, "source"),
    ],
)
def test_prepare_refuses_bad_attributes(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare(BUILTINS["dashboard.created"], TENANT, data={}, **kwargs)
    assert caught.value.field == field


def test_prepare_caps_the_serialised_size() -> None:
    view = BUILTINS["export.completed"]
    small = prepare(view, TENANT, data={"blob": "x" * 100}, max_event_bytes=1024)
    assert small.size_bytes <= 1024
    with pytest.raises(PayloadTooLarge) as caught:
        prepare(view, TENANT, data={"blob": "x" * 1024}, max_event_bytes=1024)
    assert caught.value.status == 413
    assert caught.value.extra["size_bytes"] > 1024


def test_prepare_validates_against_the_types_schema() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare(custom(AMOUNT_SCHEMA), TENANT, data={"amount": "ten"})
    assert caught.value.field == "data.amount"


def test_normalize_turns_data_into_json_values() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    draft = prepare(
        BUILTINS["key.created"], TENANT, data={"at": when, "ids": (1, 2)}, normalize=True
    )
    assert draft.data == {"at": "2026-01-01T00:00:00+00:00", "ids": [1, 2]}
    with pytest.raises(InvalidInput) as caught:
        prepare(BUILTINS["key.created"], TENANT, data={"x": object()}, normalize=True)
    assert caught.value.field == "data.x"


def test_canonical_sorts_keys_and_tells_json_types_apart() -> None:
    assert canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1})
    assert len({canonical(1), canonical(1.0), canonical(True), canonical("1")}) == 4
    assert canonical({"n": 2**70}) == b'{"n":1180591620717411303424}'


def test_same_request_compares_what_the_publisher_chose() -> None:
    view = BUILTINS["dashboard.created"]
    first = prepare(view, TENANT, data={"a": 1}, subject="s")
    stored = first.event()
    assert same_request(stored, prepare(view, TENANT, data={"a": 1}, subject="s"))
    assert not same_request(stored, prepare(view, TENANT, data={"a": 2}, subject="s"))
    assert not same_request(stored, prepare(view, TENANT, data={"a": 1}, subject="t"))
    assert not same_request(stored, prepare(view, TENANT, data={"a": 1.0}, subject="s"))
    assert not same_request(
        stored, prepare(view, TENANT, data={"a": 1}, subject="s", severity="error")
    )
    assert not same_request(stored, prepare(view, TENANT, data={"a": 1}, subject="s", id="x"))
    with_id = prepare(view, TENANT, data={}, id="x").event()
    assert same_request(with_id, prepare(view, TENANT, data={}, id="x"))
    assert not same_request(with_id, prepare(view, TENANT, data={}))
    assert not same_request(with_id, prepare(view, TENANT, data={}, id="y"))
