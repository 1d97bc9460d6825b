"""GET /metrics: what a scrape shows after text turns, tool turns, 429s, stops and resumes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from streamchat import metrics
from streamchat.settings import Settings
from tests.conftest import ROOT, MakeClient, stream
from tests.fake_upstream import USAGE, FakeUpstream, HttpError, paced, text_reply, tool_reply

Client = TestClient[Any, Any]
MODEL = Settings().default_model


class Scrape:
    """One parsed exposition: `value(name, **labels)` is the sample, 0 when absent."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(client: Client, **headers: str) -> Scrape:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    return Scrape(await response.text())


async def test_a_text_turn_moves_the_turn_counters_histograms_tokens_and_cost(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("Hel", "lo"))
    before = await scrape(client)

    reply = await stream(client, "hi")
    after = await scrape(client)

    assert reply.types[-1] == "completion"
    assert before.value("streamchat_turns_started_total") == 0
    assert after.value("streamchat_turns_started_total") == 1
    assert after.value("streamchat_turns_finished_total", outcome="completed") == 1
    assert after.value("streamchat_time_to_first_token_seconds_count") == 1
    assert after.value("streamchat_turn_duration_seconds_count") == 1
    assert 0 < after.value("streamchat_turn_duration_seconds_sum") < 30
    assert after.value("streamchat_tokens_total", model=MODEL, kind="prompt") == 10
    assert after.value("streamchat_tokens_total", model=MODEL, kind="completion") == 5
    assert after.value("streamchat_cost_dollars_total", model=MODEL) == USAGE["cost"]
    assert after.value("streamchat_upstream_requests_total", status="200") == 1
    assert after.value("streamchat_upstream_retries_total") == 0
    for operation in ("ping", "begin_turn", "end_turn"):
        count = after.value("streamchat_store_operation_seconds_count", operation=operation)
        assert count == 1, operation
    # Nothing is left open once the turn has ended.
    assert after.value("streamchat_open_streams") == 0
    assert after.value("streamchat_stream_readers") == 0
    assert after.value("streamchat_turns_in_flight") == 0


async def test_a_tool_turn_counts_the_call_by_tool_and_outcome_and_times_it(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(
        tool_reply(
            ("call_1", "multiply", {"a": 6, "b": 7}), ("call_2", "divide", {"a": 1, "b": 0})
        ),
        text_reply("42"),
    )

    reply = await stream(client, "6 times 7, and 1/0")
    after = await scrape(client)

    assert reply.types[-1] == "completion"
    calls = "streamchat_tool_calls_total"
    assert after.value(calls, tool="multiply", outcome="completed") == 1
    assert after.value(calls, tool="divide", outcome="error") == 1
    assert after.value("streamchat_tool_duration_seconds_count", tool="multiply") == 1
    assert after.value("streamchat_upstream_requests_total", status="200") == 2
    # Two rounds' usage, summed for the turn.
    assert after.value("streamchat_tokens_total", model=MODEL, kind="prompt") == 20
    assert after.value("streamchat_store_operation_seconds_count", operation="append") == 1


async def test_a_tool_name_the_model_made_up_is_counted_as_unknown(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "teleport", {"to": "Mars"})), text_reply("no"))

    await stream(client, "go")
    after = await scrape(client)

    assert after.value("streamchat_tool_calls_total", tool="unknown", outcome="error") == 1
    assert not any("teleport" in str(key) for key in after.samples)


