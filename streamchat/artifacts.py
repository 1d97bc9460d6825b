"""The sans-IO parser for the `<artifact ...>body</artifact>` blocks the system prompt asks for.

`ArtifactParser.feed()` takes the model's reply in chunks split at any character and returns the
events they make certain: prose as `TextChunk`s, and for each block an `ArtifactStarted`, its body
as `ArtifactContent` deltas, then an `ArtifactCompleted`. `flush()` ends the stream: held-back text
is released and an unclosed artifact completes as truncated. Only what could still be markup (a
partial tag, a newline that may precede `</artifact>`) is held back, so prose and bodies stream
token by token, and every split of one reply gives the same events once adjacent pieces are merged.
"""

from __future__ import annotations

import re
from enum import Enum, auto

from streamchat.artifact_ids import ArtifactIds
from streamchat.events import ArtifactCompleted, ArtifactContent, ArtifactStarted, TextChunk

ParsedEvent = TextChunk | ArtifactStarted | ArtifactContent | ArtifactCompleted

# An opening tag with no `>` within this many characters (counted from its `<`) is prose after
# all: a malformed tag must not hold back the rest of the reply.
MAX_TAG_CHARS = 2000

_OPEN = "<artifact"
_CLOSE = "</artifact"
_CLOSE_TAG = re.compile(r"</artifact\s*>", re.IGNORECASE)
# Within an opening tag only these matter: `>` ends it, unless it sits in a quoted value.
_TAG_STOP = re.compile("[>\"']")
_ATTRIBUTE = re.compile(r"""([^\s=/"'<>]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")


class _State(Enum):
    PROSE = auto()
    TAG = auto()  # inside an opening tag, looking for its `>`
    BODY_START = auto()  # just after an opening tag, where one newline is not content
    BODY = auto()


class ArtifactParser:
    """Turns a reply, fed in chunks, into prose and artifact events; one parser per reply."""

    def __init__(self, ids: ArtifactIds | None = None) -> None:
        self._ids = ids if ids is not None else ArtifactIds()
        self._state = _State.PROSE
        self._held = ""  # text not yet turned into events; in TAG it starts at the tag's `<`
        self._tag_scanned = 0  # TAG: how far into `_held` the search for `>` has got
        self._quote = ""  # TAG: the quote of the value that search stopped inside, if any
        self._open: ArtifactStarted | None = None
        self._parts: list[str] = []  # the open artifact's deltas, joined once at the end

    def passes(self, text: str) -> bool:
        """True when `text` is prose that holds nothing of a tag: `feed` would give it back."""
        return self._state is _State.PROSE and not self._held and "<" not in text and bool(text)

    def feed(self, text: str) -> list[ParsedEvent]:
        if not self._held and "<" not in text:
            # Most tokens: nothing in them can start a tag, so nothing to parse.
            if self._state is _State.PROSE:
                return [TextChunk(text)] if text else []
            if self._state is _State.BODY and not text.endswith(("\n", "\r")):
                # (A final newline may be the one before `</artifact>`: that goes the long way.)
                out: list[ParsedEvent] = []
                self._add_content(out, text)
                return out
        out = []
        # `_held` is short (a partial tag), so this concatenation stays cheap per token.
        buf, pos, need_more = self._held + text, 0, False
        while not need_more:
            pos, need_more = self._step(buf, pos, out)
        self._held = buf[pos:]
        return out

    def flush(self) -> list[ParsedEvent]:
        out: list[ParsedEvent] = []
        held, self._held = self._held, ""
        if self._state in (_State.PROSE, _State.TAG):
            _add_text(out, held)
        else:
            # The closing tag never came, so nothing shows that the held-back tail (a final
            # newline, a partial `</arti`) was markup: all of it is content.
            self._add_content(out, held)
            self._complete(out, truncated=True)
        self._state, self._tag_scanned, self._quote = _State.PROSE, 0, ""
        return out

    def _step(self, buf: str, pos: int, out: list[ParsedEvent]) -> tuple[int, bool]:
        """Consume from `pos`; return where to go on, and whether more input is needed first."""
        match self._state:
            case _State.PROSE:
                return self._prose(buf, pos, out)
            case _State.TAG:
                return self._tag(buf, pos, out)
            case _State.BODY_START:
                return self._body_start(buf, pos)
            case _State.BODY:
                return self._body(buf, pos, out)

    def _prose(self, buf: str, pos: int, out: list[ParsedEvent]) -> tuple[int, bool]:
        i = buf.find("<", pos)
        starts: bool | None = False
        while i != -1:
            starts = _starts_tag(buf, i)
            if starts is not False:
                break
            i = buf.find("<", i + 1)
        end = len(buf) if i == -1 else i
        _add_text(out, buf[pos:end])
        if i == -1 or starts is None:
            return end, True
        self._state, self._tag_scanned, self._quote = _State.TAG, len(_OPEN), ""
        return i, False

    def _tag(self, buf: str, pos: int, out: list[ParsedEvent]) -> tuple[int, bool]:
        limit = min(len(buf), pos + MAX_TAG_CHARS)
        end = self._tag_end(buf, pos + self._tag_scanned, limit)
        if end != -1:
            self._open_tag(buf[pos:end], out)
            return end, False
        if limit == pos + MAX_TAG_CHARS:
            # Cut at exactly the limit, not at the end of this chunk, so splits cannot matter.
            _add_text(out, buf[pos:limit])
            self._state = _State.PROSE
            return limit, False
        self._tag_scanned = limit - pos
        return pos, True

    def _tag_end(self, buf: str, start: int, limit: int) -> int:
        """The index just after the tag's `>`, or -1 if not before `limit`; resumable."""
        while start < limit:
            if self._quote:
                close = buf.find(self._quote, start, limit)
                if close == -1:
                    return -1
                self._quote, start = "", close + 1
                continue
            stop = _TAG_STOP.search(buf, start, limit)
            if stop is None:
                return -1
            if stop.group() == ">":
                return stop.end()
            self._quote, start = stop.group(), stop.end()
        return -1

    def _open_tag(self, tag: str, out: list[ParsedEvent]) -> None:
        inner = tag[len(_OPEN) : -1].rstrip()
        self_closing = inner.endswith("/")
        attrs = _attributes(inner[:-1] if self_closing else inner)
        title = attrs.get("title", "").strip() or "Untitled"
        started = ArtifactStarted(
            artifact_id=self._ids.claim(attrs.get("id"), title),
            artifact_type=attrs.get("type", "").strip() or "code",
            title=title,
            language=attrs.get("language", "").strip() or None,
        )
        out.append(started)
        self._open, self._parts = started, []
        if self_closing:
            self._complete(out, truncated=False)
        else:
            self._state = _State.BODY_START

    def _body_start(self, buf: str, pos: int) -> tuple[int, bool]:
        # Wait for the first character, or the second after a `\r`, to see if a newline is there.
        if pos == len(buf) or (buf[pos] == "\r" and pos + 1 == len(buf)):
            return pos, True
        self._state = _State.BODY
        if buf.startswith("\n", pos):
            return pos + 1, False
        return (pos + 2 if buf.startswith("\r\n", pos) else pos), False

    def _body(self, buf: str, pos: int, out: list[ParsedEvent]) -> tuple[int, bool]:
        close = _CLOSE_TAG.search(buf, pos)
        if close is not None:
            self._add_content(out, _drop_final_newline(buf[pos : close.start()]))
            self._complete(out, truncated=False)
            return close.end(), False
        hold = _held_newline_start(buf, pos, _partial_close_start(buf, pos))
        self._add_content(out, buf[pos:hold])
        return hold, True

    def _add_content(self, out: list[ParsedEvent], delta: str) -> None:
        if delta and self._open is not None:
            self._parts.append(delta)
            out.append(ArtifactContent(self._open.artifact_id, delta))

    def _complete(self, out: list[ParsedEvent], *, truncated: bool) -> None:
        started = self._open
        assert started is not None, "only an open artifact can complete"
        out.append(completed(started, "".join(self._parts), truncated=truncated))
        self._open, self._parts, self._state = None, [], _State.PROSE


def completed(started: ArtifactStarted, content: str, *, truncated: bool) -> ArtifactCompleted:
    """The end of an artifact: what it started with, and the whole body."""
    return ArtifactCompleted(
        artifact_id=started.artifact_id,
        artifact_type=started.artifact_type,
        title=started.title,
        language=started.language,
        content=content,
        truncated=truncated,
    )


def _starts_tag(buf: str, i: int) -> bool | None:
    """Whether the `<` at `i` opens an artifact tag; None while the text ends too soon to tell."""
    head = buf[i : i + len(_OPEN) + 2].lower()
    if len(head) <= len(_OPEN):
        return None if _OPEN.startswith(head) else False
    if not head.startswith(_OPEN):
        return False  # `<artifacts>`, `< artifact`, `<b>`: prose
    after = head[len(_OPEN) :]
    if after[0] == "/":
        return None if len(after) == 1 else after[1] == ">"
    return after[0] == ">" or after[0].isspace()


def _attributes(inner: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(inner):
        value = match.group(2)
        if value[0] in "\"'":
            value = value[1:-1]
        attrs.setdefault(match.group(1).lower(), value)  # the first of a repeated name wins
    return attrs


def _partial_close_start(buf: str, pos: int) -> int:
    """Where a tail of `buf` that may still become `</artifact>` starts, else `len(buf)`."""
    # Such a tail holds no `<` but its first character, so only the last `<` can start one.
    i = buf.rfind("<", pos)
    if i == -1:
        return len(buf)
    if len(buf) - i <= len(_CLOSE):
        return i if _CLOSE.startswith(buf[i:].lower()) else len(buf)
    close_ahead = buf[i : i + len(_CLOSE)].lower() == _CLOSE and buf[i + len(_CLOSE) :].isspace()
    return i if close_ahead else len(buf)


def _held_newline_start(buf: str, pos: int, hold: int) -> int:
    """Move `hold` back over a newline that may turn out to be the one before `</artifact>`."""
    if hold - 2 >= pos and buf.startswith("\r\n", hold - 2):
        return hold - 2
    if hold - 1 >= pos and buf[hold - 1] == "\n":
        return hold - 1
    # A final `\r` may be half of a `\r\n`; before a `<` it cannot be.
    if hold == len(buf) and hold - 1 >= pos and buf[hold - 1] == "\r":
        return hold - 1
    return hold


def _drop_final_newline(body: str) -> str:
    if body.endswith("\r\n"):
        return body[:-2]
    return body[:-1] if body.endswith("\n") else body


def _add_text(out: list[ParsedEvent], text: str) -> None:
    if not text:
        return
    if out and isinstance(out[-1], TextChunk):
        # A tag given up on leaves prose on both sides of its cut: one chunk reads better.
        out[-1] = TextChunk(out[-1].text + text)
    else:
        out.append(TextChunk(text))
