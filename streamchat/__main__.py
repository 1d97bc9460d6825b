"""`python -m streamchat <command>`: the command-line tools that come with streamchat.

    python -m streamchat chat [--url URL]     # a terminal chat (chat_cli.py)
    python -m streamchat keys add alice       # the API keys of AUTH=keys (keys_cli.py)

Each command is a module with `add_parser(subparsers)`, which registers its arguments and sets
`run`, the function that runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from streamchat import chat_cli, keys_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamchat", description="streamchat's command-line tools."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    chat_cli.add_parser(subparsers)
    keys_cli.add_parser(subparsers)
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
