"""Hostile upstreams, a fake per fault: whatever an upstream sends, the turn ends with one clear
event (or succeeds), every frame is strict JSON, memory stays bounded and the stored history is
one the next turn can send upstream."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.events import Finish, TextChunk, ToolCall, to_wire
from streamchat.providers.base import UpstreamError
from streamchat.providers.openai_round import RoundAssembler, assemble
from streamchat.sse import SSEDecoder, SSEEvent
from tests.conftest import MakeClient, StreamReply, stream
from tests.fake_upstream import (
    DONE,
    USAGE,
    Action,
    FakeUpstream,
    Repeat,
    Send,
    chunk,
    raw_chunk,
    raw_delta,
    text_reply,
    tool_reply,
)

# Every test here runs with the typed chunk decoder and with json.loads alone.
pytestmark = pytest.mark.usefixtures("chunk_decoder")

Client = TestClient[Any, Any]
TERMINAL = ("completion", "error")
HUGE = "9" * 5000  # more digits than Python converts to an int by default
LONG = "9" * 4000  # fewer: it parses, but is no token count


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def strict_events(raw: bytes) -> list[dict[str, Any]]:
    """The response's events, each `data:` line parsed as strict JSON (no NaN, no Infinity)."""
    decoder = SSEDecoder()
    items = decoder.feed(raw) + decoder.flush()
    raw.decode("utf-8")  # strict: no lone surrogate was encoded
    return [
        json.loads(item.data, parse_constant=_refuse)
        for item in items
        if isinstance(item, SSEEvent)
    ]


async def turn(client: Client, conversation_id: str, message: str = "go") -> StreamReply:
    """One turn that must end with exactly one terminal event, in strict JSON frames."""
    reply = await stream(client, message, conversationId=conversation_id)
    assert reply.status == 200
    events = strict_events(reply.raw)
    assert [e["type"] for e in events] == reply.types
    assert [t for t in reply.types if t in TERMINAL] == [reply.types[-1]]
    if reply.types[-1] == "error":
        assert reply.events[-1]["code"] != "internal"
        assert reply.events[-1]["message"]
    return reply


async def valid_history(client: Client, conversation_id: str) -> list[dict[str, Any]]:
    """The stored messages: strict JSON, and every assistant tool call answered by its result."""
    response = await client.get(f"/api/conversation/{conversation_id}")
    assert response.status == 200
    messages: list[dict[str, Any]] = json.loads(await response.read(), parse_constant=_refuse)[
        "messages"
    ]
    json.dumps(messages, allow_nan=False).encode()
    for n, message in enumerate(messages):
        assert message["role"] in ("system", "user", "assistant", "tool")
        assert isinstance(message.get("content"), str | None)
        calls = message.get("tool_calls") or []
        ids = [call["id"] for call in calls]
        assert len(set(ids)) == len(ids)
        for call in calls:
            assert call["function"]["name"]
            assert isinstance(call["function"]["arguments"], str)
        answers = messages[n + 1 : n + 1 + len(calls)]
        assert [a.get("tool_call_id") for a in answers] == ids
        assert all(a["role"] == "tool" for a in answers)
    return messages


def last_assistant_text(messages: list[dict[str, Any]]) -> str:
    texts = [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]
    return texts[-1] if texts else ""


def ends_with(reply: StreamReply, code: str) -> str:
    assert reply.types[-1] == "error", reply.events[-1]
    assert reply.events[-1]["code"] == code
    message: str = reply.events[-1]["message"]
    return message


def frames(*pieces: bytes) -> list[Action]:
    return [Send(piece) for piece in pieces]


def call_round(*deltas: str) -> list[Action]:
    return frames(*(raw_delta(d) for d in deltas), raw_delta("{}", '"tool_calls"'), DONE)


def fragment(body: str) -> str:
    return f'{{"tool_calls":[{body}]}}'


# --- a line with no end, a reply with no end, a drip ------------------------------------------


