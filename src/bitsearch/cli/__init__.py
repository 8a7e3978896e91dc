"""The `bitsearch` command line: index text into a collection, search it, describe it, evaluate, serve, demo.

Commands only, one module each (index, search, info, evaluate, serve, demo): each parses its options,
calls the library and prints. Reading inputs is ``bitsearch.readers``, resumable indexing is
``bitsearch.indexing``; what the commands share is in ``common``, ``options``, ``output`` and ``models``.
A module imports only what every command needs: the model runtime, tqdm, the server and Ray are imported
by the commands that use them.
"""

from __future__ import annotations

from bitsearch.cli.common import app, main

# isort: off
# each module registers its command; `bitsearch --help` lists them in this order
from bitsearch.cli import index, search, info, demo, evaluate, serve  # noqa: F401
# isort: on

__all__ = ["app", "main"]
