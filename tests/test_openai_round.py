"""The two ways `RoundAssembler.feed_data()` reads a chunk: msgspec's typed decoder and
`json.loads`. Whatever the upstream sends, both give the same text, tool calls, finish, usage,
model and id, or the same error with the same message; typical chunks never reach `json.loads`."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.events import TextChunk, ToolCall
from streamchat.providers import openai_round
from streamchat.providers.base import UpstreamError
from streamchat.providers.openai_round import CHUNK_DECODER, RoundAssembler, use_typed_decoder
from tests.conftest import ROOT
from tests.test_hostile_upstream import HUGE, LONG, any_chunks

needs_msgspec = pytest.mark.skipif(
    CHUNK_DECODER is None, reason="msgspec is not installed (the `fast` extra)"
)

# As OpenRouter sends them: a text token, a tool-call fragment, the usage at the end.
TEXT = (
    '{"id":"gen-1732000000-AbCdEf","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    '"object":"chat.completion.chunk","created":1732000000,"choices":[{"index":0,'
    '"delta":{"role":"assistant","content":" token"},"finish_reason":null,'
    '"native_finish_reason":null,"logprobs":null}]}'
)
TOOL = (
    '{"id":"gen-1732000000-AbCdEf","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    '"object":"chat.completion.chunk","created":1732000000,"choices":[{"index":0,'
    '"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Xy12",'
    '"type":"function","function":{"name":"add","arguments":"{\\"a\\": 2, "}}]},'
    '"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}'
)
TOOL_END = (
    '{"id":"gen-1732000000-AbCdEf","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    '"object":"chat.completion.chunk","created":1732000000,"choices":[{"index":0,'
    '"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,'
    '"type":"function","function":{"arguments":"\\"b\\": 3}"}}]},'
    '"finish_reason":"tool_calls","native_finish_reason":"tool_calls","logprobs":null}]}'
)
USAGE = (
    '{"id":"gen-1732000000-AbCdEf","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    '"object":"chat.completion.chunk","created":1732000000,"choices":[{"index":0,'
    '"delta":{"role":"assistant","content":""},"finish_reason":null,'
    '"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":12,'
    '"completion_tokens":40,"total_tokens":52,"cost":0.0000258,"is_byok":false,'
    '"prompt_tokens_details":{"cached_tokens":0},"cost_details":'
    '{"upstream_inference_cost":null},"completion_tokens_details":{"reasoning_tokens":0}}}'
)
STOP = TEXT.replace(
    '"content":" token"},"finish_reason":null', '"content":""},"finish_reason":"stop"'
)


def full(
    *,
    gen_id: str = '"gen-1"',
    model: str = '"m/x"',
    usage: str = '{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cost":0.5}',
    reason: str = "null",
    content: str = '"hi"',
    index: str = "0",
    call_id: str = '"c1"',
    name: str = '"add"',
    arguments: str = '"{}"',
    function: str | None = None,
    fragment: str | None = None,
    tool_calls: str | None = None,
    delta: str | None = None,
    choice: str | None = None,
    choices: str | None = None,
    error: str | None = None,
) -> str:
    """A chunk with every field streamchat reads, as JSON text; any part can be replaced."""
    function = function or f'{{"name":{name},"arguments":{arguments}}}'
    fragment = fragment or f'{{"index":{index},"id":{call_id},"function":{function}}}'
    tool_calls = tool_calls or f"[{fragment}]"
    delta = delta or f'{{"content":{content},"tool_calls":{tool_calls}}}'
    choice = choice or f'{{"index":0,"delta":{delta},"finish_reason":{reason}}}'
    choices = choices or f"[{choice}]"
    fields = [f'"id":{gen_id}', f'"model":{model}', f'"choices":{choices}', f'"usage":{usage}']
    if error is not None:
        fields.append(f'"error":{error}')
    return "{" + ",".join(fields) + "}"


def content(text: str, reason: str = "null") -> str:
    return f'{{"choices":[{{"delta":{{"content":{text}}},"finish_reason":{reason}}}]}}'


def fragments(*bodies: str) -> str:
    return f'{{"choices":[{{"delta":{{"tool_calls":[{",".join(bodies)}]}}}}]}}'


def nested(depth: int, key: str = "x") -> str:
    return f'{{"{key}":' + "[" * depth + "]" * depth + ',"choices":[{"delta":{"content":"a"}}]}'


WRONG = ["7", "-1", "1.5", "true", "false", "null", '""', '"x"', "[]", "[1]", "{}", '{"a":1}']
FIELDS = [
    "gen_id", "model", "usage", "reason", "content", "index", "call_id", "name", "arguments",
    "function", "fragment", "tool_calls", "delta", "choice", "choices", "error",
]  # fmt: skip

CORPUS: dict[str, list[str]] = {
    "openrouter-text": [TEXT, TEXT, STOP, USAGE],
    "openrouter-tool-call": [TOOL, TOOL_END, USAGE],
    "whitespace-around": ["  \t" + TEXT + " \r\n"],
    # Surrogates: escaped (msgspec refuses them), raw in the string, split across chunks.
    "split-pair": [content('"a\\ud83d"'), content('"\\ude80b"')],
    "lone-high": [content('"a\\ud800b"')],
    "lone-low": [content('"a\\udc00"'), content('"b"')],
    "high-then-text": [content('"a\\ud83d"'), content('"b"')],
    "high-at-the-end": [content('"a\\ud83d"')],
    "pair-escaped-whole": [content('"\\ud83d\\ude80 caf\\u00e9"')],
    "raw-lone-surrogate": [content('"a\ud800b"')],
    "surrogate-in-ignored-field": ['{"provider":"x\\ud800",' + TEXT[1:]],
    "surrogate-in-model-and-id": [full(model='"m\\ud800"', gen_id='"g\\udfff"'), STOP],
    "surrogate-in-tool-call": [
        full(name='"add\\udfff"', call_id='"c\\ud800"', arguments='"\\ud83d"')
    ],
    "surrogate-in-error": [full(error='{"message":"bad \\ud800 thing","code":502}')],
    # Numbers JSON allows, or Python's json does, that msgspec does not.
    "nan-cost": [STOP, '{"choices":[],"usage":{"prompt_tokens":1,"cost":NaN}}'],
    "infinity-counts": ['{"choices":[],"usage":{"prompt_tokens":Infinity,"cost":-Infinity}}'],
    "nan-in-ignored-field": ['{"logprobs":NaN,' + TEXT[1:]],
    "nan-after-a-fragment": [
        fragments('{"index":0,"id":"c1","function":{"name":"add"}}')[:-1] + ',"x":NaN}'
    ],
    "nan-in-object-arguments": [full(arguments='{"a":NaN}')],
    "huge-in-ignored-field": [f'{{"created":{HUGE},' + TEXT[1:]],
    "huge-count": [f'{{"choices":[],"usage":{{"prompt_tokens":{HUGE},"cost":{HUGE}}}}}'],
    "long-count": [f'{{"choices":[],"usage":{{"prompt_tokens":{LONG},"cost":{LONG}}}}}'],
    "huge-negative": [f'{{"choices":[],"usage":{{"prompt_tokens":-{"9" * 4300}}}}}'],
    "huge-index": [full(index=HUGE)],
    "long-index": [full(index=LONG), full(index=LONG, name='"x"')],
    "huge-in-object-arguments": [full(arguments=f'{{"a":{HUGE}}}')],
    "long-in-object-arguments": [full(arguments=f'{{"a":{LONG}}}')],
    "big-counts": [
        '{"choices":[],"usage":{"prompt_tokens":18446744073709551616,'
        '"completion_tokens":9007199254740993,"total_tokens":1e30,"cost":1e30}}'
    ],
    "big-index": [full(index="18446744073709551616"), full(index="-9223372036854775809")],
    "out-of-range-floats": ['{"choices":[],"usage":{"prompt_tokens":1e999,"cost":-1e999}}'],
    "tiny-floats": ['{"choices":[],"usage":{"prompt_tokens":1e-400,"cost":-1e-400}}'],
    "integral-floats": [
        '{"choices":[],"usage":{"prompt_tokens":3.0,"completion_tokens":2e0,'
        '"total_tokens":-0.0,"cost":5}}'
    ],
    "exact-floats": ['{"choices":[],"usage":{"cost":0.1000000000000000055511151231257827}}'],
    # Duplicate keys: the last one counts, on both paths.
    "duplicate-choices": [
        '{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}'
    ],
    "duplicate-delta": [
        '{"choices":[{"delta":{"content":"a"},"delta":null}]}',
        '{"choices":[{"delta":null,"delta":{"content":"b"}}]}',
    ],
    "duplicate-content": [
        '{"choices":[{"delta":{"content":"a","content":5}}]}',
        '{"choices":[{"delta":{"content":5,"content":"b"}}]}',
    ],
    "duplicate-model": ['{"model":"a","model":5,"id":"g","id":"h","choices":[]}'],
    "duplicate-usage": [
        '{"usage":{"prompt_tokens":1},"usage":null,"choices":[]}',
        '{"usage":null,"usage":{"prompt_tokens":2,"prompt_tokens":4}}',
    ],
    "duplicate-in-fragment": [
        fragments(
            '{"index":0,"index":1,"id":"c1","function":{"name":"a"},'
            '"function":{"name":"add","arguments":"{}"}}'
        )
    ],
    "duplicate-in-object-arguments": [full(arguments='{"b":1,"a":2,"b":3}')],
    # Extra fields, empty and missing parts.
    "extra-fields": [
        '{"x":{"y":[1,{"z":null}],"w":"v"},"system_fingerprint":"fp",'
        '"choices":[{"delta":{"content":"a","refusal":null,"reasoning":"r",'
        '"tool_calls":[{"index":0,"id":"c1","type":"function","extra":[1],'
        '"function":{"name":"add","arguments":"{}","x":1}}]},"logprobs":{"a":[1]},'
        '"native_finish_reason":"stop","finish_reason":"stop"}],"usage":{"x":[1]}}'
    ],
    "empty-delta": [
        '{"choices":[{"delta":{}}]}',
        '{"choices":[{"delta":{},"finish_reason":"stop"}]}',
    ],
    "null-delta": ['{"choices":[{"delta":null,"finish_reason":"length"}]}'],
    "no-delta": ['{"choices":[{"finish_reason":"stop"}]}'],
    "empty-choices": ['{"id":"g","choices":[]}'],
    "null-choices": ['{"model":"m","choices":null}'],
    "no-choices": ['{"model":"m"}', "{}"],
    "second-choice-wrong": [
        '{"choices":[{"delta":{"content":"a"}},5]}',
        '{"choices":[{"delta":{"content":"b"}},{"delta":"x"}]}',
    ],
    "usage-before-a-wrong-choice": ['{"model":"m2","usage":{"prompt_tokens":1},"choices":[5]}'],
    # Error objects, and a finish_reason of "error" without one.
    "openrouter-error": [
        '{"id":"gen-1","object":"chat.completion.chunk","error":{"code":502,'
        '"message":"Provider returned error: overloaded"},"choices":[{"index":0,'
        '"delta":{"content":""},"finish_reason":"error"}]}'
    ],
    "error-only": [TEXT, '{"error":{"message":"Rate limit exceeded","code":429}}'],
    "error-code-a-string": [
        '{"error":{"message":"nope/model is not a valid model ID","code":"400"}}'
    ],
    "error-with-a-url": ['{"error":{"message":"see https://x.example/credits","code":402}}'],
    "error-not-an-object": [full(error='"overloaded"'), full(error="[1]"), full(error="null")],
    "finish-reason-error": [content('"a"', '"error"')],
    # Tool-call fragments with and without index.
    "fragments-by-index": [
        fragments('{"index":1,"id":"c2","function":{"name":"divide","arguments":""}}'),
        fragments('{"index":0,"id":"c1","function":{"name":"add","arguments":"{\\"a\\""}}'),
        fragments('{"index":1,"function":{"arguments":"{\\"a\\":1,"}}'),
        fragments(
            '{"index":0,"function":{"arguments":":1}"}}',
            '{"index":1,"function":{"arguments":"\\"b\\":0}"}}',
        ),
    ],
    "fragments-without-index": [
        fragments('{"id":"c1","function":{"name":"add","arguments":"{\\"a\\":"}}'),
        fragments('{"function":{"arguments":"1}"}}'),
        fragments('{"id":"c2","function":{"name":"add","arguments":"{}"}}'),
        fragments('{"id":"c2","function":{"arguments":""}}'),
    ],
    "id-that-changes": [
        fragments('{"index":0,"id":"c1","function":{"name":"add"}}'),
        fragments('{"index":0,"id":"c2","function":{"arguments":"{}"}}'),
    ],
    "the-same-id-twice": [
        fragments(
            '{"index":0,"id":"c1","function":{"name":"add"}}',
            '{"index":1,"id":"c1","function":{"name":"add"}}',
        )
    ],
    "no-id": [fragments('{"index":0,"function":{"name":"add","arguments":"{}"}}')],
    "call-without-a-name": [fragments('{"index":0,"id":"c1","function":{"arguments":"{}"}}')],
    "object-arguments": [full(arguments='{"a":2,"b":[3,{"c":null}],"d":"\\u00e9"}')],
    "more-calls-than-allowed": [
        fragments(*(f'{{"index":{i},"id":"c{i}","function":{{"name":"add"}}}}' for i in range(5)))
    ],
    "more-tool-bytes-than-allowed": [
        full(arguments=json.dumps("x" * 150)),
        full(arguments=json.dumps("y" * 150)),
    ],
    # Not JSON, or not an object.
    "not-json": ["<html>Bad Gateway</html>"],
    "empty": [""],
    "a-list": ["[1,2]"],
    "null": ["null"],
    "a-string": ['"hi"'],
    "a-number": ["7"],
    "cut-short": ['{"choices":[{"delta":{"content":"a'],
    "trailing-comma": ['{"choices":[],}'],
    "byte-order-mark": ["\ufeff" + TEXT],
    "control-character": [content('"a\x01b"')],
    "trailing-text": [TEXT + " x"],
    "single-quotes": ["{'choices':[]}"],
    "nested-too-deeply": ["[" * 100_000],
    "nested-deep-in-an-ignored-field": [nested(100_000)],
    "nested-deep-in-usage": [nested(100_000, "usage")],
    "many-brackets-in-text": [content(json.dumps("[{" * 300)), TEXT],
}
for _field in FIELDS:
    for _value in WRONG:
        CORPUS[f"{_field}={_value}"] = [full(**{_field: _value}), full(reason='"stop"')]


def _depth_json_refuses() -> int:
    """The least nesting `json.loads` refuses as too deep, at about the depth it is called."""
    for depth in range(1, 5000):
        try:
            json.loads(nested(depth))
        except RecursionError:
            return depth
    raise AssertionError("json.loads read 5000 levels")


# Near Python's recursion limit msgspec reads a few levels more than json.loads does.
_LIMIT = _depth_json_refuses()
for _depth in range(_LIMIT - 12, _LIMIT + 6):
    CORPUS[f"nested-{_depth}"] = [nested(_depth), nested(_depth, "usage")]

_GENERATED_ID = re.compile(r"call_[0-9a-f]{24}")


def outcome(chunks: list[str], *, typed: bool) -> list[object]:
    """What one round of these `data:` lines gives: the text of each, then the held text, the
    tool calls and the finish; or, where it stops, the error with its messages."""
    use_typed_decoder(typed)
    try:
        assembler = RoundAssembler(max_tool_calls=4, max_tool_bytes=200)
        seen: list[object] = []
        try:
            for data in chunks:
                seen.append(assembler.feed_data(data))
            seen += assembler.rest()
            seen += [
                ToolCall(_GENERATED_ID.sub("call_*", c.id), c.name, c.arguments)
                for c in assembler.tool_calls()
            ]
            seen.append(assembler.finish())
        except UpstreamError as exc:
            seen.append((exc.code, exc.message, exc.status, exc.detail))
        return seen
    finally:
        use_typed_decoder(CHUNK_DECODER is not None)


@needs_msgspec
@pytest.mark.parametrize("case", CORPUS)
def test_the_typed_decoder_and_json_loads_give_the_same_round(case: str) -> None:
    chunks = CORPUS[case]

    typed, plain = outcome(chunks, typed=True), outcome(chunks, typed=False)

    assert typed == plain


@needs_msgspec
@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(any_chunks, max_size=6), st.booleans())
def test_whatever_json_comes_both_decoders_give_the_same_round(
    chunks: list[dict[str, Any]], ascii_only: bool
) -> None:
    # allow_nan: NaN and Infinity go out as JSON's non-standard constants, as a few servers
    # send them; without ensure_ascii a lone surrogate is in the text itself, not escaped.
    lines = [json.dumps(value, ensure_ascii=ascii_only, allow_nan=True) for value in chunks]

    assert outcome(lines, typed=True) == outcome(lines, typed=False)


@pytest.fixture
def json_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The chunks that reached `json.loads`."""
    reads: list[str] = []
    plain = openai_round.json_object

    def counted(data: str) -> dict[str, Any]:
        reads.append(data)
        return plain(data)

    monkeypatch.setattr(openai_round, "json_object", counted)
    yield reads


