"""`python -m streamchat keys ...`: make, list and remove the API keys of `AUTH=keys`.

    python -m streamchat keys add alice      # prints a new key once; stores only its hash
    python -m streamchat keys list           # the owners, never a key
    python -m streamchat keys remove alice   # every key of alice

The keys file is `--file`, else `API_KEYS_FILE` (from the environment or `.env`), else
`streamchat.keys` in the working directory; it is created readable by its owner only. A running
server reads it again within a second of a change. The new key is the only thing written to
stdout, so `KEY=$(python -m streamchat keys add alice)` works.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from dotenv import find_dotenv, load_dotenv

from streamchat.api_keys import (
    DEFAULT_KEYS_FILE,
    OWNER_NAME,
    hash_key,
    new_key,
    parse_keys_file,
)
from streamchat.settings import SettingsError


def keys_file(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    load_dotenv(find_dotenv(usecwd=True))
    return Path(os.environ.get("API_KEYS_FILE", "").strip() or DEFAULT_KEYS_FILE)


def read_lines(path: Path) -> list[str]:
    """The file's lines, checked; none when it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    parse_keys_file(text, str(path))
    return text.splitlines()


def owner_of_line(line: str) -> str | None:
    words = line.split()
    return words[0] if words and not words[0].startswith("#") else None


def add(args: argparse.Namespace) -> int:
    if not OWNER_NAME.fullmatch(args.owner):
        print("streamchat: the owner must be one word of A-Z a-z 0-9 . _ @ + | -", file=sys.stderr)
        return 2
    path = keys_file(args)
    lines = read_lines(path)  # a file that is not a keys file is not appended to
    newline = "\n" if lines and not path.read_bytes().endswith(b"\n") else ""
    key = new_key()
    # Created readable and writable by its owner only; appended in one write.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(f"{newline}{args.owner} {hash_key(key)}\n")
    print(key, flush=True)
    print(
        f"a new key for {args.owner}: shown this once; its hash is in {path} "
        f"(serve with AUTH=keys API_KEYS_FILE={path})",
        file=sys.stderr,
    )
    return 0


def list_owners(args: argparse.Namespace) -> int:
    path = keys_file(args)
    counts = Counter(owner for line in read_lines(path) if (owner := owner_of_line(line)))
    if not counts:
        print(f"no keys in {path}", file=sys.stderr)
    for owner, count in sorted(counts.items()):
        print(f"{owner}\t{count} key{'s' * (count != 1)}")
    return 0


def remove(args: argparse.Namespace) -> int:
    path = keys_file(args)
    lines = read_lines(path)
    kept = [line for line in lines if owner_of_line(line) != args.owner]
    if len(kept) == len(lines):
        print(f"streamchat: {args.owner} has no key in {path}", file=sys.stderr)
        return 1
    # Written beside the file and moved over it: a reader never sees half a file.
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in kept))
    os.replace(partial, path)
    print(f"removed {len(lines) - len(kept)} key(s) of {args.owner} from {path}", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="the API keys of AUTH=keys")
    actions = keys.add_subparsers(dest="action", required=True)
    file_help = "the keys file (default: $API_KEYS_FILE, else streamchat.keys)"
    for name, run, text in (
        ("add", add, "make a new key for an owner and print it once"),
        ("list", list_owners, "list the owners that have keys"),
        ("remove", remove, "remove every key of an owner"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        if name != "list":
            action.add_argument("owner")
        action.add_argument("--file", help=file_help)
        action.set_defaults(run=_reporting(run))


def _reporting(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A bad keys file or one that cannot be written is one line, not a traceback."""

    def reported(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (SettingsError, OSError) as exc:
            print(f"streamchat: {exc}", file=sys.stderr)
            return 2

    return reported
