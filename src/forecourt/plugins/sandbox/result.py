"""What a call returns (:class:`CallResult`), and how a worker's answer becomes one.

A worker runs untrusted code, so its answer is checked like any input: a result frame whose
shape is wrong makes the call fail (the worker is then replaced), and metrics and events that
are not well formed are dropped rather than passed on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "killed", "refused"]

MAX_METRICS = 1000  # per call, as forecourt_plugin enforces inside
MAX_EVENTS = 1000
MAX_NAME_CHARS = 200
MAX_MESSAGE_CHARS = 4096


class ProtocolViolation(Exception):
    """The worker sent something that is not a well-formed answer to the call."""


@dataclass
class CallResult:
    """The outcome of one call; statuses other than ``ok`` say what went wrong.

    ``ok``: the entry point returned ``output``. ``error``: it raised (``error_class`` and
    ``error_message`` say what) or could not be loaded. ``timeout``: the wall clock ran out
    and the worker was killed. ``killed``: the worker died during the call (a resource limit,
    a crash, an exit). ``refused``: the call was not run (the pool is closing, the spec is not
    runnable here, or a required protection is missing).
    """

    status: Status
    output: Any = None
    error_class: str | None = None
    error_message: str | None = None
    logs: str = ""  # the plugin's stdout and stderr and forecourt_plugin.log lines, truncated
    duration_ms: float = 0.0
    cpu_ms: float | None = None  # CPU time of the worker during the call (10 ms resolution)
    max_rss_kib: int | None = None  # peak resident memory during the call
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {"name","value","labels"}
    events: list[dict[str, Any]] = field(default_factory=list)  # {"type","data","subject"?}

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.status == "ok"


def refused(message: str) -> CallResult:
    """A call that was not run."""
    return CallResult(status="refused", error_class="Refused", error_message=message)


def from_answer(answer: Any, call_id: int) -> CallResult:
    """The result a worker's answer to call ``call_id`` stands for.

    Raises :class:`ProtocolViolation` when the answer is not a result of that call.
    """
    if not isinstance(answer, dict) or answer.get("type") != "result":
        raise ProtocolViolation("the answer is not a result")
    if answer.get("id") != call_id:
        raise ProtocolViolation(f"the answer is for call {answer.get('id')!r}, not {call_id}")
    status = answer.get("status")
    if status == "ok":
        result = CallResult(status="ok", output=answer.get("output"))
    elif status == "error":
        result = CallResult(
            status="error",
            error_class=_text(answer.get("error_class"), MAX_NAME_CHARS) or "Exception",
            error_message=_text(answer.get("error_message"), MAX_MESSAGE_CHARS),
        )
    else:
        raise ProtocolViolation(f"the answer has an unknown status {status!r}")
    result.metrics = [m for m in _list(answer.get("metrics"), MAX_METRICS) if _is_metric(m)]
    result.events = [e for e in _list(answer.get("events"), MAX_EVENTS) if _is_event(e)]
    return result


def _is_metric(item: Any) -> bool:
    if not isinstance(item, dict) or set(item) != {"name", "value", "labels"}:
        return False
    name, value, labels = item["name"], item["value"], item["labels"]
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_CHARS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    )


def _is_event(item: Any) -> bool:
    if not isinstance(item, dict) or not {"type", "data"} <= set(item) <= {
        "type",
        "data",
        "subject",
    }:
        return False
    kind, subject = item["type"], item.get("subject")
    return (
        isinstance(kind, str)
        and 0 < len(kind) <= MAX_NAME_CHARS
        and (subject is None or isinstance(subject, str))
    )


def _list(value: Any, limit: int) -> list[Any]:
    return value[:limit] if isinstance(value, list) else []


def _text(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]
