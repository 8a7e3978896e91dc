"""A real uvicorn server for the tests: serves an app on a free loopback port, in a daemon thread."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    """uvicorn serving ``app`` on a free 127.0.0.1 port (``config``: a uvicorn.Config of the app to use
    instead of the default one, e.g. the guarded one `bitsearch serve` runs)."""

    def __init__(self, app: Any, config: uvicorn.Config | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = config or uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        """A raw keep-alive connection to the server."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
