"""The plugin manifest: ``forecourt-plugin.toml`` (or ``.json``) at the root of a package.

A manifest is checked twice: against the published JSON Schema (``manifest.schema.json``) and
then for what a schema cannot say (see :func:`semantic_problems`). Every problem is reported
at once, each with the JSON path of its field (``permissions.network[1]``), in
:class:`~forecourt.errors.InvalidPackage`. Whether an id and version are already installed is
the plugin service's concern (409), not the manifest's.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Collection, Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict

from forecourt import __version__
from forecourt.errors import InvalidPackage
from forecourt.plugins.configuration import (
    Problem,
    problem,
    schema_problems,
    secret_properties,
    unique,
)
from forecourt.plugins.dependencies import dependency_problems
from forecourt.plugins.sandbox.limits import (
    PYTHON_ENTRY_RE,
    WASM_ENTRY_RE,
    socket_path_problem,
)

MANIFEST_TOML = "forecourt-plugin.toml"
MANIFEST_JSON = "forecourt-plugin.json"
MANIFEST_NAMES = (MANIFEST_TOML, MANIFEST_JSON)
MAX_MANIFEST_BYTES = 256 * 1024

PluginType = Literal[
    "transformation", "export", "datasource", "visualization", "alert", "collector", "hook"
]
Runtime = Literal["python", "wasm"]
PLUGIN_TYPES: tuple[str, ...] = get_args(PluginType)
RESOURCE_FIELDS = ("timeout_s", "cpu_s", "memory_mib", "file_mib", "open_files")

SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
MAX_PORT = 65535

# The schema's patterns end in (?!\n)$: in Python $ alone also matches before a final newline.
# Messages for schema failures whose default wording would only quote a regular expression.
_FRIENDLY = {
    ("id", "pattern"): "must be lowercase reverse-DNS (com.example.upper) or a slug (upper-case)",
    ("version", "pattern"): "must be a semantic version such as 1.2.3 or 2.0.0-rc.1",
    ("min_forecourt_version", "pattern"): "must be a semantic version such as 0.1.0",
    ("permissions.events", "pattern"): "must be an event type, a prefix.* pattern, or *",
    ("permissions.metrics", "pattern"): "must match [a-z][a-z0-9_.]*",
    ("permissions.unix_sockets", "pattern"): "must be an absolute path to a socket",
    ("homepage", "pattern"): "must be an http(s) URL",
}


class Permissions(BaseModel):
    """What a plugin may reach; the sandbox and the services enforce it."""

    model_config = ConfigDict(frozen=True)

    network: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    schedule_interval_s: int | None = None
    host_metrics: bool = False
    unix_sockets: tuple[str, ...] = ()
    metrics_export: str | None = None


class Resources(BaseModel):
    """What one run asks for; checked against the installation's caps by :func:`check_resources`."""

    model_config = ConfigDict(frozen=True)

    timeout_s: float | None = None
    cpu_s: float | None = None
    memory_mib: int | None = None
    file_mib: int | None = None
    open_files: int | None = None


