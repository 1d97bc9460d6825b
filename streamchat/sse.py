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
from dataclasses import dataclass
from typing import Any

PING_FRAME = b": ping\n\n"
_EOL = re.compile(r"\r\n|\r|\n")


def encode_frame(event_id: str, event_type: str, data: dict[str, Any]) -> bytes:
    """One whole SSE frame: `id:`, `event:`, and the event as one line of JSON."""
    # ensure_ascii=False keeps the frame small for non-Latin text; json.dumps escapes newlines,
    # so the data stays on one line as clients that split on "\n" expect.
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event_type}\ndata: {body}\n\n".encode()


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SSEComment:
    text: str


class SSEDecoder:
    """Bytes in, `SSEEvent`s (and `SSEComment`s) out; `flush()` at the end of the stream."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""  # the unfinished last line
        self._pending_cr = False  # a CR ended the last read: a LF may follow
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        return self._feed_text(self._utf8.decode(chunk))

    def flush(self) -> list[SSEEvent | SSEComment]:
        out = self._feed_text(self._utf8.decode(b"", final=True))
        if self._partial:
            out.extend(self._line(self._partial))
            self._partial = ""
        # A stream may end without the final blank line; what it said still counts.
        out.extend(self._dispatch())
        return out

    def _feed_text(self, text: str) -> list[SSEEvent | SSEComment]:
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        buffer = self._partial + text
        # Only CR and LF end a line here; str.splitlines would also split on U+2028 and friends.
        lines = buffer.split("\n") if "\r" not in buffer else _EOL.split(buffer)
        self._partial = lines.pop()
        out: list[SSEEvent | SSEComment] = []
        data = self._data
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
        return out

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
