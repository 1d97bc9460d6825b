"""The sans-IO SSE decoder, fed at every split point, and the frame encoder."""

from __future__ import annotations

import pytest

from streamchat.sse import PING_FRAME, SSEComment, SSEDecoder, SSEEvent

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