async def test_a_line_with_no_end_ends_the_turn_in_bounded_memory(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_line_bytes=256 * 1024)
    opened = b'data: {"choices":[{"delta":{"content":"'
    upstream.add([Send(chunk({"content": "Hi"})), Send(opened), Repeat(b"x" * 65536, 160)])

    tracemalloc.start()
    try:
        reply = await turn(client, "endless-line")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert "line of it was too long" in ends_with(reply, "upstream_error")
    assert reply.text == "Hi"
    assert peak < 4 * 1024 * 1024  # the upstream sent 10 MB on one line
    assert await asyncio.wait_for(upstream.disconnected.wait(), 2)
    assert last_assistant_text(await valid_history(client, "endless-line")) == "Hi"


async def test_data_lines_without_a_blank_line_are_bounded_like_a_line(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_line_bytes=64 * 1024)
    upstream.add([Send(chunk({"content": "Hi"})), Repeat(b"data: " + b"y" * 1000 + b"\n", 10_000)])

    reply = await turn(client, "endless-event")

    ends_with(reply, "upstream_error")
    await valid_history(client, "endless-event")


@pytest.mark.parametrize("piece", ["y" * 1000, "é" * 500, "🚀" * 250, "a🚀" * 200])
async def test_an_endless_reply_ends_with_reply_too_large_keeping_the_text_to_the_bound(
    piece: str, make_client: MakeClient, upstream: FakeUpstream
) -> None:
    bound = 64 * 1024
    client = await make_client(max_reply_bytes=bound)
    upstream.add([Send(chunk({"role": "assistant"})), Repeat(chunk({"content": piece}), 100_000)])

    reply = await turn(client, "endless-reply")

    assert "cut short" in ends_with(reply, "reply_too_large")
    assert bound - 4 < len(reply.text.encode()) <= bound
    assert "\ufffd" not in reply.text  # never half a character
    assert await asyncio.wait_for(upstream.disconnected.wait(), 2)
    stored = last_assistant_text(await valid_history(client, "endless-reply"))
    assert stored == reply.text


async def test_the_reply_bound_counts_text_and_tool_arguments_over_all_rounds(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_reply_bytes=1000)
    upstream.add(
        tool_reply(("c1", "add", {"a": 1, "b": 2}), text="x" * 600),
        text_reply("y" * 600),
    )

    reply = await turn(client, "two-rounds")

    assert reply.types[:2] == ["text", "tool_executing"]
    ends_with(reply, "reply_too_large")
    assert len(reply.text) == 1000 - len("add") - len(json.dumps({"a": 1, "b": 2}))
    messages = await valid_history(client, "two-rounds")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]


async def test_a_drip_ends_with_timeout_at_the_turn_deadline(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_turn_seconds=1.0, upstream_read_timeout_seconds=0.4)
    # A byte every 50 ms: far below the read timeout, so only the whole-turn deadline ends it.
    upstream.add([Send(chunk({"content": "So far"})), Repeat(chunk({"content": "."}), 10**6, 0.05)])
    started = time.monotonic()

    async with asyncio.timeout(10):  # without the deadline: hours
        reply = await turn(client, "drip")

    assert "took longer than 1 s" in ends_with(reply, "timeout")
    assert 1.0 <= time.monotonic() - started < 4
    assert reply.text.startswith("So far.")
    assert await asyncio.wait_for(upstream.disconnected.wait(), 2)
    assert last_assistant_text(await valid_history(client, "drip")) == reply.text


async def test_a_byte_by_byte_drip_of_a_long_line_ends_at_the_deadline(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_turn_seconds=0.8, upstream_read_timeout_seconds=0.4)
    upstream.add([Send(b'data: {"choices":[{"delta":{"content":"'), Repeat(b"z", 10**6, 0.02)])

    async with asyncio.timeout(10):  # without the deadline: hours
        reply = await turn(client, "drip-line")

    ends_with(reply, "timeout")
    await valid_history(client, "drip-line")


async def test_the_deadline_cuts_a_tool_round_without_storing_half_of_it(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(max_turn_seconds=0.8)
    upstream.add(tool_reply(("c1", "add", {"a": 1, "b": 2})), [Repeat(b": wait\n\n", 1000, 0.05)])

    async with asyncio.timeout(10):  # without the deadline: hours
        reply = await turn(client, "deadline-tools")

    ends_with(reply, "timeout")
    messages = await valid_history(client, "deadline-tools")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]


