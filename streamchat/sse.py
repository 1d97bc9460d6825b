"""Server-Sent Events both ways: frames we send, and a sans-IO decoder for streams we read.

The decoder follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; a line starting
with `:` is a comment; `data` lines of one event are joined with `\\n`; a blank line dispatches.
It is fed raw bytes, so a UTF-8 character split across two network reads survives, and it never
touches a socket: tests feed it one byte at a time.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

PING_FRAME = b": ping\n\n"
_EOL = re.compile(r"\r\n|\r|\n")


def encode_frame(event_id: str, event_type: str, data: dict[str, Any]) -> bytes:
    """One whole SSE frame: `id:`, `event:`, and the event as one line of JSON."""
    return frame_text(event_id, event_type, data).encode()


def frame_text(event_id: str, event_type: str, data: dict[str, Any]) -> str:
    """`encode_frame()`'s frame, before it is encoded to UTF-8."""
    # ensure_ascii=False keeps the frame small for non-Latin text; json.dumps escapes newlines,
    # so the data stays on one line as clients that split on "\n" expect.
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event_type}\ndata: {body}\n\n"


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SSEComment:
    text: str


class SSETooLarge(ValueError):
    """A line, or the data lines of one event together, passed the decoder's bound."""


class SSEDecoder:
    """Bytes in, `SSEEvent`s (and `SSEComment`s) out; `flush()` at the end of the stream.

    `max_line_bytes` bounds what an unfinished line or event may hold: past it, `feed()` raises
    `SSETooLarge`, so a stream that never ends a line costs bounded memory. An unfinished line
    is kept as the pieces it came in and only new bytes are scanned, so a long line costs time
    linear in its length, not in its square.
    """

    def __init__(self, max_line_bytes: int = sys.maxsize) -> None:
        self._max = max_line_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []  # the unfinished last line, as it came
        self._partial_bytes = 0
        self._pending_cr = False  # a CR ended the last read: a LF may follow
        self._data: list[str] = []
        self._data_bytes = 0  # of an event whose data lines span reads
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        return self._feed_text(self._utf8.decode(chunk), len(chunk))

    def flush(self) -> list[SSEEvent | SSEComment]:
        out = self._feed_text(self._utf8.decode(b"", final=True), 0)
        if self._pieces:
            out.extend(self._line("".join(self._pieces)))
            self._pieces.clear()
        # A stream may end without the final blank line; what it said still counts.
        out.extend(self._dispatch())
        return out

    def _feed_text(self, text: str, size: int) -> list[SSEEvent | SSEComment]:
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        if not text:
            return []
        has_cr = "\r" in text  # a partial line never holds a CR: only the new text can
        if not has_cr:
            if "\n" not in text:
                # The line goes on. Joining now would copy the whole line again on every read.
                self._pieces.append(text)
                self._partial_bytes += size
                if self._partial_bytes > self._max:
                    raise SSETooLarge(f"a line longer than {self._max} bytes")
                return []
            if self._partial_bytes + self._data_bytes + size <= self._max:
                if not (self._pieces or self._data or self._event):
                    return self._feed_blocks(text, size)
                # What the last read left open goes line by line up to its blank line; the
                # rest starts outside any event.
                end = text.find("\n\n") + 2
                if end == 1 or end == len(text):
                    return self._feed_lines(text, size, False)
                out = self._feed_lines(text[:end], size, False)
                out += self._feed_blocks(text[end:], size)
                return out
        return self._feed_lines(text, size, has_cr)

    def _feed_blocks(self, text: str, size: int) -> list[SSEEvent | SSEComment]:
        """A read that starts at a line's start, outside any event, with LF line ends only: how
        nearly every upstream read looks. Each `data: ...` event whole in it is taken in one
        step; anything else goes line by line."""
        blocks = text.split("\n\n")
        tail = blocks.pop()  # after the last blank line: more lines, or the start of one
        out: list[SSEEvent | SSEComment] = []
        event_id = self._id
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                out.append(SSEEvent(block[6:], "message", event_id))
                continue
            for line in block.split("\n"):
                out.extend(self._line(line))
            out.extend(self._dispatch())
            event_id = self._id
        if "\n" in tail:
            out += self._feed_lines(tail, size, False)
        elif tail:
            self._pieces.append(tail)
            self._partial_bytes = _utf8_size(tail)
        return out

    def _feed_lines(self, text: str, size: int, has_cr: bool) -> list[SSEEvent | SSEComment]:
        # Only CR and LF end a line here; str.splitlines would also split on U+2028 and friends.
        lines = _EOL.split(text) if has_cr else text.split("\n")
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = "".join(self._pieces)
            self._pieces.clear()
        # Past the bound within this read? Rare: reads are far shorter than the bound.
        large = self._partial_bytes + self._data_bytes + size > self._max
        if large:
            self._check_lines(lines)
        last = lines.pop()
        self._partial_bytes = 0
        if last:
            self._pieces.append(last)
            self._partial_bytes = _utf8_size(last)
        out: list[SSEEvent | SSEComment] = []
        data = self._data
        before = len(data)
        for line in lines:
            # The common lines first, inline: this runs for every token of every stream.
            if line.startswith("data: "):
                data.append(line[6:])
            elif line or not data:
                out.extend(self._line(line))
            else:
                out.append(SSEEvent("\n".join(data), self._event or "message", self._id))
                data.clear()
                self._event = ""
        if data:  # an event goes on past this read: rare, as reads mostly end at a blank line
            self._count_open_event(before, out)
        elif large:
            self._data_bytes = 0
        if large:
            self._check_events(out)
        return out

    def _check_lines(self, lines: list[str]) -> None:
        """Refuse a line past the bound that came whole within one (large) read."""
        for line in lines:
            if len(line) * 4 > self._max and _utf8_size(line) > self._max:
                raise SSETooLarge(f"a line longer than {self._max} bytes")

    def _check_events(self, out: list[SSEEvent | SSEComment]) -> None:
        """Refuse an event past the bound that ended within one (large) read."""
        for item in out:
            if isinstance(item, SSEEvent) and _utf8_size(item.data) > self._max:
                raise SSETooLarge(f"an event longer than {self._max} bytes")

    def _count_open_event(self, before: int, out: list[SSEEvent | SSEComment]) -> None:
        """Bound an event whose data lines go on past this read (it has no blank line yet)."""
        if before == 0 or any(isinstance(item, SSEEvent) for item in out):
            self._data_bytes, new = 0, self._data  # the open event began in this read
        else:
            new = self._data[before:]
        self._data_bytes += sum(_utf8_size(line) + 1 for line in new)
        if self._data_bytes + self._partial_bytes > self._max:
            raise SSETooLarge(f"an event longer than {self._max} bytes")

    def _line(self, line: str) -> list[SSEEvent | SSEComment]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return [SSEComment(line[1:].lstrip(" "))]
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return []

    def _dispatch(self) -> list[SSEEvent | SSEComment]:
        if not self._data:
            self._event = ""
            return []
        event = SSEEvent("\n".join(self._data), self._event or "message", self._id)
        self._data.clear()
        self._event = ""
        return [event]


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())
