"""The configuration of a plugin instance: checked against the plugin's ``config_schema``.

Properties of the schema marked ``"secret": true`` (or the standard ``"writeOnly": true``) are
secrets: :func:`mask` hides them when read back, :func:`merge_update` keeps them when an update
sends the mask back unchanged, and :func:`seal` / :func:`unseal` encrypt them at rest (the
service passes a :class:`forecourt.crypto.SecretBox`). Secrets are strings, found through nested
``properties`` only (a secret inside an array item is not supported).

This module also holds the JSON Schema helpers the manifest and the type contracts share:
problems as ``{"field": path, "message": text}`` with paths like ``permissions.network[1]``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from jsonschema import Draft202012Validator

from forecourt.errors import InvalidInput

MASK = "********"

Problem = dict[str, str]


class Box(Protocol):
    """Encrypts and decrypts short strings; :class:`forecourt.crypto.SecretBox` is one."""

    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, token: str) -> str: ...


def validate_config(schema: Mapping[str, Any], config: Any) -> None:
    """Raise InvalidInput naming the first bad field (``config.<path>``); all in ``errors``."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = schema_problems(validator, config, prefix="config")
    if problems:
        first = problems[0]
        error = InvalidInput(first["message"], field=first["field"])
        error.extra["errors"] = problems
        raise error


def secret_paths(schema: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the secret properties of ``schema`` (``smtp.password``)."""
    return [path for path, _ in secret_properties(schema)]


def secret_properties(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each secret property of ``schema`` with its dotted path, walking nested objects."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        if prop.get("secret") is True or prop.get("writeOnly") is True:
            yield name, prop
        else:
            for path, inner in secret_properties(prop):
                yield f"{name}.{path}", inner


def mask(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every secret that is set replaced by :data:`MASK`."""
    return _map_secrets(config, schema, lambda _value: MASK)


def merge_update(
    old: Mapping[str, Any], new: Mapping[str, Any], schema: Mapping[str, Any]
) -> dict[str, Any]:
    """``new`` as the whole configuration, except secrets sent back as :data:`MASK`.

    Such a secret keeps its ``old`` value (or is dropped if there was none); a secret absent
    from ``new`` is removed, as any other field would be.
    """
    merged = copy.deepcopy(dict(new))
    for path in secret_paths(schema):
        parts = path.split(".")
        if _get(merged, parts) != MASK:
            continue
        previous = _get(old, parts)
        if isinstance(previous, str):
            _set(merged, parts, previous)
        else:
            _delete(merged, parts)
    return merged


def seal(config: Mapping[str, Any], schema: Mapping[str, Any], box: Box) -> dict[str, Any]:
    """A copy of ``config`` with each secret encrypted by ``box``, the rest as it was."""
    return _map_secrets(config, schema, box.encrypt)


def unseal(stored: Mapping[str, Any], schema: Mapping[str, Any], box: Box) -> dict[str, Any]:
    """The configuration :func:`seal` sealed; raises the box's error for a tampered secret."""
    return _map_secrets(stored, schema, box.decrypt)


def schema_problems(
    validator: Draft202012Validator,
    instance: Any,
    prefix: str = "",
    messages: Mapping[tuple[str, str], str] | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Every JSON Schema failure of ``instance``, each at the path of the field it concerns
    (the first ``limit`` failures found, when given).

    ``messages`` replaces the default wording of a failure, keyed by (path without indexes,
    keyword), e.g. ``("version", "pattern")``.
    """
    problems: list[Problem] = []
    for error in itertools.islice(validator.iter_errors(instance), limit):
        path = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            problems += [
                problem(json_path([*path, name], prefix), "is required")
                for name in error.validator_value
                if name not in error.instance
            ]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            problems += [
                problem(json_path([*path, name], prefix), "is not a known field")
                for name in error.instance
                if name not in known
            ]
        else:
            generic = json_path([part for part in path if isinstance(part, str)])
            message = (messages or {}).get((generic, str(error.validator)), error.message)
            problems.append(problem(json_path(path, prefix), message))
    return unique(sorted(problems, key=lambda item: item["field"]))


def json_path(parts: Iterable[str | int], prefix: str = "") -> str:
    """``["permissions", "network", 1]`` -> ``permissions.network[1]``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def problem(field: str, message: str) -> Problem:
    """One problem, in the shape InvalidPackage and InvalidInput report."""
    return {"field": field, "message": message}


def unique(problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` without repeats, in order."""
    seen: set[tuple[str, str]] = set()
    out: list[Problem] = []
    for item in problems:
        key = (item["field"], item["message"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _map_secrets(
    config: Mapping[str, Any], schema: Mapping[str, Any], change: Callable[[str], str]
) -> dict[str, Any]:
    result = copy.deepcopy(dict(config))
    for path in secret_paths(schema):
        parts = path.split(".")
        value = _get(result, parts)
        if isinstance(value, str):
            _set(result, parts, change(value))
    return result


def _get(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data[part]
    data[parts[-1]] = value


def _delete(data: dict[str, Any], parts: list[str]) -> None:
    for part in parts[:-1]:
        data = data[part]
    del data[parts[-1]]