async def test_models_past_the_cap_are_counted_as_other(
    client: Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upstream here answers whatever model is named, as some OpenAI-compatible servers do:
    # without the cap, each made-up name would be series of its own in every scrape.
    monkeypatch.setattr(metrics, "MAX_MODEL_LABELS", 2)
    for name in ("m/one", "m/two", "m/three", "m/four", "m/one"):
        upstream.add(text_reply("ok"))
        await stream(client, "go", model=name)
    after = await scrape(client)

    prompt = USAGE["prompt_tokens"]
    assert after.value("streamchat_tokens_total", model="m/one", kind="prompt") == 2 * prompt
    assert after.value("streamchat_tokens_total", model="m/two", kind="prompt") == prompt
    assert after.value("streamchat_tokens_total", model="other", kind="prompt") == 2 * prompt
    assert not any("m/three" in str(key) or "m/four" in str(key) for key in after.samples)


async def test_an_upstream_429_is_counted_with_its_retry_and_a_final_one_as_the_turn_error(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    client = await make_client(upstream_max_retries=1)
    busy = HttpError(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    upstream.add(busy, text_reply("fine"), busy, busy)

    first = await stream(client, "one")
    second = await stream(client, "two")
    after = await scrape(client)

    assert first.types[-1] == "completion"
    assert second.of("error")[0]["code"] == "rate_limited"
    assert after.value("streamchat_upstream_requests_total", status="429") == 3
    assert after.value("streamchat_upstream_requests_total", status="200") == 1
    assert after.value("streamchat_upstream_retries_total") == 2
    assert after.value("streamchat_turns_finished_total", outcome="completed") == 1
    assert after.value("streamchat_turns_finished_total", outcome="error:rate_limited") == 1
    # The failed turn never produced an event before its error: no first-token observation.
    assert after.value("streamchat_time_to_first_token_seconds_count") == 1


async def test_an_unreachable_upstream_is_counted_as_error(make_client: MakeClient) -> None:
    client = await make_client(openrouter_base_url="http://127.0.0.1:9/api/v1")

    reply = await stream(client, "anyone?")
    after = await scrape(client)

    assert reply.of("error")[0]["code"] == "upstream_unreachable"
    assert after.value("streamchat_upstream_requests_total", status="error") == 1
    assert after.value("streamchat_turns_finished_total", outcome="error:upstream_unreachable") == 1


async def test_streams_readers_and_turns_are_gauged_while_a_turn_runs_then_a_stop_counts(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(200)]), 0.02))
    response = await client.post("/api/stream", json={"message": "go", "conversationId": "c"})
    await response.content.readany()  # the turn is running
    joined = await client.get("/api/conversation/c/stream")
    await joined.content.readany()

    during = await scrape(client)
    stop = await client.post("/api/conversation/c/stop")
    await response.read()
    await joined.read()
    after = await scrape(client)

    assert (await stop.json())["stopped"] is True
    assert during.value("streamchat_open_streams") == 2
    assert during.value("streamchat_stream_readers") == 2
    assert during.value("streamchat_turns_in_flight") == 1
    assert after.value("streamchat_stops_total") == 1
    assert after.value("streamchat_joins_total") == 1
    assert after.value("streamchat_turns_finished_total", outcome="cancelled") == 1
    assert after.value("streamchat_open_streams") == 0


async def test_a_resume_after_last_event_id_is_counted(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(text_reply("a", "b"))
    await stream(client, "hi", conversationId="c")

    resumed = await client.get("/api/conversation/c/stream", headers={"Last-Event-ID": "1:0"})
    await resumed.read()
    useChat = await client.get("/api/chat/c/stream")
    after = await scrape(client)

    assert resumed.status == 200
    assert useChat.status == 204
    assert after.value("streamchat_resumes_total") == 2
    assert after.value("streamchat_joins_total") == 0


async def test_metrics_token_is_needed_when_set(make_client: MakeClient) -> None:
    client = await make_client(
        metrics_token="s3cret-scrape", auth="keys", api_keys="me:k-0123456789abcdef"
    )

    missing = await client.get("/metrics")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    api_key = await client.get("/metrics", headers={"Authorization": "Bearer k-0123456789abcdef"})
    right = await scrape(client, Authorization="Bearer s3cret-scrape")

    assert [r.status for r in (missing, wrong, api_key)] == [401, 401, 401]
    assert (await missing.json())["error"]["code"] == "unauthorized"
    assert "streamchat_turns_started_total" in right.names()


async def test_metrics_are_public_to_the_api_auth_without_a_token_and_gone_when_off(
    make_client: MakeClient,
) -> None:
    guarded_api = await make_client(auth="keys", api_keys="me:k-0123456789abcdef")
    off = await make_client(metrics=False)

    assert (await guarded_api.get("/metrics")).status == 200
    assert (await guarded_api.get("/api/conversations")).status == 401
    assert (await off.get("/metrics")).status == 404


async def test_each_app_has_its_own_registry(
    make_client: MakeClient, upstream: FakeUpstream
) -> None:
    one, other = await make_client(), await make_client()
    upstream.add(text_reply("x"))

    await stream(one, "hi")

    assert (await scrape(one)).value("streamchat_turns_started_total") == 1
    assert (await scrape(other)).value("streamchat_turns_started_total") == 0


async def test_process_metrics_are_exposed_too(client: Client) -> None:
    names = (await scrape(client)).names()

    assert "process_resident_memory_bytes" in names or "python_gc_objects_collected_total" in names


async def test_the_grafana_dashboard_is_json_whose_queries_name_metrics_the_server_has(
    client: Client, upstream: FakeUpstream
) -> None:
    upstream.add(tool_reply(("call_1", "multiply", {"a": 6, "b": 7})), text_reply("42"))
    await stream(client, "6 times 7?")
    exposed = (await scrape(client)).names()
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())

    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for expr in exprs for name in re.findall(r"\bstreamchat_[a-z_]+", expr)}

    assert dashboard["title"] == "streamchat" and dashboard["uid"]
    assert all(panel["gridPos"]["w"] <= 24 for panel in dashboard["panels"])
    assert len(named) >= 12
    assert named <= exposed, named - exposed


def test_metrics_is_on_unless_set_to_0() -> None:
    assert Settings.from_env({}).metrics is True
    assert Settings.from_env({"METRICS": "0"}).metrics is False
    assert Settings.from_env({"METRICS": "off"}).metrics is False
    assert "s3cret" not in repr(Settings(metrics_token="s3cret"))
