"""Tool calls that wait for a person: approve, deny, time out, approve later, stop while waiting."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient, parse_events, stream
from tests.fake_upstream import FakeUpstream, text_reply, tool_reply
from tests.test_turns import Reader, join, post

Client = TestClient[Any, Any]


async def approval(reader: Reader) -> dict[str, Any]:
    while True:
        event = await reader.next()
        if event["type"] == "tool_approval_required":
            return event


async def decide(client: Client, cid: str, tool_id: str, approved: bool) -> Any:
    response = await client.post(
        f"/api/conversation/{cid}/approve", json={"toolId": tool_id, "approved": approved}
    )
    return response.status, await response.json()


async def test_an_approved_call_runs_and_the_turn_goes_on(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(approval_required="div*")
    upstream.add(tool_reply(("t1", "divide", {"a": 84, "b": 2})), text_reply("84 / 2 = 42"))
    reader = Reader(await post(client, "What is 84 / 2?", "c"))

    asked = await approval(reader)
    status, body = await decide(client, "c", "t1", True)
    rest = await reader.rest()

    assert asked["toolName"] == "divide"
    assert json.loads(asked["arguments"]) == {"a": 84, "b": 2}
    assert (status, body) == (200, {"toolId": "t1", "approved": True})
    assert [e["type"] for e in rest] == ["tool_executing", "tool_completed", "text", "completion"]
    assert rest[1]["result"] == "42"


async def test_a_denied_call_is_a_tool_error_the_model_reads(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(approval_required="divide")
    upstream.add(
        tool_reply(("t1", "divide", {"a": 1, "b": 1}), ("t2", "add", {"a": 1, "b": 1})),
        text_reply("I was not allowed to divide."),
    )
    reader = Reader(await post(client, "1/1 and 1+1", "c"))

    await approval(reader)
    await decide(client, "c", "t1", False)
    rest = await reader.rest()

    errors = [e for e in rest if e["type"] == "tool_error"]
    assert [(e["toolId"], e["error"]) for e in errors] == [("t1", "Denied by the user.")]
    executing = [e["toolId"] for e in rest if e["type"] == "tool_executing"]
    assert executing == ["t2"]  # the call that needed no approval ran
    tool_messages = upstream.requests[-1]["messages"][-2:]
    assert tool_messages[0] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "Error: Denied by the user.",
    }
    assert rest[-1]["type"] == "completion"


async def test_an_unanswered_call_is_denied_after_the_timeout(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(approval_required="divide", approval_timeout_seconds=0.5)
    upstream.add(tool_reply(("t1", "divide", {"a": 1, "b": 1})), text_reply("No answer came."))

    reply = await stream(client, "1/1", conversationId="c")

    assert reply.types[0] == "tool_approval_required"
    assert reply.of("tool_error")[0]["error"] == "Denied by the user."
    assert reply.types[-1] == "completion"


async def test_approval_from_another_connection_after_the_first_left(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(approval_required="divide", resume_grace_seconds=0.3)
    upstream.add(tool_reply(("t1", "divide", {"a": 9, "b": 3})), text_reply("9 / 3 = 3"))
    first = Reader(await post(client, "9/3", "c"))
    asked = await approval(first)
    first.response.close()
    await asyncio.sleep(0.6)  # longer than the grace: a turn waiting for a person stays

    status, _ = await decide(client, "c", "t1", True)
    rest = parse_events(await (await join(client, "c", **{"Last-Event-ID": first.ids[-1]})).read())

    assert asked["toolId"] == "t1"
    assert status == 200
    assert [e["type"] for e in rest][-3:] == ["tool_completed", "text", "completion"]
    assert rest[-1]["finishReason"] == "stop"


async def test_a_stop_while_waiting_leaves_a_valid_history(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(approval_required="divide")
    upstream.add(tool_reply(("t1", "divide", {"a": 1, "b": 1}), text="Let me divide. "))
    reader = Reader(await post(client, "1/1", "c"))
    await approval(reader)

    stopped = await (await client.post("/api/conversation/c/stop")).json()
    rest = await reader.rest()
    stored = await (await client.get("/api/conversation/c")).json()

    assert stopped == {"stopped": True, "turn": 1}
    assert rest[-1]["finishReason"] == "cancelled"
    assert all("tool_calls" not in m for m in stored["messages"])  # the round never completed
    assert stored["messages"][-1] == {"role": "assistant", "content": "Let me divide. "}
    late = await decide(client, "c", "t1", True)
    assert late[0] == 404


async def test_bad_approvals_are_clear_errors(client: Client, upstream: FakeUpstream) -> None:
    upstream.add(text_reply("hi"))
    await stream(client, "hello", conversationId="c")

    unknown_call = await client.post(
        "/api/conversation/c/approve", json={"toolId": "nope", "approved": True}
    )
    not_boolean = await client.post(
        "/api/conversation/c/approve", json={"toolId": "t1", "approved": "yes"}
    )
    unknown_conversation = await client.post(
        "/api/conversation/other/approve", json={"toolId": "t1", "approved": True}
    )

    assert unknown_call.status == 404
    assert not_boolean.status == 400
    assert (await not_boolean.json())["error"]["param"] == "approved"
    assert unknown_conversation.status == 404
