"""The scenarios of the benchmark: one trial each, against one server, returning its figures.

A trial drives load with `loadclient.Load`, reads the server's CPU and memory from /proc, and asks
the fake upstream (its control routes) what it saw. `Plan` says how long and how often; `run.py`
decides the order and repeats.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loadclient import Load, Target, Trace
from procs import RedisServer, Server, Upstream, cpu_seconds, own_cpu_seconds, rss_kib
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
    target: Target, upstream: Upstream, plan: Plan, clients: int, tokens: int, seconds: float
) -> dict[str, Any]:
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
    await asyncio.sleep(seconds)
    load.recording = False
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
    }


async def _latency_of(
    upstream: Upstream, plan: Plan, clients: int, tokens: int, seconds: float, server: Server
) -> dict[str, Any]:
    return await latency_trial(server.target, upstream, plan, clients, tokens, seconds)


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


async def scale_trial(
    server: Server, upstream: Upstream, plan: Plan, core: str | None
) -> dict[str, Any]:
    server.restart(core)  # a fresh process: memory freed by earlier trials would hide growth
    upstream.configure(mode="text", tokens=3, pace_ms=0, stamp=False)
    warm = Load(server.target)
    for _ in range(3):
        conn = await warm.connect()
        await asyncio.wait_for(conn.send(server.target.request(warm.tag())), 20)
    warm.close_all()
    await asyncio.sleep(1.0)
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
