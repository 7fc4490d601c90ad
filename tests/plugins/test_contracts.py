"""Type contracts: each type's input is checked before a run, its output after."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from forecourt.errors import InvalidInput
from forecourt.plugins.contracts import TYPES, validate_input, validate_output
from forecourt.plugins.manifest import PLUGIN_TYPES

EVENT = {
    "specversion": "1.0",
    "id": "evt_1",
    "source": "/orders",
    "type": "alert.triggered",
    "time": "2025-01-01T00:00:00Z",
    "tenant": "default",
    "severity": "critical",
    "data": {"disk": "/", "percent": 97},
}
VEGA = "https://vega.github.io/schema/vega-lite/v5.json"

GOOD: dict[str, tuple[Any, Any]] = {
    "transformation": ({"records": [{"a": 1}]}, {"records": []}),
    "export": (
        {"records": [{"a": 1}], "format": "csv"},
        {"media_type": "text/csv", "content": "a\r\n1\r\n", "encoding": "utf-8"},
    ),
    "datasource": (
        {"query": {"sql": "select 1"}},
        {"columns": [{"name": "one", "type": "integer"}], "rows": [[1]]},
    ),
    "visualization": (
        {"data": [{"x": 1}], "options": {"title": "t"}},
        {"spec": {"$schema": VEGA, "mark": "bar"}},
    ),
    "alert": ({"event": EVENT}, {"sent": True, "detail": "ok"}),
    "collector": (
        {"interval_s": 30},
        {"metrics": [{"name": "queue.depth", "value": 3, "labels": {"queue": "mail"}}]},
    ),
    "hook": ({"event": EVENT}, {"events": [{"type": "order.checked", "data": {}}]}),
}


def test_every_plugin_type_has_a_contract_with_valid_schemas() -> None:
    assert set(TYPES) == set(PLUGIN_TYPES) == set(GOOD)
    triggers = {name: info.trigger for name, info in TYPES.items()}
    assert triggers["collector"] == "schedule"
    assert triggers["alert"] == triggers["hook"] == "event"
    for info in TYPES.values():
        Draft202012Validator.check_schema(info.input_schema)
        Draft202012Validator.check_schema(info.output_schema)
        json.dumps(info.as_dict())


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_inputs_and_outputs_pass(kind: str) -> None:
    given, produced = GOOD[kind]
    validate_input(kind, given)
    assert validate_output(kind, produced) == []


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("transformation", {"records": [1]}, "input.records[0]"),
        ("transformation", {}, "input.records"),
        ("export", {"records": []}, "input.format"),
        ("datasource", {"query": "select 1"}, "input.query"),
        ("visualization", {"data": [], "options": []}, "input.options"),
        ("alert", {"event": {"type": "x"}}, "input.event.id"),
        ("hook", {"event": {**EVENT, "specversion": "0.3"}}, "input.event.specversion"),
    ],
)
def test_bad_inputs_name_the_field(kind: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_input(kind, value)
    fields = [item["field"] for item in caught.value.extra["errors"]]
    assert field in fields
    assert caught.value.field == fields[0]


def test_every_input_problem_is_listed() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_input("alert", {"event": {"specversion": "1.0"}})
    fields = {item["field"] for item in caught.value.extra["errors"]}
    assert fields == {"input.event.id", "input.event.source", "input.event.type"}


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("transformation", {"records": {"a": 1}}, "output.records"),
        (
            "export",
            {"media_type": "text/csv", "content": "x", "encoding": "latin-1"},
            "output.encoding",
        ),
        ("export", {"media_type": "a/b", "content": "***", "encoding": "base64"}, "output.content"),
        ("datasource", {"columns": [{"name": "a"}], "rows": []}, "output.columns[0].type"),
        (
            "visualization",
            {"spec": {"$schema": "https://example.com/x.json"}},
            "output.spec.$schema",
        ),
        ("visualization", {"spec": {"mark": "bar"}}, "output.spec.$schema"),
        ("alert", {"sent": "yes"}, "output.sent"),
        ("collector", {"metrics": [{"name": "Bad Name", "value": 1}]}, "output.metrics[0].name"),
        ("collector", {"metrics": [{"name": "a", "value": "1"}]}, "output.metrics[0].value"),
        (
            "collector",
            {"metrics": [{"name": "a", "value": 1, "labels": {"k": 1}}]},
            "output.metrics[0].labels.k",
        ),
        ("hook", {"events": [{"data": {}}]}, "output.events[0].type"),
        ("hook", None, "output"),
    ],
)
def test_bad_outputs_are_problems_at_their_path(kind: str, value: Any, field: str) -> None:
    assert field in [item["field"] for item in validate_output(kind, value)]


def test_a_collector_reports_only_declared_metrics() -> None:
    output = {"metrics": [{"name": "queue.depth", "value": 1}, {"name": "queue.age_s", "value": 2}]}
    assert validate_output("collector", output, metrics={"queue.depth", "queue.age_s"}) == []
    found = validate_output("collector", output, metrics={"queue.depth"})
    assert [item["field"] for item in found] == ["output.metrics[1].name"]


def test_an_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        validate_output("widget", {})


def test_a_trailing_newline_does_not_slip_through() -> None:
    found = validate_output("collector", {"metrics": [{"name": "rows\n", "value": 1}]})
    assert [item["field"] for item in found] == ["output.metrics[0].name"]
    found = validate_output("visualization", {"spec": {"$schema": VEGA + "\n"}})
    assert [item["field"] for item in found] == ["output.spec.$schema"]
