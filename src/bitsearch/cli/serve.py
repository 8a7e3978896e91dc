"""`bitsearch serve`: a collection over HTTP (``bitsearch.server``), with the safety checks of the address
it listens on."""

from __future__ import annotations

from typing import Annotated

import typer

from bitsearch.cli.common import MANIFEST, CliError, app, is_collection, reported
from bitsearch.cli.options import CollectionArg, EncoderBackend, value

__all__ = ["serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ANY_ADDRESS = ("0.0.0.0", "::", "")


# over 80 lines by its signature alone: Typer reads the command's options from it
@app.command("serve")
def serve(
    collection: CollectionArg,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BITSEARCH_API_KEY",
            help="Require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every route but /health and the page.",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Requests worked on at once (default: 4 x cores, at least 8).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="Without --api-key, a Host name to answer besides localhost, 127.0.0.1 and [::1] (repeatable; "
            "'*': any). Other names get 421, so web pages cannot reach the server through DNS rebinding.",
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a connection may take to send complete request headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client may take to send a whole request body (else 408).")
    ] = 30.0,
    max_connections: Annotated[
        int,
        typer.Option(min=1, help="Open connections at most; past it the oldest connection not being served is closed."),
    ] = 1000,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=100,
            help="Concurrent /search requests share encoder and search calls; a free worker waits at most this "
            "long for requests on their way (0: no batching).",
        ),
    ] = 1.0,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn's access log, at info level).")] = False,
    encoder_backend: Annotated[
        EncoderBackend | None,
        typer.Option(
            "--encoder",
            help="Model runtime for text queries (default: the one the collection records); onnx-int8 embeds "
            "queries with int8 weights, about 2x less CPU, within 0.1% NDCG@10 on the shared sets.",
        ),
    ] = None,
) -> None:
    """Serve a collection over HTTP: POST /search, POST /documents, DELETE /documents/ID, GET /info, a page at /.

    A sharded collection (sharded.json) is served through its shard actors on Ray (RAY_ADDRESS: a running
    cluster; else a local one is started).
    """
    with reported():
        try:
            import uvicorn  # noqa: F401  (checked here, used by run_server)

            from bitsearch.server import create_app, run_server
        except ImportError as exc:
            raise CliError(
                f"bitsearch serve needs fastapi and uvicorn ({exc}): pip install 'bitsearch[server]'"
            ) from None
        if not is_collection(collection) and not (collection / "sharded.json").is_file():
            raise CliError(f"{collection} is not a bitsearch collection (no {MANIFEST}, nor sharded.json)")
        api = create_app(
            collection,
            api_key=api_key,
            threads=threads,
            preload_model=True,
            body_timeout=body_timeout,
            allowed_hosts=_allowed_hosts(host, api_key, allowed_host or []),
            batch_window_ms=batch_window_ms,
            encoder_backend=value(encoder_backend),
        )
        run_server(
            api,
            host=host,
            port=port,
            log_level=log_level,
            header_timeout=header_timeout,
            max_connections=max_connections,
            access_log=access_log,
        )


def _allowed_hosts(host: str, api_key: str | None, given: list[str]) -> list[str]:
    """The Host names to answer besides loopback; a warning when serving beyond loopback without a key."""
    hosts = list(given)
    if host not in _LOOPBACK and not api_key:
        typer.secho(
            f"warning: serving on {host} without --api-key: anyone who can reach it can add and delete"
            + ("" if hosts else " (and only loopback Host names are answered: add --allowed-host NAME)"),
            fg=typer.colors.YELLOW,
            err=True,
        )
        if host not in _ANY_ADDRESS:
            hosts.append(host)  # the address itself is a name no rebinding page can give
    return hosts