# --- tool arguments -------------------------------------------------------------------------


async def test_megabyte_tool_arguments_end_with_reply_too_large(
    client: Client, upstream: FakeUpstream
) -> None:
    arguments = '{"a":1,"b":2,"pad":"' + "z" * 1_500_000 + '"}'
    upstream.add(tool_reply(("c1", "add", arguments), split=16 * 1024))

    reply = await turn(client, "mega-args")

    ends_with(reply, "reply_too_large")
    assert "tool_executing" not in reply.types
    messages = await valid_history(client, "mega-args")
    assert [m["role"] for m in messages] == ["system", "user"]


async def test_tool_arguments_in_one_megabyte_line_end_with_upstream_error(
    client: Client, upstream: FakeUpstream
) -> None:
    arguments = '{"a":1,"b":2,"pad":"' + "z" * 1_500_000 + '"}'
    upstream.add(tool_reply(("c1", "add", arguments), split=len(arguments)))

    reply = await turn(client, "mega-line")

    ends_with(reply, "upstream_error")
    await valid_history(client, "mega-line")


async def test_large_tool_arguments_under_the_bound_are_accepted(
    client: Client, upstream: FakeUpstream
) -> None:
    arguments = '{"a":1,"b":2,"pad":"' + "z" * 200_000 + '"}'
    upstream.add(tool_reply(("c1", "add", arguments), split=16 * 1024), text_reply("done"))

    reply = await turn(client, "big-args")

    assert reply.types == ["tool_executing", "tool_error", "text", "completion"]
    assert reply.events[0]["arguments"] == arguments
    await valid_history(client, "big-args")


async def test_tool_arguments_sent_as_an_object_are_serialized(
    client: Client, upstream: FakeUpstream
) -> None:
    call = (
        '{"tool_calls":[{"index":0,"id":"c1","function":{"name":"add","arguments":{"a":2,"b":3}}}]}'
    )
    upstream.add(call_round(call), text_reply("5"))

    reply = await turn(client, "object-args")

    assert reply.types == ["tool_executing", "tool_completed", "text", "completion"]
    assert json.loads(reply.events[0]["arguments"]) == {"a": 2, "b": 3}
    assert reply.events[1]["result"] == "5"
    await valid_history(client, "object-args")


@pytest.mark.parametrize(
    ("arguments", "outcome"),
    [
        ('"{\\"a\\":1e999,\\"b\\":1}"', "tool_error"),  # a string: the tool sees infinity
        (f'"{{\\"a\\":{HUGE},\\"b\\":1}}"', "tool_error"),
        (f'"{{\\"a\\":{LONG},\\"b\\":1}}"', "tool_error"),
        ('{"a":1e999,"b":1}', "upstream_error"),  # an object: JSON cannot hold infinity
        (f'{{"a":{HUGE},"b":1}}', "upstream_error"),
        (f'{{"a":{LONG},"b":1}}', "tool_error"),
    ],
    ids=[
        "string-1e999",
        "string-huge",
        "string-long",
        "object-1e999",
        "object-huge",
        "object-long",
    ],
)
async def test_unrepresentable_numbers_in_tool_arguments_end_clearly(
    arguments: str, outcome: str, client: Client, upstream: FakeUpstream
) -> None:
    call = fragment(f'{{"index":0,"id":"c1","function":{{"name":"add","arguments":{arguments}}}}}')
    upstream.add(call_round(call), text_reply("ok"))

    reply = await turn(client, "numbers-args")

    if outcome == "upstream_error":
        ends_with(reply, "upstream_error")
    else:
        assert reply.types == ["tool_executing", "tool_error", "text", "completion"]
    await valid_history(client, "numbers-args")