@needs_msgspec
def test_typical_chunks_never_reach_json_loads(json_reads: list[str]) -> None:
    assembler = RoundAssembler()

    texts = [assembler.feed_data(data) for data in (TEXT, TOOL, TOOL_END, STOP, USAGE)]

    assert json_reads == []
    assert texts == [TextChunk(" token"), None, None, None, None]
    assert assembler.tool_calls() == [ToolCall("call_Xy12", "add", '{"a": 2, "b": 3}')]
    finish = assembler.finish()
    assert (finish.reason, finish.model, finish.id) == (
        "stop",
        "openai/gpt-4o-mini",
        "gen-1732000000-AbCdEf",
    )
    assert finish.usage is not None
    assert (finish.usage.prompt_tokens, finish.usage.cost) == (12, 0.0000258)


@needs_msgspec
@pytest.mark.parametrize(
    "data",
    [
        content('"a\\ud800"'),
        '{"choices":[],"usage":{"cost":NaN}}',
        f'{{"choices":[],"usage":{{"prompt_tokens":{HUGE}}}}}',
        '{"choices":{"0":{}}}',
        '{"error":{"message":"overloaded","code":502}}',
        content(json.dumps("[" * 600)),
    ],
    ids=["surrogate", "nan", "huge", "wrong-container", "error-object", "brackets"],
)
def test_what_the_typed_decoder_leaves_is_read_once_by_json_loads(
    data: str, json_reads: list[str]
) -> None:
    assembler = RoundAssembler()

    with contextlib.suppress(UpstreamError):
        assembler.feed_data(data)

    assert json_reads == [data]


