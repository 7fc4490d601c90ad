"""The Redis limiter: one Lua script, one round trip per decision.

Storage layout: one hash per limited key, ``<prefix><key>``, with three fields per window of
``w`` ms: ``s<w>`` (the start of the current fixed window), ``p<w>`` and ``c<w>`` (the previous
and current counts). One hash rather than one per window so ``reset`` can drop a key without
knowing its windows, and so a key's windows live on one Redis Cluster slot. The hash expires
twice its longest window after the last charge, when every count in it has aged out anyway.

The script decides with the admission test of ``windows.py``. Lua numbers are doubles, so the
products ``count * w`` (up to 2**87) are compared as base-2**26 limbs, which is exact for every
count and window length ``Window`` accepts. The script returns the decision and each window's
counters after it; Python turns those into a Decision with the same pure functions the
in-process limiter uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from forecourt.ratelimit.windows import (
    MS_PER_S,
    Decision,
    Window,
    WindowCounters,
    check_cost,
    check_windows,
    outcome,
)

DEFAULT_PREFIX = "fc:rl:"
_Call = tuple[str, list[Any], "asyncio.Future[Any]"]
# Sent instead of a timestamp: read the Redis server's clock, the one every instance shares.
SERVER_CLOCK = -1

# KEYS[1]: the key's hash. ARGV[1]: now in ms, or -1 for the server's clock. ARGV[2]: cost.
# ARGV[3]: "1" to charge an admitted request, "0" to only look. ARGV[4]: the windows, as
# "<length in ms>:<limit>" separated by spaces. Returns one string of integers separated by
# spaces: allowed (1 or 0), now, then start, prev and curr of each window. Packing arguments
# and reply into strings matters: the client's cost per argument and per reply element, not
# the server, is what limits the decisions per second.
SCRIPT = """
local LIMB = 67108864  -- 2^26

-- a*b as three base-2^26 limbs; exact for a < 2^51 and b < 2^36 (doubles hold 53 bits).
local function product(a, b)
  local a0 = math.fmod(a, LIMB)
  local a1 = (a - a0) / LIMB
  local b0 = math.fmod(b, LIMB)
  local b1 = (b - b0) / LIMB
  local lo = a0 * b0
  local mid = a1 * b0 + a0 * b1
  local carry = math.floor(lo / LIMB)
  lo = lo - carry * LIMB
  mid = mid + carry
  carry = math.floor(mid / LIMB)
  return a1 * b1 + carry, mid - carry * LIMB, lo
end

-- Whether a*b <= c*d, exactly.
local function at_most(a, b, c, d)
  local h1, m1, l1 = product(a, b)
  local h2, m2, l2 = product(c, d)
  if h1 ~= h2 then return h1 < h2 end
  if m1 ~= m2 then return m1 < m2 end
  return l1 <= l2
end

-- Integers above 10^14 would lose digits through Lua's default number formatting.
local function int(x)
  return string.format('%.0f', x)
end