# --- numbers in usage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        '{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":1e999}',
        '{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":NaN}',
        '{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":-Infinity}',
        '{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":-0.5}',
        f'{{"prompt_tokens":{LONG},"completion_tokens":5,"total_tokens":1e999,"cost":{LONG}}}',
        f'{{"prompt_tokens":{HUGE},"completion_tokens":5,"total_tokens":-3,"cost":{HUGE}}}',
        '{"prompt_tokens":"10","completion_tokens":[5],"total_tokens":true,"cost":"0.1"}',
    ],
    ids=["cost-1e999", "cost-nan", "cost-minus-infinity", "cost-negative", "long", "huge", "types"],
)
async def test_unusable_numbers_in_usage_are_dropped(
    usage: str, client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        frames(
            chunk({"content": "Hi"}),
            chunk({}, "stop"),
            raw_chunk(f'{{"id":"gen-1","choices":[],"usage":{usage}}}'),
            DONE,
        )
    )

    reply = await turn(client, "usage")

    assert reply.types == ["text", "completion"]
    counts = reply.events[-1]["usage"]
    assert "cost" not in counts
    assert all(type(counts[k]) is int and 0 <= counts[k] < 2**53 for k in counts)
    assert counts["completionTokens"] in (0, 5)
    await valid_history(client, "usage")


async def test_usage_is_summed_over_rounds_without_an_unusable_cost(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(("c1", "add", {"a": 1, "b": 2})),
        frames(
            chunk({"content": "3"}),
            chunk({}, "stop"),
            raw_chunk('{"choices":[],"usage":{"prompt_tokens":1,"cost":1e999}}'),
            DONE,
        ),
    )

    reply = await turn(client, "usage-rounds")

    usage = reply.events[-1]["usage"]
    assert usage["promptTokens"] == USAGE["prompt_tokens"] + 1
    assert usage["cost"] == pytest.approx(USAGE["cost"])


# --- text the upstream cannot have meant ----------------------------------------------------


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        (['"a\\ud800b"'], "a\ufffdb"),
        (['"a\\udc00"', '"b"'], "a\ufffdb"),
        (['"a\\ud83d"', '"\\ude80b"'], "a🚀b"),  # a surrogate pair split across two chunks
        (['"a\\ud83d"', '"b"'], "a\ufffdb"),
        (['"a\\ud83d"'], "a\ufffd"),  # held to the end of the round, never paired
        (['"\\ud83d\\ude80 caf\\u00e9"'], "🚀 café"),
    ],
    ids=["lone-high", "lone-low", "split-pair", "high-then-text", "high-at-the-end", "escapes"],
)
async def test_lone_surrogates_become_replacement_characters(
    contents: list[str], expected: str, client: Client, upstream: FakeUpstream
) -> None:
    deltas = [raw_delta(f'{{"content":{content}}}') for content in contents]
    upstream.add(frames(*deltas, chunk({}, "stop"), DONE))

    reply = await turn(client, "surrogates")

    assert reply.types[-1] == "completion"
    assert reply.text == expected
    assert last_assistant_text(await valid_history(client, "surrogates")) == expected


def test_an_escape_split_across_reads_survives_at_every_split_point() -> None:
    frame = raw_delta('{"content":"caf\\u00e9 \\ud83d\\ude80"}') + DONE
    for cut in range(1, len(frame)):
        decoder, assembler = SSEDecoder(), RoundAssembler()
        batch: list[Any] = []
        assemble(decoder.feed(frame[:cut]), assembler, batch)
        assemble(decoder.feed(frame[cut:]), assembler, batch)
        assert batch == [TextChunk("café 🚀")], cut


async def test_lone_surrogates_in_tool_calls_model_and_error_messages_stay_out_of_frames(
    client: Client, upstream: FakeUpstream
) -> None:
    call = (
        '{"tool_calls":[{"index":0,"id":"c\\ud800","function":{"name":"add\\udfff",'
        '"arguments":"{\\"a\\":\\"\\ud800\\"}"}}]}'
    )
    upstream.add(
        call_round(call),
        frames(
            raw_chunk('{"model":"m\\ud800","choices":[{"delta":{"content":"x"}}]}'),
            raw_chunk('{"error":{"message":"bad \\ud800 thing","code":502}}'),
        ),
    )

    reply = await turn(client, "surrogate-tools")

    assert reply.types[:2] == ["tool_executing", "tool_error"]
    assert reply.events[0]["toolName"] == "add\ufffd"
    ends_with(reply, "upstream_error")
    await valid_history(client, "surrogate-tools")


# --- malformed tool-call fragments ----------------------------------------------------------


