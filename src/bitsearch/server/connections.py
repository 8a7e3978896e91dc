"""Connections of ``bitsearch serve``: uvicorn's HTTP/1.1 protocol with the limits uvicorn lacks (a header
deadline, a connection cap that closes the oldest idle connection, a bound on incomplete headers), the
uvicorn config that uses it, and ``run_server``.

Clients that open connections and stall therefore cannot lock others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER_BYTES",
    "ConnectionLimits",
    "guarded_protocol",
    "run_server",
    "server_config",
]

log = logging.getLogger("bitsearch.server")

DEFAULT_HEADER_TIMEOUT = 10.0  # seconds from connecting (or from the last response) to complete request headers
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class ConnectionLimits:
    """Mixed in before one of uvicorn's HTTP/1.1 protocols (guarded_protocol sets the class attributes):
    one connection, with a header deadline and a place in the connection cap."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    count_header_bytes: bool = True  # httptools only: h11 bounds incomplete headers itself
    warned: ClassVar[list[float]] = [-math.inf]  # when the cap was last logged (shared by the connections of one class)

    # provided by uvicorn's protocol
    loop: asyncio.AbstractEventLoop
    transport: Any
    cycle: Any
    connections: set[Any]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.opened_at = self.loop.time()
        self.header_bytes = 0
        self.awaiting_headers = True
        self._arm_header_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self.awaiting_headers = True
            self.header_bytes = 0
            self._arm_header_timer()

    def idle(self) -> bool:
        """Not serving a request: waiting for its headers, or for the rest of its body."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete or (cycle.more_body and not cycle.response_started)

    def _make_room(self) -> None:
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return  # the ones closed before have not been reported lost yet
        idle = [c for c in open_ if c is not self and getattr(c, "idle", lambda: False)()]
        victim = min(idle, key=lambda c: c.opened_at) if idle else self
        now = self.loop.time()
        if now - self.warned[0] > 10:  # once per 10 s: a flood of connections must not flood the log too
            self.warned[0] = now
            log.warning("over %d connections: closing the oldest idle ones (or new ones)", self.max_connections)
        victim.transport.close()

    # -- the header deadline: armed when a request may start, checked when it fires
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self.header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self._header_deadline, self.cycle
        )

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "header_timer", None)
        if timer is not None:
            timer.cancel()
            self.header_timer = None

    def _header_deadline(self, cycle_then: Any) -> None:
        self.header_timer = None
        # a new request's headers replace self.cycle: the same, finished cycle means none arrived in time
        # (a pipelined request started by the previous response has its own, unfinished cycle)
        done = cycle_then is None or cycle_then.response_complete
        if self.cycle is cycle_then and done and not self.transport.is_closing():
            self.transport.close()

    # -- count header bytes until they are complete
    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        super().on_headers_complete()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.awaiting_headers and self.count_header_bytes:
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes and not self.transport.is_closing():
                msg = b"request headers too large"
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(msg), msg)
                )
                self.transport.close()


def guarded_protocol(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    http: str = "auto",
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools, else h11) with the connection limits uvicorn lacks.

    - Request headers must be complete within ``header_timeout`` seconds of connecting or of the
      previous response; otherwise the connection is closed (uvicorn waits forever for a first request,
      and data trickling in keeps resetting its keep-alive timer).
    - Past ``max_connections`` a new connection closes the oldest one that is not being served (waiting
      for headers, or still receiving its body); with none, the new one is closed. uvicorn's
      ``limit_concurrency`` instead answers 503 to everyone while stalled connections fill it.
    - Incomplete request headers over ``max_header_bytes`` get 431 (httptools buffers them without limit;
      h11 answers 400 at the same limit).

    ``http``: "auto" (httptools where installed, else h11), "httptools" or "h11".
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"http must be 'auto', 'httptools' or 'h11', got {http!r}")

    base: type[Any]
    if http == "h11":
        base = H11Protocol
    else:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # no httptools
            if http == "httptools":
                raise
            base = H11Protocol
        else:
            base = HttpToolsProtocol
    limits = {
        "header_timeout": header_timeout,
        "max_connections": max_connections,
        "max_header_bytes": max_header_bytes,
        "count_header_bytes": base is not H11Protocol,
        "warned": [-math.inf],
        "__doc__": ConnectionLimits.__doc__,
    }
    name = f"Guarded{base.__name__}"
    protocol: type[asyncio.Protocol] = type(name, (ConnectionLimits, base), {**limits, "__qualname__": name})
    return protocol


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    http: str = "auto",
    **uvicorn_options: Any,
) -> Any:
    """The uvicorn.Config that ``bitsearch serve`` runs: guarded connections (see guarded_protocol)."""
    import uvicorn

    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be positive, got {header_timeout}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    protocol = guarded_protocol(
        header_timeout=header_timeout, max_connections=max_connections, max_header_bytes=max_header_bytes, http=http
    )
    options: dict[str, Any] = {"timeout_keep_alive": 5, "timeout_graceful_shutdown": 5}
    options.update(uvicorn_options)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        h11_max_incomplete_event_size=max_header_bytes,
        **options,
    )


def run_server(app: Any, **options: Any) -> None:
    """Serve ``app`` with server_config(app, **options) until interrupted.

    Raises the soft open-files limit as far as the hard one allows, so max_connections sockets fit.
    """
    import uvicorn

    config = server_config(app, **options)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = options.get("max_connections", DEFAULT_MAX_CONNECTIONS) + 256  # the collection's files, the pool
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open-files limit %d: fewer than max_connections sockets may fit", new)
    uvicorn.Server(config).run()
