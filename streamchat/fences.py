"""The sans-IO converter that turns Markdown code fences in the model's prose into artifacts.

`FenceParser.feed()` takes prose (what the `<artifact>` tag parser left as `TextChunk`s) in chunks
split at any character and returns the events they make certain: prose as `TextChunk`s, and for
each fenced block (CommonMark rules, backticks or tildes) an `ArtifactStarted`, its body as
`ArtifactContent` deltas, then an `ArtifactCompleted`, titled by the info string or by a prose line
that only names a file. `flush()` releases held-back prose and completes an unclosed fence as
truncated. Only what could still be a fence line is held back (a line start, an opening line until
its newline, a body's last newline), so prose and bodies stream token by token, and every split of
one reply gives the same events once adjacent pieces are merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

from streamchat.artifact_ids import ArtifactIds
from streamchat.artifacts import ParsedEvent, completed
from streamchat.events import ArtifactContent, ArtifactStarted, TextChunk

# A line with no newline within this many characters is not a fence line: a run-away line must not
# hold back the rest of the reply, and what is held stays small enough to copy per token.
MAX_FENCE_LINE = 1000
# A prose line longer than this cannot be a (decorated) file name, so it is not kept.
MAX_NAME_LINE = 200

# A whole opening line (without its newline), and every text that can still grow into one.
_OPENER = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_OPENER_PREFIX = re.compile(r" {0,3}(?:`{0,2}|~{0,2}|`{3,}[^`]*|~{3,}.*)")
# The extension must start with a letter, so `1.5` or `python3.11` do not pass for file names.
_FILE_NAME = re.compile(r"(?:[\w.-]+/)*[\w.-]+\.[^\W\d_]\w{0,7}")
# A prose line that is only a file name: maybe a heading, bold, in backticks, with a colon.
_NAME_LINE = re.compile(rf"(?:#{{1,6}}\s+)?(\**)(`?)({_FILE_NAME.pattern})\2:?\1:?")

_ALIASES = {
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "yml": "yaml",
    "c++": "cpp",
    "cs": "csharp",
    "c#": "csharp",
    "rb": "ruby",
    "rs": "rust",
    "golang": "go",
    # Only met as file extensions, in `hello.md` or `notes.txt`.
    "md": "markdown",
    "txt": "text",
}
# File extensions that differ from the language's name; any other language is its own extension.
_EXTENSIONS = {
    "python": "py",
    "javascript": "js",
    "typescript": "ts",
    "bash": "sh",
    "yaml": "yml",
    "rust": "rs",
    "csharp": "cs",
    "ruby": "rb",
    "markdown": "md",
    "text": "txt",
}


class _State(Enum):
    LINE_START = auto()  # at the start of a prose line, which may open a fence
    PROSE = auto()  # inside a prose line known not to
    BODY_LINE_START = auto()  # at the start of a body line, which may close the fence
    BODY = auto()  # inside a body line known not to


@dataclass(frozen=True, slots=True)
class _Fence:
    started: ArtifactStarted
    run: str  # the opening line's backticks or tildes
    indent: int  # the opening line's indent, taken off each body line as CommonMark does
    closer: re.Pattern[str]  # a whole closing line, without its newline
    may_close: re.Pattern[str]  # every text that can still grow into one


class FenceParser:
    """Turns prose, fed in chunks, into prose and artifact events; one parser per reply."""

    def __init__(self, ids: ArtifactIds | None = None) -> None:
        self._ids = ids if ids is not None else ArtifactIds()
        self._state = _State.LINE_START
        self._held = ""  # text not yet turned into events: a line start, or a body's final `\r`
        self._line: list[str] = []  # the prose line so far, while it may still name a file
        self._line_len = 0
        self._name: str | None = None  # the file the last non-empty prose line named, if any
        self._fence: _Fence | None = None
        self._newline = ""  # a body line's newline: content only if no closing line follows
        self._parts: list[str] = []  # the open fence's deltas, joined once at the end

    def closing(self) -> str:
        """What, appended to the text fed so far, closes its open fence ("" when none is open).

        For a reply that ended of its own accord inside a fence: small models often stop right
        after the code's last line, and without this the block would be completed as truncated.
        """
        fence, held = self._fence, self._held
        if fence is None:
            return ""
        if self._state is _State.BODY_LINE_START:
            if fence.closer.fullmatch(held):
                return ""  # the last line closes it; only its newline has not come
            if not held:
                return fence.run  # the text ended with a newline
        return "\n" + fence.run

    def passes(self, text: str) -> bool:
        """Never: where a line starts matters, so every text goes through `feed`."""
        return False

    def feed(self, text: str) -> list[ParsedEvent]:
        out = _Events()
        # `_held` is at most one short line start, so this concatenation stays cheap per token.
        buf, pos, need_more = self._held + text, 0, False
        while not need_more:
            pos, need_more = self._step(buf, pos, out)
        self._held = buf[pos:]
        return out.done()

    def flush(self) -> list[ParsedEvent]:
        out = _Events()
        held, self._held = self._held, ""
        fence = self._fence
        if fence is None:
            out.text(held)  # an opening line whose newline never came stays prose
        elif self._state is _State.BODY_LINE_START and fence.closer.fullmatch(held):
            self._complete(out, truncated=False)  # a closing line needs no newline at the end
        else:
            # No closing line came, so nothing held back was markup: all of it is content.
            if self._state is _State.BODY_LINE_START:
                held = self._newline + held[_indent_end(held, 0, fence.indent) :]
            self._add_content(out, held)
            self._complete(out, truncated=True)
        self._state, self._line, self._line_len, self._name = _State.LINE_START, [], 0, None
        return out.done()

    def _step(self, buf: str, pos: int, out: _Events) -> tuple[int, bool]:
        """Consume from `pos`; return where to go on, and whether more input is needed first."""
        match self._state:
            case _State.LINE_START:
                return self._line_start(buf, pos, out)
            case _State.PROSE:
                return self._prose(buf, pos, out)
            case _State.BODY_LINE_START:
                return self._body_line_start(buf, pos, out)
            case _State.BODY:
                return self._body(buf, pos, out)

    def _line_start(self, buf: str, pos: int, out: _Events) -> tuple[int, bool]:
        limit = pos + MAX_FENCE_LINE
        newline = buf.find("\n", pos, limit)
        if newline != -1:
            opener = _OPENER.fullmatch(buf, pos, newline)
            if opener and not (opener[1][0] == "`" and "`" in opener[2]):
                self._open(opener, out)
                return newline + 1, False
        elif len(buf) < limit and _OPENER_PREFIX.fullmatch(buf, pos):
            return pos, True  # may still open a fence: wait for more of the line
        self._state = _State.PROSE
        return pos, False

    def _prose(self, buf: str, pos: int, out: _Events) -> tuple[int, bool]:
        newline = buf.find("\n", pos)
        end = len(buf) if newline == -1 else newline + 1
        piece = buf[pos:end]
        out.text(piece)
        self._note_line(piece, ended=newline != -1)
        if newline == -1:
            return end, True
        self._state = _State.LINE_START
        return end, False

    def _note_line(self, piece: str, *, ended: bool) -> None:
        """Track whether the last non-empty prose line named a file, to title the next fence."""
        if self._line_len <= MAX_NAME_LINE:
            self._line.append(piece)
        self._line_len += len(piece)
        if not ended:
            return
        if self._line_len > MAX_NAME_LINE:
            self._name = None
        elif line := "".join(self._line).strip():
            named = _NAME_LINE.fullmatch(line)
            self._name = named[3] if named else None
        self._line, self._line_len = [], 0

    def _open(self, opener: re.Match[str], out: _Events) -> None:
        language, title = _describe(opener[2], self._name)
        started = ArtifactStarted(self._ids.claim(None, title), "code", title, language)
        out.add(started)
        run = re.escape(opener[1][0])
        count = len(opener[1])
        self._fence = _Fence(
            started,
            run=opener[1],
            indent=opener.start(1) - opener.start(),
            closer=re.compile(rf" {{0,3}}{run}{{{count},}}[ \t\r]*"),
            may_close=re.compile(rf" {{0,3}}(?:{run}{{0,{count - 1}}}|{run}{{{count},}}[ \t\r]*)"),
        )
        self._parts, self._newline, self._name = [], "", None
        self._state = _State.BODY_LINE_START

    def _body_line_start(self, buf: str, pos: int, out: _Events) -> tuple[int, bool]:
        fence = self._fence
        assert fence is not None, "a body only exists inside a fence"
        limit = pos + MAX_FENCE_LINE
        newline = buf.find("\n", pos, limit)
        if newline != -1 and fence.closer.fullmatch(buf, pos, newline):
            self._complete(out, truncated=False)  # the held newline before it is not content
            return newline + 1, False
        if newline == -1 and len(buf) < limit and fence.may_close.fullmatch(buf, pos):
            return pos, True  # may still close the fence: wait for more of the line
        # A body line after all, so the newline that ended the line before it is content.
        self._add_content(out, self._newline)
        self._newline, self._state = "", _State.BODY
        return _indent_end(buf, pos, fence.indent), False

    def _body(self, buf: str, pos: int, out: _Events) -> tuple[int, bool]:
        newline = buf.find("\n", pos)
        if newline == -1:
            # A final `\r` may be half of the `\r\n` right before a closing line: hold it.
            end = len(buf) - 1 if len(buf) > pos and buf.endswith("\r") else len(buf)
            self._add_content(out, buf[pos:end])
            return end, True
        end = newline - 1 if newline > pos and buf[newline - 1] == "\r" else newline
        self._add_content(out, buf[pos:end])
        self._newline, self._state = buf[end : newline + 1], _State.BODY_LINE_START
        return newline + 1, False

    def _add_content(self, out: _Events, delta: str) -> None:
        if delta and self._fence is not None:
            self._parts.append(delta)
            out.content(self._fence.started.artifact_id, delta)

    def _complete(self, out: _Events, *, truncated: bool) -> None:
        fence = self._fence
        assert fence is not None, "only an open fence can complete"
        started = fence.started
        out.add(completed(started, "".join(self._parts), truncated=truncated))
        self._fence, self._parts, self._newline = None, [], ""
        self._state = _State.LINE_START


class _Events:
    """The events of one call; adjacent pieces of prose, or of one body, become one event."""

    def __init__(self) -> None:
        self._events: list[ParsedEvent] = []
        # Pieces are joined once rather than concatenated one by one, which would be quadratic
        # for a large chunk of many lines.
        self._pieces: list[str] = []
        self._artifact_id: str | None = None  # whose body the pieces are; None for prose

    def text(self, text: str) -> None:
        self._piece(None, text)

    def content(self, artifact_id: str, delta: str) -> None:
        self._piece(artifact_id, delta)

    def add(self, event: ParsedEvent) -> None:
        self._settle()
        self._events.append(event)

    def done(self) -> list[ParsedEvent]:
        self._settle()
        return self._events

    def _piece(self, artifact_id: str | None, piece: str) -> None:
        if not piece:
            return
        if artifact_id != self._artifact_id:
            self._settle()
        self._artifact_id = artifact_id
        self._pieces.append(piece)

    def _settle(self) -> None:
        if not self._pieces:
            return
        joined, self._pieces = "".join(self._pieces), []
        if self._artifact_id is None:
            self._events.append(TextChunk(joined))
        else:
            self._events.append(ArtifactContent(self._artifact_id, joined))


def _describe(info: str, named: str | None) -> tuple[str | None, str]:
    """A fence's language and title, from its info string, else the prose line named `named`."""
    words = info.split()
    names = [word.removeprefix("title=").strip("\"'") for word in words]
    title = next((name for name in names if _FILE_NAME.fullmatch(name)), None)
    language = None
    if words and not words[0].startswith("title=") and not _FILE_NAME.fullmatch(words[0]):
        language = _language(words[0])
    elif title is not None:
        language = _language(title.rpartition(".")[2])  # ```hello.py: the extension tells
    if title is None:
        title = named or f"snippet.{_EXTENSIONS.get(language or 'text', language)}"
    return language, title


def _language(word: str) -> str:
    word = word.lower()
    return _ALIASES.get(word, word)


def _indent_end(buf: str, pos: int, indent: int) -> int:
    """Where a body line starts once up to `indent` spaces of it are taken off."""
    head = buf[pos : pos + indent]
    return pos + len(head) - len(head.lstrip(" "))
