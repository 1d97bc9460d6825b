"""One streamed reply of an OpenAI-compatible server, sans-IO: decoded SSE events in, deltas out.

`RoundAssembler` takes the JSON chunks of one reply and gives back text deltas, the round's tool
calls (fragments joined by `index`) and its `Finish`. Whatever the upstream sends, what comes out
is well formed, or `UpstreamError` is raised: strings hold no lone surrogate (a surrogate pair
split across two chunks is joined again), usage numbers are finite counts, tool arguments are a
string (an object is serialized), and a wrong type, a tool call without a name, or more tool
calls or tool-call bytes than the bounds allow ends the round with an error a person can read.

`feed_data()` reads a chunk with msgspec's typed decoder when msgspec is installed (the `fast`
extra; `openai_chunk` holds the shape), else with `json.loads`. Both paths hand the same fields to
the same checks; whatever the typed decoder refuses, and an error object, takes the `json.loads`
path, so both give the same deltas and the same errors for any chunk.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamchat.events import LONE_SURROGATE, Finish, ModelDelta, TextChunk, ToolCall, Usage, clean
from streamchat.providers.base import UpstreamError
from streamchat.providers.openai_errors import malformed, person_message, stream_error
from streamchat.sse import SSEComment, SSEEvent

if TYPE_CHECKING:
    from msgspec.json import Decoder

    from streamchat.providers.openai_chunk import Chunk

try:
    from streamchat.providers.openai_chunk import BODY_ENCODER as BODY_ENCODER
    from streamchat.providers.openai_chunk import CHUNK_DECODER as CHUNK_DECODER
except ImportError as exc:  # no `fast` extra (msgspec has no wheel for some platforms)
    if (exc.name or "").partition(".")[0] != "msgspec":
        raise
    CHUNK_DECODER = None  # type: ignore[assignment]
    BODY_ENCODER = None  # type: ignore[assignment]

_MAX_COUNT = 2**53  # a token count past this is not a count (and JavaScript cannot hold it)
# Just below Python's recursion limit, msgspec reads a few levels deeper than json.loads, which
# refuses such a chunk as nested too deeply. A chunk that could nest past this depth (this many
# brackets, in twice as many characters) goes to json.loads, so both paths accept the same
# chunks; a typical chunk, a few hundred characters, pays for one len().
_MAX_TYPED_BRACKETS = 256

_typed: Decoder[Chunk] | None = CHUNK_DECODER  # None: every chunk is read by json.loads


def use_typed_decoder(enabled: bool) -> None:
    """Read chunks with msgspec's typed decoder (the default when msgspec is installed) or with
    `json.loads` only; the tests run the upstream tests both ways."""
    global _typed
    if enabled and CHUNK_DECODER is None:
        raise RuntimeError("the typed decoder needs msgspec: pip install 'streamchat[fast]'")
    _typed = CHUNK_DECODER if enabled else None


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class RoundAssembler:
    """The JSON chunks of one streamed reply in; deltas, tool calls and a `Finish` out."""

    def __init__(
        self, *, max_tool_calls: int = sys.maxsize, max_tool_bytes: int = sys.maxsize
    ) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._max_calls = max_tool_calls
        self._max_tool_bytes = max_tool_bytes
        self._tool_bytes = 0
        self._high = ""  # a high surrogate that ended the last text: its low half may follow
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.usage: Usage | None = None

    def feed_data(self, data: str) -> TextChunk | None:
        """One `data:` line; the text it adds, if any. Raises for an error object.

        The typed chunk is decoded whole before any of it is applied: a chunk sent on to the
        `json.loads` path has changed nothing yet.
        """
        decoder = _typed
        if decoder is None or (
            len(data) > 2 * _MAX_TYPED_BRACKETS
            and data.count("[") + data.count("{") > _MAX_TYPED_BRACKETS
        ):
            return self.feed(json_object(data))
        # A refusal: msgspec's DecodeError and ValidationError are ValueErrors, and so is the
        # UnicodeEncodeError of a lone surrogate in `data` itself.
        try:
            chunk = decoder.decode(data)
        except (ValueError, RecursionError):
            return self.feed(json_object(data))
        if chunk.error is not None:  # rare, and its message is built from the dict
            return self.feed(json_object(data))
        # What `_note` and `_delta` do, inline for a chunk of plain text: this runs per token.
        model, gen_id = chunk.model, chunk.id
        if model != self.model or gen_id != self.id or chunk.usage is not None:
            self._note(model, gen_id, chunk.usage)
        choices = chunk.choices
        if not choices:
            return None
        choice = choices[0]
        if choice.finish_reason:
            self._finish(choice.finish_reason)
        delta = choice.delta
        if delta is None:
            return None
        content = delta.content
        if delta.tool_calls or self._high or type(content) is not str or not content.isascii():
            return self._delta(delta.tool_calls, content)
        return TextChunk(content) if content else None

    def feed(self, chunk: dict[str, Any]) -> TextChunk | None:
        """One decoded `data:` object; the text it adds, if any. Raises for an error object."""
        error = chunk.get("error")
        if isinstance(error, dict):
            raise stream_error(error, self.model)
        self._note(chunk.get("model"), chunk.get("id"), chunk.get("usage"))
        choices = chunk.get("choices")
        if not choices:
            return None
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise malformed("choices that are not a list of objects", choices)
        choice = choices[0]
        reason = choice.get("finish_reason")
        if reason:
            self._finish(reason)
        delta = choice.get("delta")
        if not delta:
            return None
        if not isinstance(delta, dict):
            raise malformed("a delta that is not an object", delta)
        return self._delta(delta.get("tool_calls"), delta.get("content"))

    def _note(self, model: object, gen_id: object, usage: object) -> None:
        if model and isinstance(model, str):
            self.model = model
        if gen_id and isinstance(gen_id, str):
            self.id = gen_id
        if isinstance(usage, dict):
            self.usage = usage_of(usage)

    def _delta(self, fragments: object, content: object) -> TextChunk | None:
        if fragments:
            if not isinstance(fragments, list):
                raise malformed("tool_calls that are not a list", fragments)
            for fragment in fragments:
                self._add_fragment(fragment)
        if not content or not isinstance(content, str):
            return None
        if self._high or not content.isascii():  # isascii() is O(1): ASCII text skips this
            content = self._paired(content)
        return TextChunk(content) if content else None

    def _finish(self, reason: object) -> None:
        if not isinstance(reason, str):
            raise malformed("a finish_reason that is not a string", reason)
        self.finish_reason = clean(reason)
        if reason == "error":
            raise UpstreamError(
                "upstream_error",
                "The model stopped with an error. Try again in a moment.",
                detail="finish_reason 'error' without an error object",
            )

    def _paired(self, text: str) -> str:
        """Text without lone surrogates; a pair split across two chunks is joined again."""
        if self._high:
            text, self._high = self._high + text, ""
        if LONE_SURROGATE.search(text) is None:
            return text
        if "\ud800" <= text[-1] <= "\udbff":
            text, self._high = text[:-1], text[-1]
        return clean(text)

    def _add_fragment(self, fragment: object) -> None:
        if not isinstance(fragment, dict):
            raise malformed("a tool-call fragment that is not an object", fragment)
        call_id, function = fragment.get("id"), fragment.get("function") or {}
        if not isinstance(function, dict):
            raise malformed("a tool call's function that is not an object", fragment)
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(call_id, str | None) or not isinstance(name, str | None):
            raise malformed("a tool call whose id or name is not a string", fragment)
        call = self._call_at(fragment.get("index"), call_id)
        # The first id stays: the tool result must name the id the history gives the call.
        if call_id and not call.id:
            call.id = call_id
        if name and name != call.name:
            call.name += name
        if arguments is None or arguments == "":
            piece = ""
        elif isinstance(arguments, str):
            piece = arguments
        elif isinstance(arguments, dict):  # some servers send the object itself
            piece = _serialized(arguments)
        else:
            raise malformed("tool arguments that are neither a string nor an object", fragment)
        self._tool_bytes += len(piece) + len(name or "")
        if self._tool_bytes > self._max_tool_bytes:
            raise UpstreamError(
                "reply_too_large",
                person_message("reply_too_large"),
                detail=f"tool calls of one round past {self._max_tool_bytes} bytes",
            )
        if piece:
            call.arguments.append(piece)

    def _call_at(self, index: object, call_id: str | None) -> _PartialCall:
        if index is None:
            # A few servers leave `index` out: a new id starts a new call, else it continues.
            last = max(self._calls, default=-1)
            new = last < 0 or bool(call_id and call_id != self._calls[last].id)
            index = last + 1 if new else last
        elif type(index) is not int:
            raise malformed("a tool call whose index is not an integer", index)
        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= self._max_calls:
                raise UpstreamError(
                    "upstream_error",
                    f"The model asked for more than {self._max_calls} tools at once, more than "
                    "this server runs in one round. Try again, or ask for less at a time.",
                    detail=f"more than {self._max_calls} tool calls in one round",
                )
            call = self._calls[index] = _PartialCall()
        return call

    def rest(self) -> list[TextChunk]:
        """What text is still held at the end of the round: a high surrogate never paired."""
        if not self._high:
            return []
        self._high = ""
        return [TextChunk("\ufffd")]

    def tool_calls(self) -> list[ToolCall]:
        calls: list[ToolCall] = []
        seen: set[str] = set()
        for _, call in sorted(self._calls.items()):
            if not call.name:
                raise malformed("a tool call without a name", {"id": call.id})
            call_id = clean(call.id)
            if not call_id or call_id in seen:  # every result must name exactly one call
                call_id = f"call_{uuid.uuid4().hex[:24]}"
            seen.add(call_id)
            calls.append(ToolCall(call_id, clean(call.name), clean("".join(call.arguments))))
        return calls

    def finish(self) -> Finish:
        model = clean(self.model) if self.model else None
        return Finish(self.finish_reason, model, clean(self.id) if self.id else None, self.usage)


def _serialized(arguments: dict[str, Any]) -> str:
    try:
        return json.dumps(arguments, ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError):
        raise malformed("tool arguments with a number JSON cannot hold", "(an object)") from None


def usage_of(raw: dict[str, Any]) -> Usage:
    """The round's usage: counts that are not whole numbers in range count 0, an unusable
    cost (not finite, negative, not a number) is left out."""
    return Usage(
        _count(raw.get("prompt_tokens")),
        _count(raw.get("completion_tokens")),
        _count(raw.get("total_tokens")),
        _cost(raw.get("cost")),
    )


def _count(value: object) -> int:
    if isinstance(value, float) and value.is_integer():  # False for inf and NaN
        value = int(value)
    if type(value) is int and 0 <= value < _MAX_COUNT:
        return value
    return 0


def _cost(value: object) -> float | None:
    if type(value) is int and 0 <= value < _MAX_COUNT:
        return float(value)
    if type(value) is float and math.isfinite(value) and value >= 0:
        return value
    return None


def assemble(
    events: list[SSEEvent | SSEComment], assembler: RoundAssembler, batch: list[ModelDelta]
) -> bool:
    """Feed one read's events to the assembler, collecting text; True at `[DONE]`."""
    for event in events:
        if isinstance(event, SSEComment):
            continue  # `: OPENROUTER PROCESSING` and other keep-alives
        data = event.data
        if not data.startswith("{") and data.strip() == "[DONE]":
            return True
        text = assembler.feed_data(data)
        if text is not None:
            batch.append(text)
    return False


def request_body(body: dict[str, Any]) -> bytes:
    """The JSON bytes of a request to the upstream: msgspec's encoder when it is installed and
    can (json.dumps for a string it cannot encode: a lone surrogate)."""
    if BODY_ENCODER is not None:
        try:
            return BODY_ENCODER.encode(body)
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            pass
    return json.dumps(body).encode()


def json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except RecursionError:
        raise malformed("a chunk nested too deeply", data[:300]) from None
    except ValueError:  # not JSON, or an integer of more digits than Python converts
        value = _loads_with_huge_integers(data)
    if not isinstance(value, dict):
        raise malformed("a chunk that is not an object", data[:300])
    return value


def _loads_with_huge_integers(data: str) -> object:
    """Parse again (rarely: only after a failure), reading a too-long integer as infinite:
    the usage and argument checks then refuse it where it matters, and only there."""
    try:
        return json.loads(data, parse_int=_integer)
    except (ValueError, RecursionError):
        raise malformed("a chunk that is not JSON", data[:300]) from None


def _integer(digits: str) -> int | float:
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf
