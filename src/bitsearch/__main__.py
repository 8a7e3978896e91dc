"""``python -m bitsearch``: the command line."""

from .cli import main

main()
