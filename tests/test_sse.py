"""The sans-IO SSE decoder, fed at every split point, and the frame encoder."""

from __future__ import annotations

import time

import pytest

from streamchat.sse import PING_FRAME, SSEComment, SSEDecoder, SSEEvent, SSETooLarge

STREAM = (
    ": OPENROUTER PROCESSING\n\n"
    'data: {"content":"héllo 🚀"}\n\n'
    "event: custom\r\nid: 7\r\ndata: line one\r\ndata: line two\r\n\r\n"
    "data:no space\rdata: second\r\r"
    "retry: 10\nunknown: x\ndata: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEComment("OPENROUTER PROCESSING"),
    SSEEvent('{"content":"héllo 🚀"}'),
    SSEEvent("line one\nline two", "custom", "7"),
    SSEEvent("no space\nsecond", "message", "7"),
    SSEEvent("[DONE]", "message", "7"),
]


def decode_in_chunks(data: bytes, size: int) -> list[SSEEvent | SSEComment]:
    decoder = SSEDecoder()
    out: list[SSEEvent | SSEComment] = []
    for start in range(0, len(data), size):
        out += decoder.feed(data[start : start + size])
    return out + decoder.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_decoder_gives_the_same_events_at_every_chunk_size(size: int) -> None:
    assert decode_in_chunks(STREAM, size) == EXPECTED


def test_decoder_gives_the_same_events_at_every_single_split_point() -> None:
    for cut in range(len(STREAM)):
        decoder = SSEDecoder()
        out = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) + decoder.flush()
        assert out == EXPECTED, cut


# Line feeds only, as nearly every upstream sends: whole `data:` events go by the decoder's
# block path, the rest (and what a read leaves open) line by line; both must agree everywhere.
LF_STREAM = (
    'data: {"a":1}\n\n'
    ": keep-alive\n\n"
    'data: {"b":"é 🚀"}\n\n'
    "id: 9\ndata: with id\n\n"
    "data: keeps the id\n\n"
    "event: custom\ndata: x\n\n"
    "data: two\ndata: lines\n\n"
    "data:no space\n\n"
    "data: \n\n"
    "\n\n\n"
    "data\n\n"
    "id: 10\n\n"
    "data: after a bare id\n\n"
    "event: only a type\n\n"
    "data: the type was dropped\n\n"
    "data: [DONE]\n\n"
).encode()

LF_EXPECTED = [
    SSEEvent('{"a":1}'),
    SSEComment("keep-alive"),
    SSEEvent('{"b":"é 🚀"}'),
    SSEEvent("with id", "message", "9"),
    SSEEvent("keeps the id", "message", "9"),
    SSEEvent("x", "custom", "9"),
    SSEEvent("two\nlines", "message", "9"),
    SSEEvent("no space", "message", "9"),
    SSEEvent("", "message", "9"),
    SSEEvent("", "message", "9"),
    SSEEvent("after a bare id", "message", "10"),
    SSEEvent("the type was dropped", "message", "10"),
    SSEEvent("[DONE]", "message", "10"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 64, len(LF_STREAM)])
def test_a_line_feed_stream_gives_the_same_events_at_every_chunk_size(size: int) -> None:
    assert decode_in_chunks(LF_STREAM, size) == LF_EXPECTED


def test_a_line_feed_stream_gives_the_same_events_at_every_pair_of_split_points() -> None:
    for first in range(len(LF_STREAM)):
        for second in range(first, len(LF_STREAM), 3):
            decoder = SSEDecoder()
            out = decoder.feed(LF_STREAM[:first])
            out += decoder.feed(LF_STREAM[first:second])
            out += decoder.feed(LF_STREAM[second:]) + decoder.flush()
            assert out == LF_EXPECTED, (first, second)


def test_unicode_line_separator_is_not_a_line_break() -> None:
    decoder = SSEDecoder()

    out = decoder.feed('data: {"t":"a\u2028b\x0cc"}\n\n'.encode())

    assert out == [SSEEvent('{"t":"a\u2028b\x0cc"}')]


def test_event_without_final_blank_line_is_dispatched_at_flush() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(b"data: last") == []
    assert decoder.flush() == [SSEEvent("last")]


def test_ping_frame_is_a_comment() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(PING_FRAME) == [SSEComment("ping")]


# --- bounds: a line or an event past `max_line_bytes` ------------------------------------------

MANY = b"".join(
    b"data: line %d of event %d\ndata: \xc3\xa9\xf0\x9f\x9a\x80\n\n" % (i % 3, i) + b": ping\r\n"
    for i in range(500)
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096, len(MANY)])
def test_many_short_events_never_trip_a_small_bound(size: int) -> None:
    decoder = SSEDecoder(max_line_bytes=60)
    out: list[SSEEvent | SSEComment] = []
    for start in range(0, len(MANY), size):
        out += decoder.feed(MANY[start : start + size])
    out += decoder.flush()

    events = [item for item in out if isinstance(item, SSEEvent)]
    assert len(events) == 500
    assert events[-1].data == "line 1 of event 499\né🚀"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096, None])
def test_a_line_past_the_bound_raises_at_every_chunk_size(size: int | None) -> None:
    data = b"data: " + b"x" * 2000 + b"\n\n"
    decoder = SSEDecoder(max_line_bytes=1000)
    step = size or len(data)

    with pytest.raises(SSETooLarge):
        for start in range(0, len(data), step):
            decoder.feed(data[start : start + step])


@pytest.mark.parametrize("size", [1, 3, 4096, None])
def test_data_lines_of_one_event_past_the_bound_raise(size: int | None) -> None:
    data = b"data: 0123456789\n" * 200 + b"\n"
    decoder = SSEDecoder(max_line_bytes=1000)
    step = size or len(data)

    with pytest.raises(SSETooLarge):
        for start in range(0, len(data), step):
            decoder.feed(data[start : start + step])


@pytest.mark.parametrize("size", [1, 3, 4096, None])
def test_a_line_and_an_event_within_the_bound_pass(size: int | None) -> None:
    line = b"data: " + "é".encode() * 497 + b"\n"  # 1000 bytes with its newline
    data = line + b"\n" + b"data: 0123456789\n" * 90 + b"\n"
    decoder = SSEDecoder(max_line_bytes=1000)
    step = size or len(data)
    out: list[SSEEvent | SSEComment] = []

    for start in range(0, len(data), step):
        out += decoder.feed(data[start : start + step])

    assert out == [SSEEvent("é" * 497), SSEEvent("\n".join(["0123456789"] * 90))]


def test_a_ten_megabyte_line_in_small_pieces_costs_linear_time() -> None:
    # Re-joining the partial line on every read, as a naive decoder does, copies ~12 GB here
    # (seconds); keeping its pieces copies 10 MB once. The bound is generous for a busy machine.
    piece = b"x" * 4096
    decoder = SSEDecoder()
    started = time.perf_counter()

    assert decoder.feed(b"data: ") == []
    for _ in range(10 * 1024 * 1024 // len(piece)):
        decoder.feed(piece)
    out = decoder.feed(b"\n\n")

    assert time.perf_counter() - started < 2.0
    assert len(out) == 1
    assert isinstance(out[0], SSEEvent)
    assert len(out[0].data) == 10 * 1024 * 1024