def test_with_the_typed_decoder_off_every_chunk_is_read_by_json_loads(
    json_reads: list[str],
) -> None:
    use_typed_decoder(False)
    try:
        text = RoundAssembler().feed_data(TEXT)
    finally:
        use_typed_decoder(CHUNK_DECODER is not None)

    assert text == TextChunk(" token")
    assert json_reads == [TEXT]


def test_the_typed_decoder_cannot_be_asked_for_without_msgspec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openai_round, "CHUNK_DECODER", None)

    with pytest.raises(RuntimeError, match=r"streamchat\[fast\]"):
        use_typed_decoder(True)
    use_typed_decoder(False)


def test_without_msgspec_chunks_are_read_by_json_loads() -> None:
    script = (
        "import sys; sys.modules['msgspec'] = None\n"  # import msgspec now fails
        "from streamchat.providers import openai_round as r\n"
        "assert r.CHUNK_DECODER is None and r._typed is None\n"
        "a = r.RoundAssembler()\n"
        f"print(a.feed_data({TEXT!r}).text, a.model)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == " token openai/gpt-4o-mini\n"


def test_the_request_body_is_the_same_json_either_way_and_a_lone_surrogate_still_goes() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": 'héllo 😀 "quoted" \\ \n'}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
    }
    assert json.loads(openai_round.request_body(body)) == body
    odd = {"messages": [{"role": "user", "content": "a\ud800b"}]}
    assert json.loads(openai_round.request_body(odd)) == odd  # json.dumps escapes it
