"""The HTTP API and search page of ``bitsearch serve``: a thin FastAPI layer over ``Collection`` (or a
``ShardedCollection``, whose shard actors the same endpoints call).

Modules, outermost first:

- ``connections``: the guarded uvicorn protocol (header deadline, connection cap), ``run_server``;
- ``middleware``: ``GuardMiddleware`` (Host, API key, body limits, security headers, JSON 500s) and
  ``FastSearch`` (POST /search with a plain JSON body, without FastAPI's routing and validation);
- ``app``: ``create_app`` and the routes;
- ``schemas``: request and response models, and the checks of free-form input;
- ``errors``: ``ERROR_TABLE``, the one map from exception class to HTTP status and JSON body;
- ``batcher``: a /search request as a ``SearchJob``, run alone or micro-batched (``SearchBatcher``);
- ``worker``: ``ServerState`` (the collection and what requests share) and the model thread.
"""

from .app import create_app
from .batcher import DEFAULT_BATCH_WINDOW_MS, MAX_BATCH_QUERIES, SearchBatcher, answer_search
from .connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    guarded_protocol,
    run_server,
    server_config,
)
from .errors import ERROR_TABLE, error_response
from .middleware import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES
from .schemas import MAX_K, plain_search_request
from .worker import ServerState, model_info, open_served

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "ERROR_TABLE",
    "MAX_BATCH_QUERIES",
    "MAX_K",
    "SearchBatcher",
    "ServerState",
    "answer_search",
    "create_app",
    "error_response",
    "guarded_protocol",
    "model_info",
    "open_served",
    "plain_search_request",
    "run_server",
    "server_config",
]