local key = KEYS[1]
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local charge = ARGV[3] == '1'
local lengths, limits = {}, {}
for w, limit in string.gmatch(ARGV[4], '(%d+):(%d+)') do
  lengths[#lengths + 1] = w
  limits[#limits + 1] = tonumber(limit)
end
local n = #lengths

local fields = {}
for i = 1, n do
  local w = lengths[i]
  fields[3 * i - 2] = 's' .. w
  fields[3 * i - 1] = 'p' .. w
  fields[3 * i] = 'c' .. w
end
local stored = redis.call('HMGET', key, unpack(fields))

local starts, prevs, currs = {}, {}, {}
local allowed = true
local longest = 0
for i = 1, n do
  local w = tonumber(lengths[i])
  local limit = limits[i]
  local current = now - math.fmod(now, w)
  local start = tonumber(stored[3 * i - 2])
  local prev = tonumber(stored[3 * i - 1]) or 0
  local curr = tonumber(stored[3 * i]) or 0
  if start == nil then
    start, prev, curr = current, 0, 0
  elseif current <= start then
    -- same fixed window, or the clock stepped back: keep everything
  elseif current == start + w then
    start, prev, curr = current, curr, 0
  else
    start, prev, curr = current, 0, 0
  end
  local elapsed = math.max(now - start, 0)
  -- curr*w + prev*(w - elapsed) + cost*w <= limit*w
  local spare = limit - curr - cost
  if spare < 0 or (prev > 0 and not at_most(prev, w - elapsed, spare, w)) then
    allowed = false
  end
  starts[i], prevs[i], currs[i] = start, prev, curr
  if w > longest then longest = w end
end

if allowed and charge and n > 0 then
  local writes = {}
  for i = 1, n do
    local w = lengths[i]
    currs[i] = currs[i] + cost
    writes[6 * i - 5] = 's' .. w
    writes[6 * i - 4] = int(starts[i])
    writes[6 * i - 3] = 'p' .. w
    writes[6 * i - 2] = int(prevs[i])
    writes[6 * i - 1] = 'c' .. w
    writes[6 * i] = int(currs[i])
  end
  redis.call('HSET', key, unpack(writes))
  -- Another call may have set a longer expiry for longer windows of the same key.
  local horizon = 2 * longest
  if redis.call('PTTL', key) < horizon then
    redis.call('PEXPIRE', key, int(horizon))
  end
end

local reply = {allowed and '1' or '0', int(now)}
for i = 1, n do
  reply[#reply + 1] = int(starts[i])
  reply[#reply + 1] = int(prevs[i])
  reply[#reply + 1] = int(currs[i])
end
return table.concat(reply, ' ')
"""


class RedisLimiter:
    """A Limiter whose counters live in Redis, shared by every instance of the app.

    ``client`` is borrowed: ``aclose`` closes it only if ``close_client`` is set. ``clock``
    (seconds since the epoch) replaces the Redis server's clock; leave it None in production so
    that all instances agree on the time. Errors from Redis propagate. Each concurrent call
    holds one connection for its round trip: give the client a ``BlockingConnectionPool`` sized
    for the expected concurrency, since a plain pool raises once it is exhausted.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Callable[[], float] | None = None,
        close_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._close_client = close_client
        self._script = client.register_script(SCRIPT)
        self._pending: list[_Call] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, windows: Sequence[Window], cost: int = 1) -> Decision:
        """Charge ``cost`` to every window of ``key`` if all of them admit it."""
        check_cost(cost)
        return await self._run(key, windows, cost, charge=True)

    async def peek(self, key: str, windows: Sequence[Window]) -> Decision:
        """Decide a request of cost 1 without charging anything."""
        return await self._run(key, windows, 1, charge=False)

    async def reset(self, key: str) -> None:
        """Forget every window of ``key``."""
        await self._client.delete(self._prefix + key)

    async def aclose(self) -> None:
        """Close the Redis client if this limiter owns it."""
        if self._close_client:
            await self._client.aclose()

    async def _run(
        self, key: str, windows: Sequence[Window], cost: int, *, charge: bool
    ) -> Decision:
        check_windows(windows)
        if not windows:
            return Decision(allowed=True, states=(), retry_after_s=0, violated=None)
        now_ms = SERVER_CLOCK if self._clock is None else math.floor(self._clock() * MS_PER_S)
        spec = " ".join(f"{window.ms}:{window.limit}" for window in windows)
        reply = await self._call(self._prefix + key, [now_ms, cost, 1 if charge else 0, spec])
        values = [int(value) for value in reply.split()]
        if len(values) != 2 + 3 * len(windows):
            raise ValueError(f"unexpected reply from the rate-limit script: {reply!r}")
        counters: list[WindowCounters] = [
            (values[i], values[i + 1], values[i + 2]) for i in range(2, len(values), 3)
        ]
        return outcome(values[1], counters, windows, cost, allowed=values[0] == 1)

    async def _call(self, key: str, args: list[Any]) -> Any:
        """Run the script for ``key``, pipelined with every call made in the same loop tick.

        Each script still runs atomically on the server, one after the other, so decisions
        stay exact; batching only shares the client's round trip and parsing among them.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((key, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

        def abandon(_: asyncio.Future[Any]) -> None:
            # Every caller gave up (a timeout while Redis hangs): stop the call too, so it
            # cannot charge the windows later, after the callers were answered elsewhere.
            if all(future.cancelled() for _, _, future in batch):
                task.cancel()

        for _, _, future in batch:
            future.add_done_callback(abandon)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                key, args, future = batch[0]
                results: list[Any] = [await self._script(keys=[key], args=args)]
            else:
                results = await self._pipelined(batch)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller gave up (timeout); its charge stands, as with any call
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipelined(self, batch: list[_Call]) -> list[Any]:
        results = await self._pipelined_once(batch)
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            # The server lost its script cache (restart, SCRIPT FLUSH): load it and retry the
            # NOSCRIPT replies only; the script never ran for those.
            await self._client.script_load(SCRIPT)
            again = await self._pipelined_once([batch[i] for i in retry])
            for i, r in zip(retry, again, strict=True):
                results[i] = r
        return results

    async def _pipelined_once(self, batch: list[_Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, args, _ in batch:
                pipe.evalsha(self._script.sha, 1, key, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
