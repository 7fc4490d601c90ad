"""The egress proxy: a worker's only way out of its network namespace.

A worker whose plugin declared hosts gets a Unix socket bound into its filesystem (a path, so
it crosses the network namespace, which a TCP port would not). ``forecourt_plugin.fetch``
sends one framed request on it; Forecourt makes the request and frames the response back.
A request goes out only if:

- its URL is http(s), well formed, without credentials (``ssrf.validate_url_syntax``);
- its host and port are declared: ``api.example.com`` (the scheme's default port) or
  ``api.example.com:8443`` / ``127.0.0.1:9000`` / ``[::1]:9000`` (that port); a leading
  ``*.`` (``*.example.com``, ``*.example.com:8443``) covers every subdomain, at any depth,
  but neither the domain itself nor an IP address;
- every address the host resolves to passes Forecourt's SSRF guard with the installation's
  ``allow_private`` policy, checked at connection time (no DNS rebinding window).

Redirects are returned to the plugin, not followed (a redirect could lead anywhere). Bodies
are capped both ways.

``forecourt_plugin.send_datagrams`` sends UDP datagrams the same way (StatsD, say): to a
declared ``host:port`` (a rule with an explicit port; a port-less rule covers HTTP only),
to the first address the SSRF guard passes, at most ``MAX_DATAGRAMS_PER_CALL`` datagrams of
at most ``MAX_DATAGRAM_BYTES`` each per call. A request that breaks a bound sends nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import math
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from forecourt.plugins.sandbox.protocol import FrameError, adecode, encode
from forecourt.webhooks import ssrf
from forecourt_plugin._wire import HEADER, decode_length

MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BODY_BYTES = 8 * 1024 * 1024
MAX_TIMEOUT_S = 60.0
MIN_TIMEOUT_S = 0.1
DEFAULT_TIMEOUT_S = 10.0
MAX_CONCURRENT_REQUESTS = 4  # per worker
MAX_DATAGRAM_BYTES = 8192  # one UDP payload; StatsD agents read 8 KiB at most by default
MAX_DATAGRAMS_PER_CALL = 1000
DATAGRAM_TIMEOUT_S = 10.0  # for one call's datagrams to leave
DATAGRAMS = "datagrams"  # the ``op`` of a request that sends datagrams
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DROPPED_HEADERS = frozenset(
    {"connection", "host", "keep-alive", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade", "content-length"}
)  # fmt: skip


LOG = logging.getLogger("forecourt.plugins")

WILDCARD = "*."
_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")  # a host name as requested, normalised


class Refused(Exception):
    """The request is not allowed out."""


@dataclass(frozen=True)
class HostRule:
    """One declared host: a name, ``*.domain`` or an IP literal, and a port (``None``: the
    scheme's default)."""

    host: str
    port: int | None

    def matches(self, host: str, port: int, scheme: str) -> bool:
        """Whether a request to ``scheme://host:port`` (``host`` normalised) is covered."""
        expected = self.port if self.port is not None else ssrf.DEFAULT_PORTS[scheme]
        if port != expected:
            return False
        if not self.host.startswith(WILDCARD):
            return host == self.host
        suffix = self.host[len(WILDCARD) - 1 :]  # ".example.com"
        return len(host) > len(suffix) and host.endswith(suffix) and _is_name(host)


def parse_hosts(entries: Iterable[str]) -> tuple[HostRule, ...]:
    """The rules for declared ``host[:port]`` entries; ``ValueError`` naming a bad one."""
    rules = []
    for entry in entries:
        try:
            parts = urlsplit("//" + entry.strip())
            port = parts.port
        except ValueError:
            raise ValueError(f"network host {entry!r} is not host or host:port") from None
        if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
            raise ValueError(f"network host {entry!r} is not host or host:port")
        host = _normal(parts.hostname)
        domain = host.removeprefix(WILDCARD)
        if "*" in domain or (domain != host and not (_is_name(domain) and "." in domain)):
            raise ValueError(f"network host {entry!r}: only a leading *. before a domain")
        rules.append(HostRule(host, port))
    return tuple(rules)


def check_declared_datagram(target: str, rules: tuple[HostRule, ...]) -> tuple[str, int]:
    """The host and port of ``target`` (``host:port``), if declared with that very port;
    :class:`Refused` if not."""
    try:
        parts = urlsplit("//" + target)
        port = parts.port
    except ValueError:
        raise Refused(f"datagram target {target!r} is not host:port") from None
    if not parts.hostname or port is None or parts.path or "@" in parts.netloc:
        raise Refused(f"datagram target {target!r} is not host:port")
    host = _normal(parts.hostname)
    if not any(rule.port == port and rule.matches(host, port, "http") for rule in rules):
        raise Refused(f"{host}:{port} is not among the hosts this plugin declared")
    return host, port


def check_declared(url: str, rules: tuple[HostRule, ...]) -> None:
    """Raise :class:`Refused` unless ``url`` is well formed and its host:port is declared."""
    try:
        ssrf.validate_url_syntax(url)
    except ssrf.UnsafeTarget as exc:
        raise Refused(exc.reason) from None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = _normal(parts.hostname or "")
    port = parts.port or ssrf.DEFAULT_PORTS[scheme]
    if not any(rule.matches(host, port, scheme) for rule in rules):
        raise Refused(f"{host}:{port} is not among the hosts this plugin declared")


class Egress:
    """The proxy of one pool: an HTTP session behind the SSRF guard, and a socket per worker."""

    def __init__(self, allow_private: str, resolver: ssrf.Resolver | None = None) -> None:
        """``resolver`` answers DNS lookups (the system's by default)."""
        self._policy = ssrf.AllowPolicy.from_setting(allow_private)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def serve(
        self, path: Path, hosts: tuple[str, ...], owner: tuple[int, int] | None = None
    ) -> asyncio.Server:
        """Listen on ``path`` for one worker that may reach ``hosts``.

        The socket is mode 0600, owned by ``owner`` (the sandbox uid and gid) when given.
        """
        rules = parse_hosts(hosts)
        limit = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async with limit:
                await self._handle(reader, writer, rules)

        server = await asyncio.start_unix_server(handle, path=str(path))
        os.chmod(path, 0o600)
        if owner is not None:
            os.chown(path, *owner)
        return server

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def answer(self, request: Any, rules: tuple[HostRule, ...]) -> dict[str, Any]:
        """The answer to one request of a worker: an HTTP request or datagrams to send."""
        if isinstance(request, dict) and request.get("op") == DATAGRAMS:
            return await self.send_datagrams(request, rules)
        return await self.fetch(request, rules)

    async def send_datagrams(self, request: Any, rules: tuple[HostRule, ...]) -> dict[str, Any]:
        """Send one worker's datagrams over UDP; the answer to frame back (``sent``: how
        many left)."""
        try:
            target, payloads = _parse_datagrams(request)
            host, port = check_declared_datagram(target, rules)
            bracketed = f"[{host}]" if ":" in host else host
            addresses = await ssrf.check_url(
                f"http://{bracketed}:{port}/", self._policy, self._resolver or ssrf.SystemResolver()
            )
            sent = await asyncio.wait_for(
                asyncio.to_thread(_send_udp, addresses[0], port, payloads), DATAGRAM_TIMEOUT_S
            )
            return {"ok": True, "sent": sent}
        except Refused as exc:
            return {"ok": False, "refused": True, "message": str(exc)}
        except ssrf.UnsafeTarget as exc:
            message = f"refused by the SSRF guard: {exc.reason}"
            return {"ok": False, "refused": True, "message": message}
        except (TimeoutError, OSError, ValueError) as exc:
            return {"ok": False, "refused": False, "message": f"{type(exc).__name__}: {exc}"}

    async def fetch(self, request: Any, rules: tuple[HostRule, ...]) -> dict[str, Any]:
        """Make one request from a worker; the answer to frame back."""
        try:
            method, url, headers, body, timeout_s = _parse(request)
            check_declared(url, rules)
            return await self._send(method, url, headers, body, timeout_s)
        except Refused as exc:
            return {"ok": False, "refused": True, "message": str(exc)}
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if ssrf.is_unsafe_target_error(exc):
                return {"ok": False, "refused": True, "message": _unsafe_reason(exc)}
            return {"ok": False, "refused": False, "message": f"{type(exc).__name__}: {exc}"}

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout_s: float
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=ssrf.guarded_connector(self._policy, self._resolver),
                trust_env=False,  # a proxy would connect instead of us, past the guard
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.request(
            method, url, headers=headers, data=body, allow_redirects=False, timeout=timeout
        ) as response:
            content = await response.content.read(MAX_RESPONSE_BODY_BYTES + 1)
            if len(content) > MAX_RESPONSE_BODY_BYTES:
                raise ValueError(f"the response is over {MAX_RESPONSE_BODY_BYTES} bytes")
            return {
                "ok": True,
                "status": response.status,
                "headers": {k: v for k, v in response.headers.items()},
                "body": base64.b64encode(content).decode(),
            }

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rules: tuple[HostRule, ...],
    ) -> None:
        try:
            length = decode_length(await reader.readexactly(HEADER.size))
            request = await adecode(await reader.readexactly(length))  # large: off the loop
            writer.write(encode(await self.answer(request, rules)))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, FrameError):
            pass  # a worker that sends garbage or hangs up gets nothing
        except Exception:
            # Not the worker's doing: it gets nothing either, and the error is kept.
            LOG.exception("the egress proxy failed on a request")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _parse(request: Any) -> tuple[str, str, dict[str, str], bytes | None, float]:
    if not isinstance(request, dict):
        raise Refused("the request is not an object")
    method = str(request.get("method", "GET")).upper()
    if method not in METHODS:
        raise Refused(f"method {method} is not allowed")
    url = request.get("url")
    if not isinstance(url, str):
        raise Refused("the request has no URL")
    raw_headers = request.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise Refused("headers must be an object")
    headers = {
        str(k): str(v) for k, v in raw_headers.items() if str(k).lower() not in DROPPED_HEADERS
    }
    body = request.get("body")
    payload = None if body is None else base64.b64decode(str(body), validate=True)
    if payload is not None and len(payload) > MAX_REQUEST_BODY_BYTES:
        raise Refused(f"the request body is over {MAX_REQUEST_BODY_BYTES} bytes")
    return method, url, headers, payload, _timeout(request.get("timeout"))