class Manifest(BaseModel):
    """A validated manifest; ``raw`` is the parsed document, ``manifest_bytes`` the exact file."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    version: str
    description: str = ""
    author: str = ""
    license: str = ""
    type: PluginType
    runtime: Runtime = "python"
    entry_point: str
    min_forecourt_version: str | None = None
    config_schema: dict[str, Any] = {}
    permissions: Permissions = Permissions()
    resources: Resources = Resources()
    dependencies: tuple[str, ...] = ()
    category: str | None = None
    homepage: str | None = None
    raw: dict[str, Any]
    manifest_bytes: bytes
    filename: str

    @property
    def entry_target(self) -> str:
        """The module (python) or file (wasm) part of the entry point."""
        return self.entry_point.rpartition(":")[0]

    @property
    def entry_function(self) -> str:
        """The function (python) or export (wasm) part of the entry point."""
        return self.entry_point.rpartition(":")[2]


@cache
def manifest_schema() -> dict[str, Any]:
    """The published JSON Schema of the manifest."""
    text = resources.files("forecourt.plugins").joinpath("manifest.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_manifest(
    data: bytes,
    filename: str,
    *,
    files: Collection[str] | None = None,
    forecourt_version: str = __version__,
) -> Manifest:
    """Parse and check a manifest; ``files`` (the package's paths) enables the entry point check.

    Raises InvalidPackage listing every problem found.
    """
    raw = _parse(data, filename)
    validator = Draft202012Validator(manifest_schema())
    problems = schema_problems(validator, raw, messages=_FRIENDLY)
    problems += semantic_problems(raw, files=files, forecourt_version=forecourt_version)
    if problems:
        raise InvalidPackage(f"{filename} has {len(problems)} problem(s)", errors=unique(problems))
    fields = {key: value for key, value in raw.items() if key in Manifest.model_fields}
    return Manifest.model_validate(
        {**fields, "raw": raw, "manifest_bytes": bytes(data), "filename": filename}
    )


def check_resources(manifest: Manifest, caps: Mapping[str, float | None]) -> list[Problem]:
    """Problems for each resource the manifest asks for beyond the installation's ``caps``.

    ``caps`` maps the names in :data:`RESOURCE_FIELDS` to a maximum; absent or None: no cap.
    """
    problems: list[Problem] = []
    for name in RESOURCE_FIELDS:
        wanted = getattr(manifest.resources, name)
        cap = caps.get(name)
        if wanted is not None and cap is not None and wanted > cap:
            problems.append(
                problem(f"resources.{name}", f"{wanted} is over this installation's cap of {cap}")
            )
    return problems


def semantic_problems(
    raw: Mapping[str, Any],
    *,
    files: Collection[str] | None = None,
    forecourt_version: str = __version__,
) -> list[Problem]:
    """The checks a JSON Schema cannot express; tolerant of fields of the wrong type."""
    problems: list[Problem] = []
    kind = raw.get("type")
    runtime = raw.get("runtime", "python")
    entry = raw.get("entry_point")
    if isinstance(entry, str) and runtime in ("python", "wasm"):
        message = entry_point_problem(entry, runtime, files)
        if message:
            problems.append(problem("entry_point", message))
    minimum = raw.get("min_forecourt_version")
    if (
        isinstance(minimum, str)
        and is_semver(minimum)
        and semver_key(minimum) > release_key(forecourt_version)
    ):
        message = f"needs Forecourt {minimum}; this server is {forecourt_version}"
        problems.append(problem("min_forecourt_version", message))
    permissions = raw.get("permissions", {})
    permissions = permissions if isinstance(permissions, Mapping) else {}
    for i, rule in enumerate(_strings(permissions.get("network"))):
        message = network_rule_problem(rule)
        if message:
            problems.append(problem(f"permissions.network[{i}]", message))
    for i, path in enumerate(_strings(permissions.get("unix_sockets"))):
        message = socket_path_problem(path)
        if message:
            problems.append(problem(f"permissions.unix_sockets[{i}]", message))
    if kind in ("hook", "alert") and not permissions.get("events"):
        problems.append(
            problem("permissions.events", f"a {kind} plugin must subscribe to at least one event")
        )
    interval = "schedule_interval_s" in permissions
    exporter = "metrics_export" in permissions  # plugins/exports.py
    if kind == "collector" and not interval:
        problems.append(problem("permissions.schedule_interval_s", "required for a collector"))
    elif exporter and not interval:
        problems.append(problem("permissions.schedule_interval_s", "required for metrics_export"))
    elif kind in PLUGIN_TYPES and kind != "collector" and interval and not exporter:
        problems.append(
            problem(
                "permissions.schedule_interval_s",
                "only collectors and metrics exporters run on a schedule",
            )
        )
    if exporter:
        problems += _export_problems(kind, permissions["metrics_export"], raw.get("config_schema"))
    problems += dependency_problems(raw.get("dependencies"))
    config_schema = raw.get("config_schema")
    if isinstance(config_schema, Mapping):
        problems += config_schema_problems(config_schema)
    return problems


def _export_problems(kind: Any, target: Any, config_schema: Any) -> list[Problem]:
    """``metrics_export`` names a required property of an export plugin's config_schema."""
    field = "permissions.metrics_export"
    if kind != "export":
        return [problem(field, "only export plugins export metrics")]
    schema = config_schema if isinstance(config_schema, Mapping) else {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not isinstance(target, str):
        properties = {}
    if target not in properties:
        return [problem(field, "must name a property of config_schema (the target)")]
    if target not in (schema.get("required") or ()):
        return [problem(field, f"config_schema must require {target!r}")]
    return []


def config_schema_problems(config_schema: Mapping[str, Any]) -> list[Problem]:
    """Problems with a plugin's ``config_schema``: not a JSON Schema, or a non-string secret."""
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    problems = schema_problems(meta, config_schema, prefix="config_schema")
    if config_schema.get("type", "object") != "object":
        problems.append(problem("config_schema.type", 'an instance configuration is an "object"'))
    for path, prop in secret_properties(config_schema):
        if prop.get("type") != "string":
            where = "config_schema." + ".".join(f"properties.{part}" for part in path.split("."))
            problems.append(problem(where, 'a secret property must have "type": "string"'))
    return problems


def is_semver(text: str) -> bool:
    """Whether ``text`` is a Semantic Versioning 2.0 version."""
    return SEMVER_RE.fullmatch(text) is not None


def semver_key(text: str) -> tuple[Any, ...]:
    """A sort key giving SemVer 2.0 precedence; build metadata is ignored."""
    match = SEMVER_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:  # a release ranks above every pre-release of the same version
        return (major, minor, patch, (1,))
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, (0, idents))


def release_key(version: str) -> tuple[Any, ...]:
    """:func:`semver_key` of a server version, tolerating PEP 440 suffixes (``0.2.0.dev1``)."""
    if is_semver(version):
        return semver_key(version)
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return semver_key(".".join(match.groups()))


def entry_point_problem(entry: str, runtime: str, files: Collection[str] | None) -> str | None:
    """Why ``entry`` is not a usable entry point for ``runtime`` (and ``files``), or None."""
    if runtime == "wasm":
        match = WASM_ENTRY_RE.fullmatch(entry)
        if match is None or any(part in (".", "..") for part in match[1].split("/")):
            return "must be file.wasm:export, the file relative to the package root"
        candidates = [match[1]]
    else:
        match = PYTHON_ENTRY_RE.fullmatch(entry)
        if match is None:
            return "must be module:function, e.g. plugin:run or pkg.mod:fn"
        module = match[1].replace(".", "/")
        candidates = [f"{module}.py", f"{module}/__init__.py"]
    if files is not None and not any(candidate in files for candidate in candidates):
        return f"{' or '.join(candidates)} is not in the package"
    return None


def network_rule_problem(rule: str) -> str | None:
    """Why ``rule`` is not ``host``, ``host:port`` or ``*.domain[:port]``, or None."""
    if "://" in rule:
        return "must be a host or host:port, without a scheme"
    if "/" in rule or "?" in rule or "@" in rule:
        return "must be a host or host:port, without a path or credentials"
    host, port = rule, None
    if rule.startswith("["):
        host, _, rest = rule[1:].partition("]")
        if rest and not rest.startswith(":"):
            return "must be [ipv6] or [ipv6]:port"
        port = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    else:
        if rule.count(":") > 1:
            return "an IPv6 address must be written in brackets: [::1]:443"
        if ":" in rule:
            host, port = rule.split(":")
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        if "*" in name:
            return "only a leading *. wildcard is allowed"
        if not HOSTNAME_RE.fullmatch(name):
            return f"{host!r} is not a host name or address"
        if wildcard and "." not in name:
            return "a wildcard must name at least a domain and its suffix (*.example.com)"
    if port is not None and not (port.isdigit() and 1 <= int(port) <= MAX_PORT):
        return f"port {port!r} is not between 1 and {MAX_PORT}"
    return None


def _parse(data: bytes, filename: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidPackage(errors=[problem(filename, f"over {MAX_MANIFEST_BYTES} bytes")])
    try:
        text = data.decode("utf-8")
        parsed: Any = tomllib.loads(text) if filename.endswith(".toml") else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise InvalidPackage(
            f"{filename} cannot be parsed", errors=[problem(filename, str(exc))]
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidPackage(errors=[problem(filename, "must be a table (object) of fields")])
    return parsed


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
