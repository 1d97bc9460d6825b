"""The scenarios of the benchmark: one trial each, against one server, returning its figures.

A trial drives load with `loadclient.Load`, reads the server's CPU and memory from /proc, and asks
the fake upstream (its control routes) what it saw. `Plan` says how long and how often; `run.py`
decides the order and repeats.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loadclient import Load, Target, Trace
from procs import (
    BENCH,
    VENV_PY,
    RedisServer,
    Server,
    Upstream,
    cpu_seconds,
    fd_limit,
    main_thread_cpu_seconds,
    open_fds,
    own_cpu_seconds,
    pinned,
    rss_kib,
)
from redisproxy import CountingProxy


@dataclass(frozen=True)
class Plan:
    """How long and how often: the full run, or --quick."""

    reps: int = 3
    tp_clients: int = 32
    tp_tokens: int = 500
    tp_warmup: float = 1.5
    tp_seconds: float = 6.0
    lat_pace_ms: float = 20.0
    lat1_tokens: int = 25
    lat1_seconds: float = 5.0
    lat200_clients: int = 200
    lat200_tokens: int = 100
    lat200_seconds: float = 5.0
    lat_reps: int = 3
    scale_streams: int = 1000
    scale_pace_ms: float = 1000.0
    scale_deadline: float = 30.0
    scale_reps: int = 2
    feature_reps: int = 3
    abort_clients: int = 40
    abort_reps: int = 2
    resume_clients: int = 200
    resume_tokens: int = 100
    resume_rounds: int = 3  # drops and reconnects per client and trial
    resume_reps: int = 3
    profile_seconds: float = 20.0
    rt_turns: int = 40  # unpaced turns per kind of turn, for Redis round trips per turn
    rt_clients: int = 4
    rt_paced_turns: int = 8  # paced 500-token turns (one upstream read per token), all at once
    nginx_reps: int = 3
    tool_tokens: int = 50  # the answer after a tool turn's tool round
    scale10k_streams: int = 10_000
    scale10k_rate: float = 250.0  # new streams a second while they open
    scale10k_pace_ms: float = 10_000.0  # 1,000 tokens a second in all, as in scenario 3
    scale10k_deadline: float = 30.0  # after the last one opened, for every first token
    scale10k_hold: float = 20.0  # all of them open, after the last first token
    scale10k_reps: int = 1
    health_interval_ms: float = 100.0
    shared_seconds: float = 6.0  # scenario 12's window, after its warm-up (tp_warmup, or a reply)
    shared_reps: int = 3


QUICK = Plan(
    reps=1,
    tp_warmup=0.5,
    tp_seconds=2.0,
    lat1_seconds=1.5,
    lat200_tokens=50,
    lat200_seconds=2.0,
    lat_reps=1,
    scale_streams=300,
    scale_deadline=10.0,
    scale_reps=1,
    feature_reps=1,
    abort_clients=10,
    abort_reps=1,
    resume_rounds=1,
    resume_reps=1,
    profile_seconds=3.0,
    rt_turns=8,
    rt_paced_turns=4,
    nginx_reps=1,
    scale10k_streams=1000,
    scale10k_deadline=10.0,
    scale10k_hold=5.0,
    shared_seconds=2.0,
    shared_reps=1,
)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _gather_bounded(tasks: list[asyncio.Task[Any]], limit_s: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- scenario 1 (and 4): throughput ---------------------------------------------------------


async def _back_to_back(load: Load, start_delay: float, max_streams: int) -> None:
    await asyncio.sleep(start_delay)
    conn = None
    for _ in range(max_streams):  # bounded; the trial stops it earlier by closing every socket
        if load.stopped:
            return
        try:
            if conn is None or conn.closed:
                conn = await load.connect()
            await conn.send(load.target.request(load.tag()))
        except (OSError, TimeoutError) as exc:
            if not load.stopped:
                load.errors[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)


async def throughput_trial(
    target: Target,
    pid: int,
    upstream: Upstream,
    plan: Plan,
    clients: int | None = None,
    side_pids: tuple[int, ...] = (),
    more_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """`pid` (and `more_pids`) serve; `side_pids` (Redis, nginx) share the load core: their CPU
    is reported apart and counted in the core-1 load."""
    load = Load(target)
    servers = (pid, *more_pids)
    workers = [
        asyncio.create_task(_back_to_back(load, i * 0.005, 1_000_000))
        for i in range(clients or plan.tp_clients)
    ]

    def readings() -> tuple[int, int, int, list[float], float, float, float, int, float]:
        """Frames, streams and errors so far; CPU seconds of each server process, of the
        side processes, the upstream and this process; the replies the upstream served; the
        time."""
        return (
            load.frames,
            load.streams,
            sum(load.errors.values()),
            [cpu_seconds(p) for p in servers],
            sum(cpu_seconds(p) for p in side_pids),
            cpu_seconds(upstream.pid),
            own_cpu_seconds(),
            upstream.stats()["completed"],
            time.monotonic(),
        )

    await asyncio.sleep(plan.tp_warmup)
    f0, s0, e0, c0, d0, u0, l0, r0, t0 = readings()
    w0 = time.time_ns()
    await asyncio.sleep(plan.tp_seconds)
    w1 = time.time_ns()
    f1, s1, e1, c1, d1, u1, l1, r1, t1 = readings()
    load.close_all()
    await _gather_bounded(workers, 5.0)
    wall, events = t1 - t0, f1 - f0
    each = [b - a for a, b in zip(c0, c1, strict=True)]
    cpu, side = sum(each), d1 - d0
    result: dict[str, Any] = {
        "events_per_s": events / wall,
        "streams_per_s": (s1 - s0) / wall,
        # Every stream that finished well, warm-up included: what one reply is on the wire.
        "frames_per_stream": load.stream_frames / load.streams if load.streams else None,
        "upstream_replies_per_s": (r1 - r0) / wall,
        "cpu_ms_per_1k": cpu * 1000 / (events / 1000) if events else None,
        "server_cpu_util": cpu / wall,
        "core1_util": ((u1 - u0) + (l1 - l0) + side) / wall,
        "errors": e1 - e0,
        "error_kinds": dict(load.errors),
        # The window on the wall clock, and the streams that finished in it: what a traced
        # server's spans are matched against (their end times are wall-clock).
        "window_ns": [w0, w1],
        "streams": s1 - s0,
    }
    if more_pids:
        result["server_cpu_utils"] = [c / wall for c in each]
    if side_pids:
        result["side_cpu_ms_per_1k"] = side * 1000 / (events / 1000) if events else None
        result["side_cpu_util"] = side / wall
    return result


# --- scenario 2: added latency ---------------------------------------------------------------


async def latency_trial(
    target: Target,
    upstream: Upstream,
    plan: Plan,
    clients: int,
    tokens: int,
    seconds: float,
    pid: int | None = None,
) -> dict[str, Any]:
    """Time to first byte and token delay over `seconds` of steady state, and (given the
    server's `pid`) the share of a core the server used meanwhile: at 200 paced streams how
    close it runs to its core's limit is what its tails follow."""
    upstream.configure(mode="text", tokens=tokens, pace_ms=plan.lat_pace_ms, stamp=True)
    # A server that keeps a turn going after its client left (streamchat's resume grace) may
    # still be finishing the previous trial's streams: wait for them, they would load core 1.
    await _quiet(upstream)
    load = Load(target, stamp=True)
    stream_s = tokens * plan.lat_pace_ms / 1000
    stagger = stream_s if clients > 1 else 0.0
    workers = [
        asyncio.create_task(_back_to_back(load, random.uniform(0, stagger), 100_000))
        for _ in range(clients)
    ]
    await asyncio.sleep(stagger + 0.5)  # every client is streaming: steady state
    load.window_start, load.recording = time.monotonic_ns(), True
    errors0 = sum(load.errors.values())
    cpu0 = cpu_seconds(pid) if pid is not None else 0.0
    await asyncio.sleep(seconds)
    load.recording = False
    wall = (time.monotonic_ns() - load.window_start) / 1e9
    cpu = cpu_seconds(pid) - cpu0 if pid is not None else None
    errors = sum(load.errors.values()) - errors0
    load.close_all()
    await _gather_bounded(workers, 5.0)
    upstream.configure(stamp=False, pace_ms=0)
    ttfb = [v / 1e6 for v in load.ttfb_ns]
    delay = [v / 1e6 for v in load.delay_ns]
    return {
        "ttfb_p50": pct(ttfb, 50),
        "ttfb_p99": pct(ttfb, 99),
        "delay_p50": pct(delay, 50),
        "delay_p99": pct(delay, 99),
        "ttfb_samples": len(ttfb),
        "delay_samples": len(delay),
        "errors": errors,
        "server_cpu_util": None if cpu is None else cpu / wall,
    }


async def _latency_of(
    upstream: Upstream, plan: Plan, clients: int, tokens: int, seconds: float, server: Server
) -> dict[str, Any]:
    pid = server.pid if server.proc is not None else None  # none for the upstream itself
    return await latency_trial(server.target, upstream, plan, clients, tokens, seconds, pid)


# --- scenario 3: 1,000 open streams ----------------------------------------------------------


async def _open_stream(load: Load, gate: asyncio.Semaphore) -> tuple[Any, Any] | None:
    async with gate:
        try:
            conn = await load.connect()
        except (OSError, TimeoutError) as exc:
            load.errors[f"connect: {type(exc).__name__}"] += 1
            return None
        done = conn.send(load.target.request(load.tag()))
        return conn, done


async def _fresh(server: Server, upstream: Upstream, core: str | None) -> None:
    """Restart the server (memory freed by earlier trials would hide growth), then warm it up
    with a few short turns."""
    server.restart(core)
    upstream.configure(mode="text", tokens=3, pace_ms=0, stamp=False)
    warm = Load(server.target)
    for _ in range(3):
        conn = await warm.connect()
        await asyncio.wait_for(conn.send(server.target.request(warm.tag())), 20)
    warm.close_all()
    await asyncio.sleep(1.0)


async def scale_trial(
    server: Server, upstream: Upstream, plan: Plan, core: str | None
) -> dict[str, Any]:
    await _fresh(server, upstream, core)
    base = rss_kib(server.pid)
    tokens = int(plan.scale_deadline * 1000 / plan.scale_pace_ms) + 60
    upstream.configure(mode="text", tokens=tokens, pace_ms=plan.scale_pace_ms, stamp=False)
    await _quiet(upstream)
    load = Load(server.target)
    gate = asyncio.Semaphore(100)
    started = time.monotonic()
    opened = await asyncio.gather(*(_open_stream(load, gate) for _ in range(plan.scale_streams)))
    conns = [o for o in opened if o is not None]
    firsts = [c.first for c, _ in conns if c.first is not None]
    remaining = max(0.1, plan.scale_deadline - (time.monotonic() - started))
    await asyncio.wait(firsts, timeout=remaining)
    ramp = time.monotonic() - started
    streaming = sum(1 for f in firsts if f.done() and f.result() > 0)
    await asyncio.sleep(1.5)  # every open stream has had a token since: steady state
    peak = rss_kib(server.pid)
    open_now = sum(1 for c, d in conns if not c.closed and not d.done())
    at_upstream = upstream.stats()["active"]
    failed = sum(1 for _, d in conns if d.done() and d.result().error is not None)
    errors = plan.scale_streams - streaming
    closed_at = time.monotonic_ns()
    load.close_all()
    aborts = _ours(await _wait_aborts(upstream, 5.0), load)
    delays = [(a["at_ns"] - closed_at) / 1e6 for a in aborts if a["at_ns"] >= closed_at]
    still_open = upstream.stats()["active"]
    keeps_turns = server.keeps_turns
    if keeps_turns:
        # Its turns go on for the resume grace, by design: end them with the process, so they
        # do not run on beside the next trial (the next scale trial restarts it anyway).
        server.restart(core)
    return {
        "streams": plan.scale_streams,
        "streaming": streaming,
        "errors": errors,
        "failed_replies": failed,
        "error_kinds": dict(load.errors),
        "ramp_s": ramp,
        "rss_base_kib": base,
        "rss_open_kib": peak,
        "open": open_now,
        "kib_per_stream": (peak - base) / open_now if open_now else None,
        "upstream_open": at_upstream,
        "upstream_aborted": len(delays),
        "upstream_aborted_1s": sum(1 for d in delays if d <= 1000),
        "upstream_still_open": still_open,
        "abort_p50_ms": pct(delays, 50),
        "abort_max_ms": max(delays) if delays else None,
        "keeps_turns": keeps_turns,
    }


async def _quiet(upstream: Upstream, limit_s: float = 15.0) -> None:
    """Wait for streams a slow server left open upstream, so they do not count in this trial."""
    for _ in range(int(limit_s / 0.2)):
        if upstream.stats()["active"] == 0:
            break
        await asyncio.sleep(0.2)
    upstream.reset()


def _ours(aborts: list[dict[str, Any]], load: Load) -> list[dict[str, Any]]:
    return [a for a in aborts if a["tag"] is not None and load.owns(a["tag"])]


async def _wait_aborts(upstream: Upstream, limit_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit_s
    stats = upstream.stats()
    while time.monotonic() < deadline and stats["active"] > 0:
        await asyncio.sleep(0.1)
        stats = upstream.stats()
    aborts: list[dict[str, Any]] = stats["aborts"]
    return aborts


# --- scenario 5: clients that leave ----------------------------------------------------------


async def _leave_midway(load: Load, delay: float, frames: int, closes: dict[int, int]) -> None:
    await asyncio.sleep(delay)
    conn = await load.connect()
    tag = load.tag()
    conn.send(load.target.request(tag))
    await asyncio.wait_for(conn.wait_frames(frames), 15)
    closes[tag] = time.monotonic_ns()
    conn.close()


async def abort_trial(target: Target, upstream: Upstream, plan: Plan) -> dict[str, Any]:
    upstream.configure(mode="text", tokens=500, pace_ms=20, stamp=False)
    await _quiet(upstream)
    load = Load(target)
    closes: dict[int, int] = {}
    n = plan.abort_clients
    tasks = [
        asyncio.create_task(_leave_midway(load, i * 0.02, random.randint(5, 30), closes))
        for i in range(n)
    ]
    await _gather_bounded(tasks, 30.0)
    failed = sum(1 for t in tasks if t.cancelled() or t.exception() is not None)
    aborts = _ours(await _wait_aborts(upstream, 3.0), load)
    seen = {a["tag"]: a["at_ns"] for a in aborts}
    delays = [(seen[tag] - at) / 1e6 for tag, at in closes.items() if tag in seen]
    stats = upstream.stats()
    load.close_all()
    return {
        "clients": n,
        "left": len(closes),
        "client_failures": failed,
        "upstream_aborted": len(delays),
        "within_1s": sum(1 for d in delays if d <= 1000),
        "p50_ms": pct(delays, 50),
        "p99_ms": pct(delays, 99),
        "max_ms": max(delays) if delays else None,
        "upstream_completed": stats["completed"],
        "upstream_still_open": stats["active"],
    }


# --- scenario 6: drop and resume (streamchat only) ---------------------------------------------


@dataclass
class _Resumes:
    """What the clients of one resume trial saw."""

    ms: list[float] = field(default_factory=list)  # reconnect request sent -> first event read
    events: int = 0
    lost: int = 0
    repeated: int = 0
    unterminated: int = 0
    failures: Counter[str] = field(default_factory=Counter)


async def _drop_and_resume(load: Load, plan: Plan, delay: float, seen: _Resumes) -> None:
    """Start a turn, read a few events, drop the connection, resume after the last id read."""
    await asyncio.sleep(delay)
    for _ in range(plan.resume_rounds):
        if load.stopped:
            return
        tag = load.tag()
        conversation_id = f"bench-resume-{tag}"
        try:
            first = await load.connect()
            first.trace = before = Trace()
            first.send(load.target.request(tag, conversation_id=conversation_id))
            await asyncio.wait_for(first.wait_frames(random.randint(3, 20)), 15)
            if not before.ids:
                seen.failures["no event before the drop"] += 1
                first.abort()
                continue
            turn, index = before.ids[-1]
            first.close()  # a FIN, as a phone losing its network or a page reload does
            # Long enough for a few events to be waiting in the log: the first one read after
            # the reconnect is a replay, not the next live token.
            await asyncio.sleep(random.uniform(0.05, 0.25))
            again = await load.connect()
            again.trace = after = Trace()
            reply = await asyncio.wait_for(
                again.send(load.target.resume(conversation_id, f"{turn}:{index}")), 30
            )
        except (OSError, TimeoutError) as exc:
            if not load.stopped:
                seen.failures[f"{type(exc).__name__}"] += 1
            continue
        again.close()
        if reply.error is not None:
            seen.failures[reply.error] += 1
            continue
        if after.t_first is not None:
            seen.ms.append((after.t_first - reply.t_sent) / 1e6)
        _account(turn, before.ids + after.ids, after.terminal, seen)


def _account(turn: int, ids: list[tuple[int, int]], terminal: int | None, seen: _Resumes) -> None:
    """Every event of the turn exactly once, the terminal one last."""
    if any(t != turn for t, _ in ids):
        seen.failures["an event of another turn"] += 1
        return
    indexes = [i for _, i in ids]
    seen.events += len(indexes)
    seen.repeated += len(indexes) - len(set(indexes))
    if terminal is None or indexes[-1] != terminal:
        seen.unterminated += 1  # its lost events cannot be counted: the last index is unknown
        return
    seen.lost += len(set(range(terminal + 1)) - set(indexes))


async def resume_trial(target: Target, upstream: Upstream, plan: Plan) -> dict[str, Any]:
    upstream.configure(
        mode="text", tokens=plan.resume_tokens, pace_ms=plan.lat_pace_ms, stamp=False
    )
    await _quiet(upstream)
    load = Load(target)
    seen = _Resumes()
    stagger = plan.resume_tokens * plan.lat_pace_ms / 1000  # starts spread over one reply
    n = plan.resume_clients
    tasks = [
        asyncio.create_task(_drop_and_resume(load, plan, random.uniform(0, stagger), seen))
        for _ in range(n)
    ]
    limit = stagger + plan.resume_rounds * (stagger + 30.0)
    await _gather_bounded(tasks, limit)
    load.close_all()
    return {
        "clients": n,
        "resumed": len(seen.ms),
        "resume_p50_ms": pct(seen.ms, 50),
        "resume_p99_ms": pct(seen.ms, 99),
        "resume_max_ms": max(seen.ms) if seen.ms else None,
        "events": seen.events,
        "lost": seen.lost,
        "repeated": seen.repeated,
        "unterminated": seen.unterminated,
        "failures": sum(seen.failures.values()),
        "failure_kinds": dict(seen.failures),
    }


# --- scenario 7: Redis round trips per turn ----------------------------------------------------

# (key, upstream mode, pace in ms): a text turn whose reply comes in one write, the same reply
# one token per upstream read, and a tool turn (a call to `add`, then the text: 2 upstream calls).
ROUND_TRIP_KINDS = (("text", "text", 0.0), ("text-paced", "text", 20.0), ("tools", "tools", 0.0))


async def _turns(load: Load, count: int) -> None:
    conn = await load.connect()
    for _ in range(count):
        if conn.closed:
            conn = await load.connect()
        await asyncio.wait_for(conn.send(load.target.request(load.tag())), 60)


def _per(counts: Counter[str] | dict[str, int], turns: int) -> dict[str, float]:
    return {name: n / turns for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n}


async def roundtrip_trial(
    target: Target,
    upstream: Upstream,
    redis: RedisServer,
    proxy: CountingProxy,
    plan: Plan,
    kind: str,
) -> dict[str, Any]:
    """Turns of one kind through the counting relay: round trips and commands per turn.

    A round of unpaced turns at the same concurrency first, not counted: the process's Redis
    connections are then open (a new connection's handshake is not a turn's cost) and its
    scripts loaded. What it sends while idle is read over a second before, and reported.
    """
    mode, pace = next((m, p) for k, m, p in ROUND_TRIP_KINDS if k == kind)
    turns = plan.rt_paced_turns if pace else plan.rt_turns
    clients = turns if pace else min(plan.rt_clients, turns)  # paced ones all at once
    upstream.configure(mode=mode, tokens=plan.tp_tokens, pace_ms=0, stamp=False)
    await _quiet(upstream)
    warm = Load(target)
    await asyncio.gather(*(_turns(warm, 1) for _ in range(clients)))
    warm.close_all()
    upstream.configure(pace_ms=pace)
    await asyncio.sleep(0.5)
    idle0 = proxy.counts.copy()
    await asyncio.sleep(1.0)
    idle = proxy.counts.copy().minus(idle0).round_trips
    before, stats0 = proxy.counts.copy(), redis.commandstats()
    load = Load(target)
    await asyncio.gather(*(_turns(load, turns // clients) for _ in range(clients)))
    # A turn's last writes (the final batch of its log, the lease's release) may come just
    # after the client read the terminal event.
    await asyncio.sleep(0.5)
    sent, stats1 = proxy.counts.copy().minus(before), redis.commandstats()
    load.close_all()
    done = load.streams
    if not done:
        return {"failed": f"no turn finished: {dict(load.errors)}"}
    ran = Counter(stats1)
    ran.subtract(stats0)
    ran.pop("info", None)  # the harness's own readings
    return {
        "turns": done,
        "errors": sum(load.errors.values()),
        "tokens": plan.tp_tokens,
        "pace_ms": pace,
        "round_trips_per_turn": sent.round_trips / done,
        "commands_per_turn": sum(sent.commands.values()) / done,
        "redis_commands_per_turn": sum(v for v in ran.values() if v > 0) / done,
        "connections_opened": sent.connections,
        "idle_round_trips_per_s": float(idle),
        "commands": _per(sent.commands, done),
        "redis_commands": _per(+ran, done),
    }


# --- scenario 9: the four protocols on one server --------------------------------------------

# (key, path, the load client's request style): one streamchat, each protocol's request.
# `openai-kept` is the OpenAI request with `X-Conversation-Id`: without it streamchat keeps
# nothing (the request's `messages` are the whole history), with it the turn is stored as every
# other protocol's is, so that row does the same work as the others.
PROTOCOLS = (
    ("native", "/api/stream", "streamchat"),
    ("ai-sdk", "/api/chat", "aisdk"),
    ("openai", "/v1/chat/completions", "openai"),
    ("openai-kept", "/v1/chat/completions", "openai-kept"),
    ("ag-ui", "/api/agui", "agui"),
)


async def protocol_trial(
    server: Server, protocol: str, upstream: Upstream, plan: Plan
) -> dict[str, Any]:
    """Scenario 1's load on `server`, asked in one protocol, in upstream tokens.

    Each protocol writes its own frames around the same tokens (the AI SDK's `text-delta` is
    one frame per token plus its start and end parts; OpenAI's chunk; AG-UI's
    `TEXT_MESSAGE_CONTENT`), so frames per second do not compare. Tokens delivered per second
    do: frames per second times the upstream's tokens per reply over the frames of one whole
    reply (both measured here). The upstream's own count (replies served times tokens) is kept
    beside it as a check.
    """
    _, path, style = next(p for p in PROTOCOLS if p[0] == protocol)
    target = Target(f"{server.name} {protocol}", server.port, path, style, server.headers)
    result = await throughput_trial(target, server.pid, upstream, plan, side_pids=server.side_pids)
    frames = result["frames_per_stream"]
    tokens_per_s = result["events_per_s"] * plan.tp_tokens / frames if frames else None
    return {  # the figures of this scenario first, as the run's log shows the first few
        "protocol": protocol,
        "tokens_per_s": tokens_per_s,
        "cpu_ms_per_1k_tokens": (
            result["server_cpu_util"] * 1e6 / tokens_per_s if tokens_per_s else None
        ),
        "errors": result["errors"],
        "frames_per_stream": frames,
        "upstream_tokens_per_s": result["upstream_replies_per_s"] * plan.tp_tokens,
        **result,
    }


# --- scenario 10: tool turns -------------------------------------------------------------------


async def tool_turn_trial(server: Server, upstream: Upstream, plan: Plan) -> dict[str, Any]:
    """Scenario 1's load where every turn is a tool turn, in turns.

    The upstream (in `tools` mode, configured by the caller) answers a request whose last message
    is the user's with a call to `add`, and the one carrying the tool's result with
    `plan.tool_tokens` tokens: a turn is one stream, two upstream requests. *Upstream requests
    per turn* (the replies the upstream finished over the turns the clients finished, in the
    same window) checks that the server's tool loop ran: 2.
    """
    result = await throughput_trial(
        server.target, server.pid, upstream, plan, side_pids=server.side_pids
    )
    turns = result["streams_per_s"]
    return {  # the figures of this scenario first, as the run's log shows the first few
        "turns_per_s": turns,
        "cpu_ms_per_turn": result["server_cpu_util"] * 1000 / turns if turns else None,
        "upstream_requests_per_turn": (result["upstream_replies_per_s"] / turns if turns else None),
        **result,
    }


# --- scenario 11: 10,000 open streams ------------------------------------------------------------

HEALTH_MS = 50.0  # the target: every /health probe answered within this, throughout
FD_SPARE = 64  # descriptors left beside the streams: health probes, the store's files, logs
STREAM_GATE = 100  # connects in flight at once while the streams open


def _fd_room(server_pid: int, upstream_pid: int) -> tuple[int | None, str]:
    """How many more streams the open-file limits allow, and which limit is the tightest.

    A proxying server holds two sockets a stream (its client's and its upstream request's), the
    upstream and the load client one each. A limit reached mid-ramp would make the last
    streams fail for the machine's sake (and pause the server's accepts), not the server's.
    """
    rooms: list[tuple[int, str]] = []
    for who, pid, per in (("the server", server_pid, 2), ("the upstream", upstream_pid, 1)):
        limit = fd_limit(pid)
        if limit is not None:
            room = (limit - open_fds(pid) - FD_SPARE) // per
            rooms.append((room, f"{who}'s open-file limit ({limit:,}, {per} a stream)"))
    own = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if own != resource.RLIM_INFINITY:
        room = own - len(os.listdir("/proc/self/fd")) - FD_SPARE
        rooms.append((room, f"the load client's open-file limit ({own:,}, 1 a stream)"))
    if not rooms:
        return None, ""
    return min(rooms)


async def _ramp(
    load: Load, count: int, rate: float, gate: asyncio.Semaphore
) -> list[tuple[Any, Any] | None]:
    """Open `count` streams, `rate` new ones a second (0: as fast as the gate lets them)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        if rate > 0:
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_open_stream(load, gate)))
    return list(await asyncio.gather(*tasks))


def _probe_figures(probes: list[list[Any]]) -> dict[str, Any]:
    ms = [p[1] for p in probes if p[1] is not None]
    connects = [p[3] for p in probes if p[3] is not None]
    return {
        "probes": len(probes),
        "failed": sum(1 for p in probes if p[2] is not None),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms) if ms else None,
        "slow": sum(1 for v in ms if v >= HEALTH_MS),
        "connect_max_ms": max(connects) if connects else None,
    }


def _health(
    probes: list[list[Any]], t_open: int, t_hold: int, t_end: int, firsts: list[int]
) -> dict[str, Any]:
    """The probes' figures over the trial (the streams opening and held), and per phase; and
    each probe as [seconds from the first stream, ms (None: failed), streams served by then]
    (`firsts`: the sorted monotonic ns of every first token), to see where it slowed."""
    phases = {
        "idle": [p for p in probes if p[0] < t_open],
        "opening": [p for p in probes if t_open <= p[0] < t_hold],
        "holding": [p for p in probes if t_hold <= p[0] <= t_end],
    }
    failures = Counter(str(p[2]) for p in probes if p[2] is not None)
    whole = _probe_figures(phases["opening"] + phases["holding"])
    return {
        **{f"health_{k}": v for k, v in whole.items()},
        "health_phases": {name: _probe_figures(found) for name, found in phases.items()},
        "health_failures": dict(failures),
        "health_timeline": [
            [
                round((p[0] - t_open) / 1e9, 2),
                None if p[1] is None else round(p[1], 1),
                bisect.bisect_right(firsts, p[0]),
            ]
            for p in probes
            if p[0] <= t_end
        ],
    }


async def _start_probe(server: Server, plan: Plan, core: str | None) -> asyncio.subprocess.Process:
    argv = [str(VENV_PY), str(BENCH / "healthprobe.py"), "--port", str(server.port)]
    argv += ["--path", server.health, "--interval-ms", str(plan.health_interval_ms)]
    return await asyncio.create_subprocess_exec(
        *pinned(argv, core),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop_probe(proc: asyncio.subprocess.Process) -> list[list[Any]]:
    out, err = await asyncio.wait_for(proc.communicate(b"stop\n"), 60)
    if proc.returncode != 0:
        raise RuntimeError(f"the health probe failed: {err.decode(errors='replace')[-300:]}")
    probes: list[list[Any]] = json.loads(out)["probes"]
    return probes


async def scale10k_trial(
    server: Server, upstream: Upstream, plan: Plan, core: str | None, load_core: str | None
) -> dict[str, Any]:
    """`plan.scale10k_streams` paced streams opened on a fresh server and held, `/health`
    probed every `plan.health_interval_ms` throughout by a process of its own.

    Fewer streams when the machine's open-file limits cannot hold them (the report says so).
    Memory as scenario 3 (VmRSS growth over the streams open, after the hold); the server's CPU
    and the tokens the clients read over the hold show whether it kept up.
    """
    await _fresh(server, upstream, core)
    base, fds_base, limit = rss_kib(server.pid), open_fds(server.pid), fd_limit(server.pid)
    wanted = streams = plan.scale10k_streams
    room, tightest = _fd_room(server.pid, upstream.pid)
    capped = None
    if room is not None and room < streams:
        streams, capped = max(0, room), tightest
    opening = streams / plan.scale10k_rate if plan.scale10k_rate > 0 else 60.0
    seconds = opening + plan.scale10k_deadline + plan.scale10k_hold + 30.0  # outlasts the trial
    tokens = int(seconds * 1000 / plan.scale10k_pace_ms) + 10
    upstream.configure(mode="text", tokens=tokens, pace_ms=plan.scale10k_pace_ms, stamp=False)
    await _quiet(upstream)
    prober = await _start_probe(server, plan, load_core)
    load = Load(server.target)
    try:
        await asyncio.sleep(1.0)  # a few probes of the idle server first
        t_open = time.monotonic_ns()
        opened = await _ramp(load, streams, plan.scale10k_rate, asyncio.Semaphore(STREAM_GATE))
        conns = [o for o in opened if o is not None]
        firsts = [c.first for c, _ in conns if c.first is not None]
        if firsts:
            await asyncio.wait(firsts, timeout=plan.scale10k_deadline)
        t_hold = time.monotonic_ns()
        first_ns = sorted(f.result() for f in firsts if f.done() and f.result() > 0)
        served = len(first_ns)
        c0, u0, p0 = (cpu_seconds(p) for p in (server.pid, upstream.pid, prober.pid))
        own0, frames0 = own_cpu_seconds(), load.frames
        peak, held = 0, 0.0
        while held < plan.scale10k_hold:  # the memory each second: its peak over the hold
            step = min(1.0, plan.scale10k_hold - held)
            await asyncio.sleep(step)
            held += step
            peak = max(peak, rss_kib(server.pid))
        t_end = time.monotonic_ns()
        c1, u1, p1 = (cpu_seconds(p) for p in (server.pid, upstream.pid, prober.pid))
        own1, frames1 = own_cpu_seconds(), load.frames
        rss_end, fds_end = rss_kib(server.pid), open_fds(server.pid)
        at_upstream = upstream.stats()["active"]
        # Read before the clients close, which ends every reply.
        kinds = Counter(load.errors)
        alive = 0
        for conn, done in conns:
            first = conn.first
            streaming = first is not None and first.done() and first.result() > 0
            if not done.done():
                if streaming:
                    alive += 1
                else:
                    kinds["no first token in time"] += 1
            elif done.result().error is None:
                kinds["reply ended before the hold did"] += 1  # else in load.errors already
        probes = await _stop_probe(prober)
    finally:
        if prober.returncode is None:
            prober.kill()
            await prober.wait()
        load.close_all()
    if server.keeps_turns:
        # Its turns go on for the resume grace, by design: end them with the process, so they
        # do not run on beside the next trial.
        server.restart(core)
    wall = (t_end - t_hold) / 1e9
    expected = alive * wall * 1000 / plan.scale10k_pace_ms
    return {
        "streams": streams,
        "served": served,
        "errors": streams - alive,
        "open": alive,
        "kib_per_stream": (rss_end - base) / alive if alive else None,
        "health_max_ms": None,  # set below; here so that the run's log shows it
        "opening_s": (t_hold - t_open) / 1e9,
        "server_cpu_util": (c1 - c0) / wall,
        "wanted": wanted,
        "capped_by": capped,
        "error_kinds": dict(kinds),
        "rss_base_kib": base,
        "rss_held_kib": rss_end,
        "rss_peak_kib": peak,
        "fds_base": fds_base,
        "fds_held": fds_end,
        "fd_limit": limit,
        "fds_per_stream": (fds_end - fds_base) / alive if alive else None,
        "hold_s": wall,
        "core1_util": ((u1 - u0) + (p1 - p0) + (own1 - own0)) / wall,
        "tokens_read": frames1 - frames0,
        "tokens_read_share": (frames1 - frames0) / expected if expected else None,
        "upstream_open": at_upstream,
        "keeps_turns": server.keeps_turns,
        **_health(probes, t_open, t_hold, t_end, first_ns),
    }


# --- scenario 12: the servers on one core at once ----------------------------------------------

# (kind, upstream mode, tokens (None: the plan's tool answer), pace in ms, clients per server).
# Unpaced turns keep the core busy, so the servers split it; the paced replies leave it room.
SHARED_KINDS: tuple[tuple[str, str, int | None, float, int], ...] = (
    ("turns", "text", 1, 0.0, 8),  # a turn with one token: what a turn costs beyond its tokens
    ("tools", "tools", None, 0.0, 8),  # a tool round, then the answer: two upstream requests
    ("tokens", "text", 1000, 20.0, 40),  # paced 1,000-token replies: what a token costs
)
# How long to wait for the turns left going: the longest reply among them (1,000 tokens at
# 20 ms), and 5 s more.
SHARED_KINDS_REPLY_S = max((t or 0) * p / 1000 for _, _, t, p, _ in SHARED_KINDS) + 5.0


async def shared_trial(
    servers: list[Server], upstream: Upstream, plan: Plan, kind: str
) -> dict[str, dict[str, Any]]:
    """Every server under the same load at the same time, all on the server core.

    Measured one after another, the same server's CPU per turn differs by 10 to 40% from one
    minute to the next on a shared machine, more than most changes being weighed. Served at
    once, the servers meet the same slow and fast moments: their CPU per turn and per event,
    taken over the same window, compare to within a few percent. (Their latencies do not: the
    kernel shares the core out, so they wait on each other.) Also each server's main thread
    alone: for streamchat, what is left after its store's thread.
    """
    mode, tokens, pace, clients = next((m, t, p, c) for k, m, t, p, c in SHARED_KINDS if k == kind)
    tokens = plan.tool_tokens if tokens is None else tokens
    upstream.configure(mode=mode, tokens=tokens, pace_ms=pace, stamp=False)
    # streamchat's turns go on after their clients leave (the resume grace): those of the
    # paced replies before would be counted in the next trial's CPU. Wait for every one.
    await _quiet(upstream, limit_s=SHARED_KINDS_REPLY_S)
    loads = {server.name: Load(server.target) for server in servers}
    stagger = tokens * pace / 1000  # paced: the starts spread over one reply
    workers = [
        asyncio.create_task(
            _back_to_back(load, random.uniform(0, stagger) if stagger else i * 0.005, 1_000_000)
        )
        for load in loads.values()
        for i in range(clients)
    ]

    def readings() -> dict[str, tuple[int, int, int, float, float, float]]:
        return {
            s.name: (
                loads[s.name].frames,
                loads[s.name].streams,
                sum(loads[s.name].errors.values()),
                cpu_seconds(s.pid),
                main_thread_cpu_seconds(s.pid),
                sum(cpu_seconds(pid) for pid in s.side_pids),
            )
            for s in servers
        }

    await asyncio.sleep(stagger + plan.tp_warmup)
    before, t0 = readings(), time.monotonic()
    await asyncio.sleep(plan.shared_seconds)
    after, wall = readings(), time.monotonic() - t0
    for load in loads.values():
        load.close_all()
    await _gather_bounded(workers, 5.0)
    upstream.configure(pace_ms=0)
    results: dict[str, dict[str, Any]] = {}
    by_name = {s.name: s for s in servers}
    for name in loads:
        (f0, s0, e0, c0, m0, d0), (f1, s1, e1, c1, m1, d1) = before[name], after[name]
        events, turns, cpu, side = f1 - f0, s1 - s0, c1 - c0, d1 - d0
        results[name] = {
            "turns_per_s": turns / wall,
            "events_per_s": events / wall,
            "cpu_us_per_turn": cpu * 1e6 / turns if turns else None,
            "cpu_us_per_event": cpu * 1e6 / events if events else None,
            "main_share": (m1 - m0) / cpu if cpu else None,
            "server_cpu_util": cpu / wall,
            "errors": e1 - e0,
        }
        if side:  # its Redis, on the load core: not in its own figures, shown beside them
            # A Redis that serves more than one of these is shared out over all their turns.
            users = [s for s in servers if s.side_pids == by_name[name].side_pids]
            all_turns = sum(after[s.name][1] - before[s.name][1] for s in users)
            all_events = sum(after[s.name][0] - before[s.name][0] for s in users)
            results[name]["side_us_per_turn"] = side * 1e6 / all_turns if all_turns else None
            results[name]["side_us_per_event"] = side * 1e6 / all_events if all_events else None
    return results