def _parse_datagrams(request: dict[str, Any]) -> tuple[str, list[bytes]]:
    target = request.get("target")
    if not isinstance(target, str):
        raise Refused("the datagrams have no target host:port")
    encoded = request.get("datagrams")
    if not isinstance(encoded, list) or not all(isinstance(item, str) for item in encoded):
        raise Refused("datagrams must be a list of base64 strings")
    if len(encoded) > MAX_DATAGRAMS_PER_CALL:
        raise Refused(f"at most {MAX_DATAGRAMS_PER_CALL} datagrams may be sent per call")
    try:
        payloads = [base64.b64decode(item, validate=True) for item in encoded]
    except ValueError:
        raise Refused("a datagram is not valid base64") from None
    for index, payload in enumerate(payloads):
        if len(payload) > MAX_DATAGRAM_BYTES:
            raise Refused(f"datagram {index} is over {MAX_DATAGRAM_BYTES} bytes")
        if not payload:
            raise Refused(f"datagram {index} is empty")
    return target, payloads


def _send_udp(address: str, port: int, payloads: list[bytes]) -> int:
    """Send ``payloads`` to the checked ``address`` (blocking); how many were sent."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DATAGRAM_TIMEOUT_S)
        sock.connect((address, port))  # the address checked, never a name looked up again
        for payload in payloads:
            sock.send(payload)
    return len(payloads)


def _timeout(value: Any) -> float:
    """Seconds for the whole request: the default when absent, clamped into 0.1 to 60."""
    if value is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused("timeout must be a finite number of seconds")
    return min(max(float(value), MIN_TIMEOUT_S), MAX_TIMEOUT_S)


def _normal(host: str) -> str:
    return host.lower().rstrip(".")


def _is_name(host: str) -> bool:
    """Whether ``host`` is a DNS name (not an IP address, nor a pattern)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _NAME.fullmatch(host) is not None
    return False


def _unsafe_reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssrf.UnsafeTarget):
            return f"refused by the SSRF guard: {seen.reason}"
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return "refused by the SSRF guard"
