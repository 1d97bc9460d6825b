"""Turns a py-spy raw (collapsed-stack) profile of streamchat into the report's hot-spot tables.

Each line of the raw file is `frame;frame;...;leaf count`, a frame being `function (file)`. Per
function it counts: *inclusive* (samples with the function anywhere on the stack), *self* (samples
with it as the leaf), and for streamchat's own functions *own + libraries*: samples whose deepest
streamchat frame is that function, i.e. its own code plus the library calls it makes directly
(json, aiohttp writes, ...) but not other streamchat functions. That last figure is what to tune.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def _short(path: str) -> str:
    if "/streamchat/" in path:  # the package, wherever the run's copy of it lives
        return "streamchat/" + path.rsplit("/streamchat/", 1)[1]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/", "lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _is_own(path: str) -> bool:
    # app.py is left out: under its main() is the whole event loop, not streamchat's code.
    return "/streamchat/" in path or path.startswith("streamchat/")


def summarize_profile(raw: str) -> dict[str, Any]:
    total = 0
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    in_own = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                continue  # process / thread header frames
            path = match.group("file")
            frames.append((f"{match.group('func')} ({_short(path)})", _is_own(path)))
        if not frames:
            continue
        for name in {name for name, _ in frames}:
            inclusive[name] += count
        self_[frames[-1][0]] += count
        deepest_own = next((name for name, own in reversed(frames) if own), None)
        if deepest_own is not None:
            attributed[deepest_own] += count
            in_own += count
    own_names = {name for name in inclusive if "(streamchat/" in name}
    return {
        "samples": total,
        "under_streamchat_frames": in_own,
        "own": [
            {
                "function": name,
                "inclusive": inclusive[name] / total * 100,
                "attributed": attributed[name] / total * 100,
                "self": self_[name] / total * 100,
            }
            for name in sorted(own_names, key=lambda n: -attributed[n])[:15]
        ],
        "own_by_inclusive": [
            {"function": name, "inclusive": inclusive[name] / total * 100}
            for name in sorted(own_names, key=lambda n: -inclusive[n])[:10]
        ],
        "leaves": [
            {"function": name, "self": count / total * 100} for name, count in self_.most_common(15)
        ]
        if total
        else [],
    }


def profile_section(profile: dict[str, Any]) -> list[str]:
    total = profile["samples"] or 1
    lines = [
        "## Profile: streamchat under the throughput load",
        "",
        f"py-spy, 100 Hz, `--nonblocking`, {profile['seconds']:g} s while 32 clients stream "
        f"({profile['events_per_s']:,.0f} events/s under the profiler); {profile['samples']} "
        "samples of a busy interpreter (idle waits are not sampled); "
        f"{profile['under_streamchat_frames'] / total * 100:.0f}% of them inside a streamchat "
        f"function; the rest is aiohttp's server and client protocol and the event loop. "
        f"Raw stacks: `{profile.get('raw_file', '')}`.",
        "",
        "Streamchat's functions, by *own + libraries* (samples whose deepest streamchat frame is "
        "this function: its code and the library calls it makes directly). Reading it: an async "
        "generator's *self* time includes resuming the stage it iterates and handing each value "
        "on (that C code has no Python frame), so it is partly the price of the stage hop every "
        "token makes; and py-spy cannot always walk up from a generator's frame, so some stacks "
        "start there and the *inclusive* share of the outer stages is a lower bound.",
        "",
        "| function | own + libraries % | self % | inclusive % |",
        "|---|---:|---:|---:|",
    ]
    for row in profile["own"]:
        lines.append(
            f"| `{row['function']}` | {row['attributed']:.1f} | {row['self']:.1f} | "
            f"{row['inclusive']:.1f} |"
        )
    lines += [
        "",
        "Where the interpreter actually was (leaf frames, any code):",
        "",
        "| leaf function | self % |",
        "|---|---:|",
    ]
    for row in profile["leaves"]:
        lines.append(f"| `{row['function']}` | {row['self']:.1f} |")
    return [*lines, ""]
