"""How long one upstream chunk takes to decode: json.loads, orjson, msgspec untyped and msgspec
typed (streamchat's `Chunk`), and the whole `RoundAssembler.feed_data()` on each of its paths.

Run: `.venv/bin/python bench/decoders.py` (`--cpu N` picks the core, 0 by default). Three chunks
as OpenRouter sends them: a text token, a tool-call fragment and the last one, with the usage.
Each is a `str`, as the SSE decoder hands it over. The process pins itself to one core (what
`taskset -c` does) where the platform allows it; each figure is the best of 7 runs, in
microseconds per chunk, printed as a Markdown table. A decoder that is not installed reads n/a.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamchat.providers import openai_round
from streamchat.providers.openai_round import CHUNK_DECODER, RoundAssembler

_HEAD = (
    '{"id":"gen-1732000000-AbCdEf","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    '"object":"chat.completion.chunk","created":1732000000,"choices":[{"index":0,"delta":'
)
_TAIL = ',"finish_reason":null,"native_finish_reason":null,"logprobs":null}]'
CHUNKS = {
    "text token": _HEAD + '{"role":"assistant","content":" token"}' + _TAIL + "}",
    "tool-call fragment": _HEAD
    + '{"role":"assistant","content":null,"tool_calls":[{"index":0,"type":"function",'
    '"function":{"arguments":"{\\"a\\": 2, "}}]}' + _TAIL + "}",
    "usage (last chunk)": _HEAD
    + '{"role":"assistant","content":""}'
    + _TAIL
    + ',"usage":{"prompt_tokens":12,"completion_tokens":40,"total_tokens":52,'
    '"cost":0.0000258,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},'
    '"cost_details":{"upstream_inference_cost":null},'
    '"completion_tokens_details":{"reasoning_tokens":0}}}',
}

Decode = Callable[[str], object]


def decoders() -> dict[str, Decode | None]:
    """Every decoder measured; None where its package is not installed."""
    found: dict[str, Decode | None] = {"json.loads (stdlib)": json.loads}
    try:  # not a dependency of streamchat's: imported by name, so type checks pass without it
        orjson = importlib.import_module("orjson")
    except ImportError:
        found["orjson.loads"] = None
    else:
        found["orjson.loads"] = orjson.loads
    try:
        import msgspec
    except ImportError:
        found["msgspec, untyped"] = None
    else:
        found["msgspec, untyped"] = msgspec.json.Decoder().decode
    found["msgspec, typed (streamchat's `Chunk`)"] = CHUNK_DECODER and CHUNK_DECODER.decode
    return found


def feed_paths() -> dict[str, bool | None]:
    """The whole `feed_data()` (decode, checks, the delta), typed or not; None: no msgspec."""
    return {
        "`feed_data()`, json.loads path": False,
        "`feed_data()`, typed path": True if CHUNK_DECODER else None,
    }


def microseconds(decode: Decode, data: str) -> float:
    decode(data)
    timer = timeit.Timer(lambda: decode(data))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=7, number=number)) / number * 1e6


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to (default 0)")
    args = parser.parse_args()
    pinned = "not pinned"
    if hasattr(os, "sched_setaffinity") and args.cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {args.cpu})
        pinned = f"pinned to core {args.cpu}"
    print(
        f"Python {platform.python_version()}, msgspec {version('msgspec')}, "
        f"orjson {version('orjson')}, {pinned}; µs per chunk, best of 7\n"
    )
    print("| decoder | " + " | ".join(CHUNKS) + " |")
    print("|---|" + "---:|" * len(CHUNKS))
    for name, decode in decoders().items():
        row(name, decode)
    for name, typed in feed_paths().items():
        if typed is not None:
            openai_round.use_typed_decoder(typed)
        row(name, None if typed is None else RoundAssembler().feed_data)
    openai_round.use_typed_decoder(CHUNK_DECODER is not None)


def row(name: str, decode: Decode | None) -> None:
    cells = [f"{microseconds(decode, data):.2f}" if decode else "n/a" for data in CHUNKS.values()]
    print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
