"""A worker's answer, read and checked against its type's contract, off the server process
when it is large.

A plugin's answer is untrusted input of up to 16 MiB. Parsing it (one orjson call that holds
the GIL wherever it runs), walking it, checking it against the contract and collecting the
garbage of the millions of objects it makes would stall the server's event loop for as long.
So an answer of more than :data:`INLINE_ANSWER_BYTES` is handed, as bytes, to an
:class:`AnswerPool`: a pool of at most :data:`ANSWER_PROCESSES` processes, which parses it
with the service's codec rules (:func:`~forecourt.plugins.sandbox.protocol.decode`: depth,
64-bit integers, valid Unicode), checks its shape (:func:`~.sandbox.result.from_answer`) and
its contract (:func:`check_output`), and hands back only what the server needs: a
:class:`Checked` whose output is already encoded by the codec (``output_json``), with the
metrics and follow-up events it carries (at most :data:`MAX_FOLLOW_UPS` of these). The server
never builds the output's Python objects; the execute route answers with those bytes.

A smaller answer is read and checked inline, the same way, by the same functions.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

from forecourt import codec
from forecourt.plugins.contracts import validate_output
from forecourt.plugins.sandbox.protocol import decode
from forecourt.plugins.sandbox.result import CallResult, from_answer

log = logging.getLogger("forecourt.plugins")

INLINE_ANSWER_BYTES = codec.OFFLOAD_BYTES  # answers up to this are read on the event loop
ANSWER_PROCESSES = 2  # the pool's bound; more large answers wait their turn
# Added to the pool's processes' nice value: the CPU they share with the server goes to the
# server first, so reading an answer slows the reading, not the server's answers.
ANSWER_NICENESS = 10
MAX_PROBLEMS_SHOWN = 20  # of a broken contract, in the run's error message
MAX_FOLLOW_UPS = 100  # events a run may publish (emitted, and a hook's output events)


@dataclass(frozen=True)
class Checked:
    """A call's result once its output was checked against the plugin type's contract."""

    result: CallResult  # its ``output`` is None: the output is ``output_json``
    output_json: bytes | None  # the output, encoded by the codec, when the run succeeded
    metrics: list[dict[str, Any]]  # what the run recorded: declared, well formed
    notes: list[str] = field(default_factory=list)  # for the run's logs
    follow_ups: list[dict[str, Any]] = field(default_factory=list)  # events to publish


def check_output(kind: str, declared: list[str], result: CallResult) -> Checked:
    """Keep the metrics the plugin ``declared``, check the output against the contract of
    its type (``kind``; a broken contract makes the run an ``error``), gather its follow-up
    events and encode the output."""
    notes: list[str] = []
    metrics = _metrics(declared, result, notes)
    output, result = result.output, replace(result, output=None)
    if not result.ok:
        return Checked(result, None, metrics, notes)
    problems = validate_output(kind, output, metrics=declared if kind == "collector" else None)
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:MAX_PROBLEMS_SHOWN])
        broken = replace(result, status="error", error_class="ContractViolation")
        broken.error_message = f"the output breaks the {kind} contract: {shown}"
        return Checked(broken, None, metrics, notes)
    if kind == "collector":
        metrics = [*output["metrics"], *metrics]
    items = list(result.events)
    if kind == "hook":
        items += output["events"]
    if len(items) > MAX_FOLLOW_UPS:
        notes.append(
            f"{len(items) - MAX_FOLLOW_UPS} follow-up events over {MAX_FOLLOW_UPS} dropped"
        )
        items = items[:MAX_FOLLOW_UPS]
    return Checked(result, codec.dumps(output, field="output"), metrics, notes, items)


def read_checked(body: bytes, call_id: int, kind: str, declared: list[str]) -> Checked:
    """Parse a worker's answer ``body`` to call ``call_id`` and check it (what the pool's
    processes run). Raises what the sandbox raises for an answer that is not one
    (:class:`~.sandbox.protocol.InvalidFrame`, :class:`~.sandbox.result.ProtocolViolation`);
    a failure in checking it is the run's ``InternalError``, as it is inline."""
    result = from_answer(decode(body), call_id)
    try:
        return check_output(kind, declared, result)
    except Exception as exc:
        log.exception("checking a plugin's output failed")
        return Checked(internal_error(exc), None, [])


def internal_error(exc: BaseException) -> CallResult:
    """A run's result for a failure of Forecourt's own: its kind, not its text (which may
    hold internal state); the log has the rest."""
    message = (
        f"the run failed inside Forecourt ({type(exc).__name__}); the server's log has the details"
    )
    return CallResult("error", error_class="InternalError", error_message=message)


class AnswerPool:
    """At most :data:`ANSWER_PROCESSES` processes reading large answers; started on the
    first one, stopped by :meth:`close` (the runner's, in the app's lifespan)."""

    def __init__(self, processes: int = ANSWER_PROCESSES) -> None:
        self.processes = processes
        self.answers_read = 0  # answers handed to the pool's processes
        self._executor: ProcessPoolExecutor | None = None

    async def read(self, body: bytes, call_id: int, kind: str, declared: list[str]) -> Checked:
        """:func:`read_checked` in one of the pool's processes."""
        loop = asyncio.get_running_loop()
        executor = self._started()
        self.answers_read += 1
        try:
            checked = await loop.run_in_executor(
                executor, read_checked, body, call_id, kind, declared
            )
        except BrokenProcessPool:
            # A process died (killed, out of memory): the next answer gets a fresh pool.
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise
        return checked

    async def close(self) -> None:
        """Stop the processes (reads under way finish first)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def _started(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # Forked from a fork server, not from the server: the server has threads whose
            # locks a fork would copy. The fork server imports this module, not the program's
            # main module (which multiprocessing would run again, guarded or not).
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=context,
                initializer=os.nice,
                initargs=(ANSWER_NICENESS,),
            )
        return self._executor


class Reader:
    """How one run reads its worker's answer (given to the sandbox's call): a small answer
    is parsed here and left to the runner to check; a large one is read and checked in the
    :class:`AnswerPool`, and :attr:`checked` holds what came back."""

    def __init__(self, pool: AnswerPool, kind: str, declared: list[str]) -> None:
        self.pool = pool
        self.kind = kind
        self.declared = declared
        self.checked: Checked | None = None

    async def __call__(self, body: bytes, call_id: int) -> CallResult:
        if len(body) <= INLINE_ANSWER_BYTES:
            return from_answer(decode(body), call_id)
        self.checked = await self.pool.read(body, call_id, self.kind, self.declared)
        return self.checked.result

    def checked_for(
        self, result: CallResult, check: Callable[[str, list[str], CallResult], Checked]
    ) -> Checked:
        """The checked ``result``: what the pool gave back for it, or ``check`` of it."""
        if self.checked is not None and self.checked.result is result:
            return self.checked
        return check(self.kind, self.declared, result)


def _metrics(declared: list[str], result: CallResult, notes: list[str]) -> list[dict[str, Any]]:
    """The metrics the plugin wrote through the host module, those it declared only."""
    kept = [m for m in result.metrics if m["name"] in declared]
    dropped = sorted({m["name"] for m in result.metrics} - set(declared))
    if dropped:
        notes.append(f"metrics not declared in permissions.metrics were dropped: {dropped}")
    return kept
