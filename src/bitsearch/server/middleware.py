"""The server's plain-ASGI layers, outermost first: ``GuardMiddleware`` (every request's gate: Host, API
key, body size and time limit, security headers, unexpected errors as JSON 500) and ``FastSearch`` (POST
/search with a plain JSON body answered without FastAPI's routing and pydantic validation).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .batcher import SearchJob, answer_search
from .errors import error_messages
from .schemas import plain_search_request
from .worker import ServerState

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "FastSearch",
    "GuardMiddleware",
    "host_name",
    "normalize_host",
    "replay_first",
]

log = logging.getLogger("bitsearch.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a whole request body
# paths that need no API key: the liveness probe, the search page's own files (the page asks for the key) and the
# API's documentation (a browser cannot send the key header when it opens /docs; the schema holds no data)
PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico", "/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
# Host names a server without an API key answers (any port): a browser page cannot make its requests carry
# these names unless it is served from this machine, which defeats DNS rebinding
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_PAGE_CSP = b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# FastAPI's /docs (Swagger UI) and /redoc load their scripts, styles and fonts from CDNs and start with an inline script
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src 'self' https://fonts.gstatic.com; "
    b"img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    b"worker-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
)
_DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PAGE_SECURITY_HEADERS = [(b"content-security-policy", _PAGE_CSP), *_COMMON_HEADERS]
DOCS_SECURITY_HEADERS = [(b"content-security-policy", _DOCS_CSP), *_COMMON_HEADERS]
_CLOSE = {"connection": "close"}

# a request refused before its body is read: status, detail, extra headers
Refusal = tuple[int, str, dict[str, str] | None]


def normalize_host(name: str) -> str:
    """An --allowed-host name as host_name() gives it: lower case, IPv6 literals in brackets."""
    name = name.strip().lower()
    return f"[{name}]" if name.count(":") > 1 and not name.startswith("[") else host_name(name)


def host_name(value: str) -> str:
    """The name part of a Host header, lower case, without the port (IPv6 literals keep their brackets)."""
    host = value.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] or host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def replay_first(message: Message, receive: Receive) -> Receive:
    """A receive callable that hands the app ``message`` (a body already read here) first, then reads on."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay


async def _send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    for message in error_messages(status, detail, headers):
        await send(message)


def _content_length(scope: Scope) -> int | None:
    """The Content-Length header's value (the last one given); -1 when it is not a number; None without one."""
    length = None
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
    return length


class GuardMiddleware:
    """Every request's gate, as plain ASGI (cheap): Host check (without an API key), API key, body size, body
    time limit; security headers on every response; an unexpected error becomes a JSON 500 that leaves the
    connection usable (Starlette's error middleware would re-raise it, and uvicorn then drops the connection).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.key = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        # with a key any Host is fine (the key is what a rebinding page lacks); "*" turns the check off
        hosts = LOOPBACK_HOSTS | (allowed_hosts or frozenset())
        self.hosts = None if api_key or "*" in hosts else hosts

    def _authorized(self, scope: Scope) -> bool:
        if self.key is None:
            return True
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        given: list[bytes] = []
        for name, value in scope.get("headers", []):
            if name == b"x-api-key":
                given.append(value.strip())
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
        ok = False
        for candidate in given:  # digests of equal length, compared in constant time: nothing leaks, not even length
            ok |= hmac.compare_digest(hashlib.sha256(candidate).digest(), self.key)
        return ok

    def _host_refused(self, scope: Scope) -> str | None:
        """Why the Host header is refused, or None when it is served."""
        if self.hosts is None or scope.get("path") == "/health":  # the liveness probe tells nothing: any Host
            return None
        given = [v for k, v in scope.get("headers", []) if k == b"host"]
        if len(given) != 1:
            return "send exactly one Host header"
        if host_name(given[0].decode("latin-1")) in self.hosts:
            return None
        shown = given[0].decode("latin-1")[:100]
        return (
            f"Host {shown!r} is not served: without an API key this server answers only "
            f"{', '.join(sorted(self.hosts))} (start it with --allowed-host NAME or --api-key)"
        )

    def _refusal(self, scope: Scope, length: int | None) -> Refusal | None:
        """Why the request is refused from its headers alone (Host, key, length), or None."""
        refused = self._host_refused(scope)
        if refused is not None:
            return 421, refused, None
        if not self._authorized(scope):
            detail = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            return 401, detail, {"www-authenticate": "Bearer"}
        if length is not None and length < 0:
            return 400, "invalid Content-Length", _CLOSE
        if length is not None and length > self.max_body:
            return 413, f"request body of {length} bytes is over the {self.max_body}-byte limit", _CLOSE
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = DOCS_SECURITY_HEADERS if scope.get("path") in _DOCS_PATHS else PAGE_SECURITY_HEADERS
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self._guard(scope, receive, secured)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # otherwise the response is cut short: uvicorn closes the connection
                await _send_error(secured, 500, f"internal error ({type(exc).__name__}); see the server log")

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = _content_length(scope)
        refusal = self._refusal(scope, length)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        chunked = any(k == b"transfer-encoding" for k, _ in scope.get("headers", []))
        if scope.get("method") in ("GET", "HEAD", "OPTIONS") or length == 0 or (length is None and not chunked):
            await self.app(scope, receive, send)  # no body to check
            return
        ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"").split(b";")[0].strip()
        if ctype != b"application/json" and not ctype.endswith(b"+json"):
            shown = ctype.decode("latin-1") or "none"
            detail = f"send the body as JSON with 'Content-Type: application/json' (got {shown})"
            await _send_error(send, 415, detail, _CLOSE)
            return
        body = await self._read_body(receive, send)
        if body is not None:
            message = {"type": "http.request", "body": body, "more_body": False}
            await self.app(scope, replay_first(message, receive), send)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, read here (at most max_body bytes, within body_timeout), so an oversized chunked body
        is cut off early and a client that sends its body slowly holds a connection for a bounded time only;
        None when it was refused (answered here) or the client left."""
        chunks: list[bytes] = []
        size = 0
        # asyncio's own timeout: cheaper than anyio's cancel scope, on every request with a body
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None  # the client left before sending its request: nothing to do
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await _send_error(send, 413, f"request body is over the {self.max_body}-byte limit", _CLOSE)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        await _send_error(send, 408, f"request body not received within {self.body_timeout:g} s", _CLOSE)
        return None


class FastSearch:
    """POST /search without FastAPI's routing and pydantic validation when the body is plain JSON
    (plain_search_request); any other body goes on to the FastAPI route, which answers it as before."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/search" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        message = await receive()  # GuardMiddleware hands over the whole body in one message
        job = None
        if message["type"] == "http.request" and not message.get("more_body", False):
            req = plain_search_request(message.get("body", b""))
            if req is not None:
                # a request the checks refuse goes the full way, which names the problem as it always has
                with contextlib.suppress(Exception):
                    job = SearchJob(req, self.state)
        if job is None:
            await self.app(scope, replay_first(message, receive), send)
            return
        response = await answer_search(self.state, job, receive)
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
