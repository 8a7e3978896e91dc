"""`python -m bitsearch.cli`: the `bitsearch` command."""

from bitsearch.cli.common import main

main()