ADD = '"function":{"name":"add","arguments":"{\\"a\\":1,\\"b\\":2}"}'

# Each: the upstream's first round, and whether the turn goes on (a tool runs) or ends.
MALFORMED: dict[str, tuple[list[Action], str]] = {
    "missing-index": (call_round(fragment(f'{{"id":"c1",{ADD}}}')), "accepted"),
    "id-that-changes": (
        call_round(
            fragment('{"index":0,"id":"c1","function":{"name":"add"}}'),
            fragment('{"index":0,"id":"c2","function":{"arguments":"{\\"a\\":1,\\"b\\":2}"}}'),
        ),
        "accepted",
    ),
    "the-same-id-twice": (
        call_round(fragment(f'{{"index":0,"id":"c1",{ADD}}},{{"index":1,"id":"c1",{ADD}}}')),
        "accepted",
    ),
    "no-id": (call_round(fragment(f'{{"index":0,{ADD}}}')), "accepted"),
    "model-not-a-string": (
        frames(
            raw_chunk(
                '{"model":{"x":1e999},"id":7,"choices":[{"delta":'
                + fragment(f'{{"index":0,"id":"c1",{ADD}}}')
                + "}]}"
            ),
            raw_delta("{}", '"tool_calls"'),
            DONE,
        ),
        "accepted",
    ),
    "name-not-a-string": (
        call_round(fragment('{"index":0,"id":"c1","function":{"name":7}}')),
        "upstream_error",
    ),
    "arguments-for-an-index-never-named": (
        call_round(
            fragment(f'{{"index":0,"id":"c1",{ADD}}}'),
            fragment('{"index":1,"function":{"arguments":"{}"}}'),
        ),
        "upstream_error",
    ),
    "index-not-an-integer": (
        call_round(fragment(f'{{"index":"0","id":"c1",{ADD}}}')),
        "upstream_error",
    ),
    "index-a-boolean": (
        call_round(fragment(f'{{"index":true,"id":"c1",{ADD}}}')),
        "upstream_error",
    ),
    "fragment-not-an-object": (call_round(fragment('"add"')), "upstream_error"),
    "tool-calls-not-a-list": (call_round('{"tool_calls":{"index":0}}'), "upstream_error"),
    "function-not-an-object": (
        call_round(fragment('{"index":0,"id":"c1","function":"add"}')),
        "upstream_error",
    ),
    "arguments-a-list": (
        call_round(fragment('{"index":0,"id":"c1","function":{"name":"add","arguments":[1]}}')),
        "upstream_error",
    ),
    "id-not-a-string": (
        call_round(fragment(f'{{"index":0,"id":{{"a":1}},{ADD}}}')),
        "upstream_error",
    ),
    "delta-not-an-object": (call_round('"add"'), "upstream_error"),
    "choices-not-a-list": (frames(raw_chunk('{"choices":{"0":{}}}'), DONE), "upstream_error"),
    "finish-reason-not-a-string": (
        frames(raw_delta('{"content":"x"}', '{"why":1e999}'), DONE),
        "upstream_error",
    ),
    "chunk-not-an-object": (frames(raw_chunk("[1,2,3]"), DONE), "upstream_error"),
    "chunk-nested-too-deeply": (frames(raw_chunk("[" * 100_000), DONE), "upstream_error"),
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_malformed_tool_call_fragments_end_clearly_or_are_accepted(
    case: str, client: Client, upstream: FakeUpstream
) -> None:
    first, outcome = MALFORMED[case]
    upstream.add(first, text_reply("done"))

    reply = await turn(client, "malformed")

    if outcome == "accepted":
        assert reply.types[-1] == "completion", reply.events[-1]
        assert "tool_completed" in reply.types
        ids = [e["toolId"] for e in reply.of("tool_executing")]
        assert all(ids) and len(set(ids)) == len(ids)
    else:
        assert "could not be read" in ends_with(reply, outcome)
        assert "tool_executing" not in reply.types
    await valid_history(client, "malformed")


async def test_hundreds_of_tool_calls_in_one_round_end_with_upstream_error(
    client: Client, upstream: FakeUpstream
) -> None:
    calls = [(f"c{i}", "add", {"a": i, "b": 1}) for i in range(300)]
    upstream.add(tool_reply(*calls, split=100))

    reply = await turn(client, "many-calls")

    assert "more than 32 tools" in ends_with(reply, "upstream_error")
    assert "tool_executing" not in reply.types
    await valid_history(client, "many-calls")


async def test_as_many_tool_calls_as_the_bound_are_run(
    client: Client, upstream: FakeUpstream
) -> None:
    calls = [(f"c{i}", "add", {"a": i, "b": 1}) for i in range(32)]
    upstream.add(tool_reply(*calls, split=100), text_reply("done"))

    reply = await turn(client, "32-calls")

    assert len(reply.of("tool_completed")) == 32
    assert reply.types[-1] == "completion"
    await valid_history(client, "32-calls")


# --- anything at all, to the assembler ------------------------------------------------------

KEYS = [
    "choices", "delta", "content", "tool_calls", "index", "id", "function", "name", "arguments",
    "usage", "cost", "prompt_tokens", "total_tokens", "finish_reason", "model", "error",
    "message", "code",
]  # fmt: skip
PIECES = ["a", "é", "🚀", "\ud800", "\ud83d", "\ude80", "{", '"', "stop", "tool_calls", "add"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats()
    | st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=30,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right shape, usually; any JSON value now and then."""
    return st.one_of(*[strategy] * 7, json_values)


small_ints = st.integers(min_value=-2, max_value=40)
names = st.sampled_from(["add", "divide", "", "a\ud800"])
arguments = st.sampled_from(['{"a":1', ',"b":2}', "", '{"a":1e999}', "\ud83d"])
function = st.fixed_dictionaries({"name": maybe(names)}, optional={"arguments": maybe(arguments)})
tool_fragment = st.fixed_dictionaries(
    {"function": maybe(function)},
    optional={"index": maybe(small_ints), "id": maybe(st.sampled_from(["c1", "c2", ""]))},
)
text = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)
delta = st.one_of(
    st.fixed_dictionaries(
        {"tool_calls": maybe(st.lists(maybe(tool_fragment), min_size=1, max_size=3))},
        optional={"content": maybe(text)},
    ),
    st.fixed_dictionaries({"content": maybe(text)}),
)
choice = st.fixed_dictionaries(
    {"delta": maybe(delta)},
    optional={"finish_reason": maybe(st.sampled_from(["stop", "tool_calls", None]))},
)
usage = st.dictionaries(st.sampled_from(KEYS[9:13]), json_values, max_size=4)
shaped_chunks = st.fixed_dictionaries(
    {"choices": maybe(st.lists(maybe(choice), min_size=1, max_size=2))},
    optional={"usage": maybe(usage), "model": json_values, "id": json_values},
)
any_chunks = st.one_of(
    shaped_chunks, st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
)


# feed() takes chunks decoded already: no decoder is involved, so one run is enough.
@pytest.mark.parametrize("chunk_decoder", ["json"], indirect=True)
@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(any_chunks, max_size=8))
def test_whatever_chunks_come_the_assembler_gives_well_formed_deltas_or_upstream_error(
    chunks: list[dict[str, Any]],
) -> None:
    assembler = RoundAssembler(max_tool_calls=8, max_tool_bytes=10_000)
    out: list[Any] = []
    try:
        for value in chunks:
            text = assembler.feed(value)
            if text is not None:
                out.append(text)
        out += [*assembler.rest(), *assembler.tool_calls(), assembler.finish()]
    except UpstreamError as exc:
        assert exc.code in ("upstream_error", "reply_too_large") or exc.status is not None
        json.dumps(exc.message, ensure_ascii=False).encode()
        return
    for delta in out:
        wire: object
        if isinstance(delta, TextChunk):
            wire = to_wire(delta, 0, 0.0)
        elif isinstance(delta, ToolCall):
            wire = [delta.id, delta.name, delta.arguments]
            assert delta.name and delta.id
        else:
            assert isinstance(delta, Finish)
            wire = [delta.reason, delta.model, delta.id, delta.usage and delta.usage.to_wire()]
        json.dumps(wire, ensure_ascii=False, allow_nan=False).encode()
