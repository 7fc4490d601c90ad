"""Rate-limit response headers, after the IETF httpapi RateLimit header fields draft (-09/-10).

``RateLimit-Policy`` lists every window as a structured-field list item
(``"minute";q=60;w=60``). ``RateLimit`` names the one window that binds the client now: the
one with the least remaining (ties: the sooner reset), or, on a denial, the window that denied
with ``r=0`` and ``t`` equal to ``Retry-After``. The ``X-RateLimit-*`` trio repeats that
window's figures for clients written before the draft.
"""

from __future__ import annotations

from functools import lru_cache

from forecourt.ratelimit.windows import Decision, Window, WindowState

POLICY_CACHE_SIZE = 4096


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The headers for ``decision``; empty when no window applied."""
    if not decision.states:
        return {}
    policy = _policy(tuple(s.window for s in decision.states))
    if decision.allowed:
        binding = min(decision.states, key=lambda s: (s.remaining, s.reset_s))
        remaining, reset_s = binding.remaining, binding.reset_s
    else:
        binding = _denying_state(decision)
        remaining, reset_s = 0, decision.retry_after_s
    headers = {
        "RateLimit-Policy": policy,
        "RateLimit": f"{_sf_string(binding.window.name)};r={remaining};t={reset_s}",
        "X-RateLimit-Limit": str(binding.window.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_s),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers


def rate_limit_header_pairs(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The same headers as raw ASGI ``(name, value)`` pairs, lower-case names."""
    return [
        (_lower_name(name), value.encode("latin-1"))
        for name, value in rate_limit_headers(decision).items()
    ]


@lru_cache(maxsize=16)
def _lower_name(name: str) -> bytes:
    return name.lower().encode("latin-1")


@lru_cache(maxsize=POLICY_CACHE_SIZE)
def _policy(windows: tuple[Window, ...]) -> str:
    # A key's windows change only with its tier or overrides: the string is built once.
    return ", ".join(f"{_sf_string(w.name)};q={w.limit};w={w.seconds}" for w in windows)


def _denying_state(decision: Decision) -> WindowState:
    for s in decision.states:
        if s.window == decision.violated:
            return s
    # No window at fault (a fail-closed denial): report the tightest one.
    return min(decision.states, key=lambda s: (s.remaining, s.reset_s))


def _sf_string(value: str) -> str:
    # RFC 8941 sf-string: backslash and double quote are the only characters escaped.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
