"""The manifest: schema and semantic checks, every problem at its JSON path, SemVer order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from forecourt import __version__
from forecourt.errors import InvalidPackage
from forecourt.plugins.manifest import (
    PLUGIN_TYPES,
    check_resources,
    is_semver,
    load_manifest,
    manifest_schema,
    network_rule_problem,
    semver_key,
)

TOML = b"""
id = "com.example.upper"
name = "Upper"
version = "1.2.3"
type = "transformation"
entry_point = "plugin:run"

[permissions]
network = ["api.example.com:443"]

[config_schema]
type = "object"
properties = { token = { type = "string", secret = true } }
"""


def raw(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "upper-case",
        "name": "Upper",
        "version": "1.0.0",
        "type": "transformation",
        "entry_point": "plugin:run",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def problems(document: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    """field -> message of every problem, or {} when the manifest loads."""
    try:
        load_manifest(json.dumps(document).encode(), "forecourt-plugin.json", **kwargs)
    except InvalidPackage as exc:
        return {item["field"]: item["message"] for item in exc.extra["errors"]}
    return {}


def test_a_toml_manifest_loads_with_defaults_and_keeps_its_exact_bytes() -> None:
    manifest = load_manifest(TOML, "forecourt-plugin.toml", files={"plugin.py"})
    assert manifest.id == "com.example.upper"
    assert manifest.runtime == "python"
    assert manifest.permissions.network == ("api.example.com:443",)
    assert manifest.permissions.events == ()
    assert manifest.resources.timeout_s is None
    assert manifest.manifest_bytes == TOML
    assert manifest.raw["config_schema"]["properties"]["token"]["secret"] is True
    assert (manifest.entry_target, manifest.entry_function) == ("plugin", "run")
    with pytest.raises(ValidationError):
        manifest.id = "other"  # type: ignore[misc]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    document = raw(
        id="Com.Example",
        version="1.0",
        name=None,
        colour="red",
        permissions={"network": ["ok.example.com", "https://x.example.com/"], "metrics": ["9x"]},
        resources={"memory_mib": 0},
    )
    found = problems(document)
    assert set(found) == {
        "id",
        "version",
        "name",
        "colour",
        "permissions.network[1]",
        "permissions.metrics[0]",
        "resources.memory_mib",
    }
    assert found["name"] == "is required"
    assert found["colour"] == "is not a known field"
    assert "semantic version" in found["version"]
    assert "scheme" in found["permissions.network[1]"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"type": "collector"}, "permissions.schedule_interval_s"),
        (
            {"type": "collector", "permissions": {"schedule_interval_s": 4}},
            "permissions.schedule_interval_s",
        ),
        (
            {"type": "export", "permissions": {"schedule_interval_s": 60}},
            "permissions.schedule_interval_s",
        ),
        ({"type": "hook"}, "permissions.events"),
        ({"type": "alert", "permissions": {"events": []}}, "permissions.events"),
        ({"type": "widget"}, "type"),
        ({"runtime": "java"}, "runtime"),
    ],
)
def test_per_type_rules(changes: dict[str, Any], field: str) -> None:
    assert field in problems(raw(**changes))


def test_each_type_loads_when_it_follows_its_rules() -> None:
    extra: dict[str, dict[str, Any]] = {
        "collector": {"schedule_interval_s": 5},
        "hook": {"events": ["order.*"]},
        "alert": {"events": ["*"]},
    }
    for kind in PLUGIN_TYPES:
        assert problems(raw(type=kind, permissions=extra.get(kind, {}))) == {}, kind


@pytest.mark.parametrize(
    ("requirement", "ok"),
    [
        ("six==1.17.0", True),
        ("requests[socks]==2.32.3", True),
        ("requests>=2", False),
        ("requests", False),
        ("requests==2.*", False),
        ("requests==2.0,!=2.1", False),
        ("pkg @ https://example.com/pkg.whl", False),
        ("not a requirement!", False),
    ],
)
def test_dependencies_must_be_pinned(requirement: str, ok: bool) -> None:
    found = problems(raw(dependencies=[requirement]))
    assert ("dependencies[0]" not in found) is ok


def test_a_dependency_listed_twice_is_refused() -> None:
    found = problems(raw(dependencies=["six==1.17.0", "Six==1.16.0"]))
    assert "more than once" in found["dependencies[1]"]


def test_min_forecourt_version_newer_than_the_server_is_refused() -> None:
    assert problems(raw(min_forecourt_version=__version__)) == {}
    assert (
        "this server is 1.2.0"
        in problems(raw(min_forecourt_version="1.3.0"), forecourt_version="1.2.0")[
            "min_forecourt_version"
        ]
    )
    assert problems(raw(min_forecourt_version="1.2.0-rc.1"), forecourt_version="1.2.0") == {}
    assert problems(raw(min_forecourt_version="1.2.0"), forecourt_version="1.2.0.dev3") == {}


@pytest.mark.parametrize(
    ("runtime", "entry", "files", "ok"),
    [
        ("python", "plugin:run", {"plugin.py"}, True),
        ("python", "pkg.mod:fn", {"pkg/mod.py"}, True),
        ("python", "pkg:fn", {"pkg/__init__.py"}, True),
        ("python", "plugin:run", {"other.py"}, False),
        ("python", "plugin.py:run", {"plugin.py"}, False),
        ("python", "plugin", {"plugin.py"}, False),
        ("python", "../up:run", set(), False),
        ("wasm", "build/app.wasm:run", {"build/app.wasm"}, True),
        ("wasm", "app.wasm:run", set(), False),
        ("wasm", "../app.wasm:run", {"../app.wasm"}, False),
        ("wasm", "plugin:run", {"plugin.py"}, False),
    ],
)
def test_entry_points_name_a_file_of_the_package(
    runtime: str, entry: str, files: set[str], ok: bool
) -> None:
    found = problems(raw(runtime=runtime, entry_point=entry), files=files)
    assert ("entry_point" not in found) is ok, found


@pytest.mark.parametrize(
    "rule",
    [
        "example.com",
        "api.example.com:443",
        "*.example.com",
        "10.0.0.1:8080",
        "[::1]:443",
        "[2001:db8::1]",
    ],
)
def test_network_rules_that_are_hosts(rule: str) -> None:
    assert network_rule_problem(rule) is None


@pytest.mark.parametrize(
    "rule",
    [
        "https://example.com",
        "example.com/path",
        "user@example.com",
        "*",
        "*.com",
        "api.*.example.com",
        "example.com:0",
        "example.com:70000",
        "example.com:https",
        "::1",
        "[not-ipv6]:80",
        "-bad-.example.com",
    ],
)
def test_network_rules_that_are_not(rule: str) -> None:
    assert network_rule_problem(rule) is not None


def test_config_schema_must_be_a_schema_with_string_secrets() -> None:
    found = problems(
        raw(
            config_schema={
                "type": "object",
                "properties": {
                    "limit": {"type": 12},
                    "auth": {
                        "type": "object",
                        "properties": {"pin": {"type": "integer", "writeOnly": True}},
                    },
                },
            }
        )
    )
    assert "config_schema.properties.limit.type" in found
    assert "string" in found["config_schema.properties.auth.properties.pin"]
    assert "config_schema.type" in problems(raw(config_schema={"type": "array"}))


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"id = ", "forecourt-plugin.toml"),
        (b"[1, 2]", "forecourt-plugin.json"),
        (b"\xff", "forecourt-plugin.json"),
    ],
)
def test_an_unreadable_manifest_is_one_problem_named_for_the_file(
    data: bytes, filename: str
) -> None:
    with pytest.raises(InvalidPackage) as caught:
        load_manifest(data, filename)
    assert [item["field"] for item in caught.value.extra["errors"]] == [filename]


def test_check_resources_against_the_installation_caps() -> None:
    document = raw(resources={"timeout_s": 30, "memory_mib": 512})
    manifest = load_manifest(json.dumps(document).encode(), "forecourt-plugin.json")
    assert check_resources(manifest, {"timeout_s": 60, "memory_mib": None}) == []
    found = check_resources(manifest, {"timeout_s": 10, "memory_mib": 256, "cpu_s": 1})
    assert [item["field"] for item in found] == ["resources.timeout_s", "resources.memory_mib"]


def test_the_published_schema_is_a_valid_2020_12_schema() -> None:
    Draft202012Validator.check_schema(manifest_schema())
    assert set(manifest_schema()["properties"]["type"]["enum"]) == set(PLUGIN_TYPES)


SEMVER_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
    "10.0.0",
]


def test_semver_precedence_follows_the_specification() -> None:
    assert sorted(reversed(SEMVER_ORDER), key=semver_key) == SEMVER_ORDER
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


@pytest.mark.parametrize(
    "text", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", " 1.0.0"]
)
def test_not_semver(text: str) -> None:
    assert not is_semver(text)
    assert "version" in problems(raw(version=text))


numbers = st.integers(min_value=0, max_value=10**6)
identifiers = st.one_of(
    numbers.map(str), st.from_regex(r"[0-9]*[a-zA-Z-][0-9a-zA-Z-]*", fullmatch=True)
)


@given(numbers, numbers, numbers, st.lists(identifiers, max_size=3))
def test_generated_versions_are_semver_and_releases_outrank_prereleases(
    major: int, minor: int, patch: int, pre: list[str]
) -> None:
    release = f"{major}.{minor}.{patch}"
    assert is_semver(release)
    if pre:
        prerelease = f"{release}-{'.'.join(pre)}"
        assert is_semver(prerelease)
        assert semver_key(prerelease) < semver_key(release)


@given(st.tuples(numbers, numbers, numbers), st.tuples(numbers, numbers, numbers))
def test_release_order_is_numeric_order(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    key_a, key_b = semver_key(".".join(map(str, a))), semver_key(".".join(map(str, b)))
    assert (key_a < key_b) == (a < b)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "upper-case\n"}, "id"),
        ({"version": "1.0.0\n"}, "version"),
        ({"entry_point": "plugin:run\n"}, "entry_point"),
        ({"permissions": {"metrics": ["rows\n"]}}, "permissions.metrics[0]"),
        ({"permissions": {"network": ["example.com\n"]}}, "permissions.network[0]"),
    ],
)
def test_a_trailing_newline_does_not_slip_through(changes: dict[str, Any], field: str) -> None:
    assert field in problems(raw(**changes))


def test_host_access_permissions_load() -> None:
    permissions = {"host_metrics": True, "unix_sockets": ["/var/run/docker.sock", "/run/a.sock"]}
    manifest = load_manifest(
        json.dumps(raw(permissions=permissions)).encode(), "forecourt-plugin.json"
    )
    assert manifest.permissions.host_metrics is True
    assert manifest.permissions.unix_sockets == ("/var/run/docker.sock", "/run/a.sock")
    default = load_manifest(json.dumps(raw()).encode(), "forecourt-plugin.json")
    assert (default.permissions.host_metrics, default.permissions.unix_sockets) == (False, ())


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("run/docker.sock", "absolute path"),
        ("/run/../etc/shadow", "normalised"),
        ("/run/./docker.sock", "normalised"),
        ("//run/docker.sock", "normalised"),
        ("/run/docker/", "normalised"),
        ("/run/docker\n.sock", "control characters"),
        ("/" + "s" * 107, "107"),
        ("/", "must"),
    ],
)
def test_unix_sockets_must_be_plain_absolute_paths(path: str, message: str) -> None:
    found = problems(raw(permissions={"unix_sockets": ["/run/ok.sock", path]}))
    assert set(found) == {"permissions.unix_sockets[1]"}
    assert message in found["permissions.unix_sockets[1]"]


def test_host_metrics_is_a_boolean() -> None:
    assert set(problems(raw(permissions={"host_metrics": "yes"}))) == {"permissions.host_metrics"}
