"""The streamchat benchmark: streamchat, the floor and its peers on one fast fake upstream.

    .venv/bin/python bench/run.py            # the full run, about 20 minutes
    .venv/bin/python bench/run.py --quick    # a few seconds per scenario, for smoke tests

The server under test runs on core 0 (`taskset -c 0`); the fake upstream (bench/upstream.py), this
load client and the profiler share core 1. Every server stays up for the whole run and the trials
alternate between them, repeated, so that a noisy moment on the machine hits every server alike;
the report quotes medians over the repeats and ratios to the floor (bench/floor.py). Scenarios:

1. throughput: 32 clients doing back-to-back 500-token streams (unpaced upstream) for a fixed
   time: events/s, and server CPU ms per 1,000 events (/proc/<pid>/stat before and after).
2. latency: upstream paced at 20 ms per token, 1 and 200 concurrent streams: time to first token
   and per-token delay (upstream write -> client read), p50 and p99, minus the same figures taken
   straight from the upstream.
3. scale: 1,000 streams open at once on a slow upstream: RSS growth per open stream (VmRSS,
   fresh server, baseline vs all open), errors, and how fast the upstream sees them all go.
4. streamchat features: tool round trip and artifact-heavy replies, CPU per event relative to
   streamchat's own plain text.
5. abort: clients that leave mid-stream: time until the upstream sees its request dropped
   (streamchat with RESUME_GRACE_SECONDS=0 here: with its default grace the turn goes on).
6. resume (streamchat only): 200 paced streams drop their connection after a few events and
   reconnect with Last-Event-ID: time to the first replayed event, and every event exactly once.
7. roundtrips (streamchat-redis): Redis round trips and commands per turn (text, paced text,
   tool), counted by a relay between a streamchat process and Redis.
8. nginx (streamchat-redis): two processes on one Redis behind nginx (README.md's configuration)
   against one process: events/s, and resumes that land on either process.
9. protocols (streamchat): scenario 1's load asked in each protocol (native, AI SDK, OpenAI,
   AG-UI) in turn: upstream tokens delivered per second and server CPU per 1,000 tokens, against
   the native dialect's.
10. tools (streamchat's servers and the floor): 32 clients doing back-to-back tool turns (a call
   to `add`, then a 50-token answer: two upstream requests a turn): turns/s and server CPU ms
   per turn, against the floor's own minimal tool loop.
11. scale10k (streamchat's servers and the floor): 10,000 paced streams opened on a fresh server
   and held, `/health` probed every 100 ms throughout by a process of its own: streams served,
   errors, RSS per stream, the probes' latency.
12. shared (streamchat's servers and the floor): all of them on the server core at once, each
   under the same load (1-token turns, tool turns, paced 1,000-token replies): CPU per turn and
   per event, and the main thread's part of it. Taken over one window, these compare to within
   a few percent where one server after another differs by 10-40%.

streamchat-redis and streamchat-prod (Redis, AUTH=keys, every limit, metrics; only when named)
run on a redis-server the harness starts on a free port (pinned with the load); they are left
out, saying why, when redis-server or redis-py is missing. streamchat-keys (only when named) is
the default configuration with AUTH=keys and every limit set. streamchat-otel (only when named)
is the default configuration sending OpenTelemetry traces to an OTLP/HTTP sink the harness starts
(bench/otlpsink.py, pinned with the load), which counts what it receives.

Then a py-spy profile of streamchat under scenario 1. Results: printed, and written to
bench/RESULTS.md (every figure in bench/out/RESULTS.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import functools
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import Load, Target
from procs import (
    BENCH,
    LOAD_CORE,
    LOGS,
    OUT,
    SERVER_CORE,
    VENV_PY,
    Nginx,
    OtlpSink,
    RedisServer,
    Server,
    Upstream,
    baseline_name,
    build_servers,
    core_probe_ms,
    cpu_seconds,
    git_state,
    nginx_path,
    otel_missing,
    readme_nginx_config,
    redis_missing,
    snapshot_commit,
    snapshot_streamchat,
    streamchat_server,
    versions,
)
from profile_report import summarize_profile
from redisproxy import CountingProxy
from report import DEFAULT, FLOOR, PROD, REDIS, Report, brief, machine, report
from scenarios import (
    PROTOCOLS,
    QUICK,
    ROUND_TRIP_KINDS,
    SHARED_KINDS,
    Plan,
    _latency_of,
    abort_trial,
    protocol_trial,
    resume_trial,
    roundtrip_trial,
    scale10k_trial,
    scale_trial,
    shared_trial,
    throughput_trial,
    tool_turn_trial,
)

# Redis databases of the processes the scenarios start for themselves (streamchat-redis: 0).
ROUND_TRIP_DB = 2
NGINX_DB = 1
OTEL = "streamchat-otel"
TURN_SPAN = "invoke_agent streamchat"  # one per turn (streamchat/tracing.py)
# The batch span processor sends what it holds at least every 5 s (the SDK's default delay):
# a sink that has heard nothing for longer has every span of the trials before.
SPANS_SETTLE_S = 6.0
# Before each trial, the other servers on the server's core must have gone quiet: a slow peer
# can go on working through the requests its trial's clients abandoned for seconds after they
# left, on the core the next server is measured on. Quiet: under this share of a core over a
# window, waited for at most the limit (the report notes a trial that started without it).
QUIET_SHARE = 0.05
QUIET_WINDOW_S = 0.5
QUIET_LIMIT_S = 20.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the run ---------------------------------------------------------------------------------


async def smoke(server: Server, upstream: Upstream) -> str | None:
    """One short stream; None when the server answers as it should, else what went wrong."""
    upstream.configure(mode="text", tokens=5, pace_ms=0, stamp=False)
    load = Load(server.target)
    try:
        conn = await load.connect()
        ex = await asyncio.wait_for(conn.send(server.target.request(load.tag())), 30)
    except (OSError, TimeoutError) as exc:
        return f"no reply: {type(exc).__name__} {exc}"
    finally:
        load.close_all()
    if ex.error:
        return f"bad reply: {ex.error}"
    if ex.t_first is None or ex.frames < 5:
        return f"reply without the tokens (frames={ex.frames})"
    return None


class Run:
    def __init__(self, plan: Plan, args: argparse.Namespace) -> None:
        self.plan = plan
        self.args = args
        self.pinning = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.server_core = SERVER_CORE if self.pinning else None
        self.load_core = LOAD_CORE if self.pinning else None
        self.upstream = Upstream(self.load_core)
        self.servers: list[Server] = []
        self.results: dict[str, Any] = {
            "throughput": {},
            "latency": {},
            "scale": {},
            "features": {},
            "abort": {},
            "resume": {},
            "roundtrips": {},
            "nginx": {},
            "protocols": {},
            "tools": {},
            "scale10k": {},
            "shared": {},
        }
        self.notes: list[str] = []
        self.probes: list[tuple[str, str, float]] = []  # (scenario, server, core_probe_ms)
        self.profile: dict[str, Any] | None = None
        self.restarts: dict[str, int] = {}
        self.code = "unknown"
        self.snapshot: Path | None = None
        self.baseline: tuple[Path, str] | None = None  # --baseline: its code's folder, commit
        self.redis: RedisServer | None = None
        self.sink: OtlpSink | None = None
        self.tracing: dict[str, Any] = {}
        self.otel_log_offset = 0

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.skipped is None]

    async def start(self) -> None:
        if self.pinning:
            os.sched_setaffinity(0, {int(LOAD_CORE)})
        else:
            self.notes.append("Fewer than 2 cores (or no taskset): nothing was pinned.")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        self.code = git_state()
        self.snapshot = snapshot_streamchat()
        log(f"streamchat: {self.code}; running a copy in {self.snapshot.relative_to(BENCH)}")
        if self.args.baseline:
            self.baseline = snapshot_commit(self.args.baseline)
            log(f"{baseline_name(self.baseline[1])}: commit {self.baseline[1]}, beside it")
            if self.args.servers:
                self.args.servers.append(baseline_name(self.baseline[1]))
            if self.args.servers and "streamchat-redis" in self.args.servers:
                self.args.servers.append(baseline_name(self.baseline[1], "redis"))
        self.upstream.start()
        log(f"upstream on port {self.upstream.port} (pid {self.upstream.pid})")
        no_redis = await self.start_redis()
        no_sink = self.start_sink()
        self.servers = build_servers(
            self.upstream,
            self.args.servers,
            self.snapshot,
            self.redis,
            no_redis,
            self.sink,
            no_sink,
            self.baseline,
        )
        for server in self.servers:
            if server.skipped:
                log(f"{server.name}: skipped: {server.skipped}")
                continue
            try:
                server.start(self.server_core)
            except (RuntimeError, OSError) as exc:
                server.skipped = f"did not start: {exc}"
                log(f"{server.name}: {server.skipped}")
                server.stop()
                continue
            problem = await smoke(server, self.upstream)
            if problem:
                server.skipped = f"failed the smoke test: {problem}"
                log(f"{server.name}: {server.skipped}")
                server.stop()
            else:
                log(f"{server.name}: up on port {server.port} (pid {server.pid})")
        await asyncio.sleep(2.0)
        for server in self.live():  # a server that burns CPU while idle steals from the others
            c0 = cpu_seconds(server.pid)
            await asyncio.sleep(1.0)
            idle = cpu_seconds(server.pid) - c0
            if idle > 0.02:
                self.notes.append(f"{server.name} used {idle * 100:.0f}% of a core while idle.")

    async def start_redis(self) -> str | None:
        """The run's Redis, when a server on Redis is in it; else why not (None: not wanted)."""
        if self.args.servers and not {"streamchat-redis", "streamchat-prod"} & set(
            self.args.servers
        ):
            return None
        missing = redis_missing()
        if missing is not None:
            return missing
        self.redis = RedisServer(self.load_core)
        try:
            self.redis.start()
        except (RuntimeError, OSError) as exc:
            self.redis.stop()
            self.redis = None
            return f"redis-server did not start: {exc} (see bench/out/logs/redis.log)"
        log(f"redis-server on port {self.redis.port} (pid {self.redis.pid})")
        return None

    def start_sink(self) -> str | None:
        """The OTLP/HTTP sink, when `streamchat-otel` is named; else why not (None: not wanted)."""
        if OTEL not in self.args.servers:
            return None
        assert self.snapshot is not None
        missing = otel_missing(self.snapshot)
        if missing is not None:
            return missing
        self.sink = OtlpSink(self.load_core)
        try:
            self.sink.start()
        except (RuntimeError, OSError) as exc:
            self.sink.stop()
            self.sink = None
            return f"the OTLP sink did not start: {exc} (see bench/out/logs/otlpsink.log)"
        log(f"OTLP/HTTP sink on port {self.sink.port} (pid {self.sink.pid})")
        with contextlib.suppress(OSError):  # the server's log is appended to, run after run
            self.otel_log_offset = (LOGS / f"{OTEL}.log").stat().st_size
        return None

    async def count_spans(self) -> None:
        """What the traced server exported: the sink's totals, and spans per turn for each of
        its throughput trials (the spans that ended in the trial's window, counted once the
        exporter has sent them, over the streams that finished in it)."""
        sink = self.sink
        server = next((s for s in self.servers if s.name == OTEL), None)
        if sink is None or server is None or not sink.running:
            return
        log("tracing: waiting for the exporter's last batches")
        stats = sink.stats()
        seen = (stats["requests"], stats["spans"] or 0)
        settled = started = time.monotonic()
        while time.monotonic() - settled < SPANS_SETTLE_S:
            if time.monotonic() - started > 5 * SPANS_SETTLE_S:
                break  # still exporting (turns the clients left go on): count what is there
            await asyncio.sleep(0.5)
            stats = sink.stats()
            now = (stats["requests"], stats["spans"] or 0)
            if now != seen:
                seen, settled = now, time.monotonic()
        for trial in self.results["throughput"].get("text", {}).get(OTEL, []):
            window, streams = trial.get("window_ns"), trial.get("streams")
            if "failed" in trial or not window or not streams or not stats["decoding"]:
                continue
            by_name = sink.spans(*window)
            trial["spans_by_name"] = by_name
            trial["spans_per_turn"] = sum(by_name.values()) / streams
            trial["turns_traced"] = by_name.get(TURN_SPAN, 0) / streams
        self.tracing = {"sink": stats, **self.otel_log()}

    def otel_log(self) -> dict[str, Any]:
        """From this run's part of the traced server's log: its banner line on traces, and how
        often the batch span processor said its queue was full (spans dropped)."""
        try:
            with open(LOGS / f"{OTEL}.log", "rb") as f:
                f.seek(self.otel_log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return {}
        banner = next((line.strip() for line in text.splitlines() if "traces:" in line), None)
        return {"banner": banner, "queue_full_warnings": text.count("Queue full, dropping")}

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.sink is not None:
            self.sink.stop()
        if self.redis is not None:
            self.redis.stop()
        self.upstream.stop()
        if self.snapshot is not None:
            shutil.rmtree(self.snapshot, ignore_errors=True)
        if self.baseline is not None:
            shutil.rmtree(self.baseline[0], ignore_errors=True)

    def wants(self, scenario: str) -> bool:
        return not self.args.scenarios or scenario in self.args.scenarios

    async def each(
        self,
        scenario: str,
        key: str,
        reps: int,
        trial: Callable[[Server], Coroutine[Any, Any, dict[str, Any]]],
        servers: list[Server] | None = None,
    ) -> None:
        """Every server in turn, `reps` times over, results kept per server."""
        table = self.results[scenario].setdefault(key, {})
        for rep in range(reps):
            for server in servers if servers is not None else self.live():
                if server.skipped or not self.ensure_alive(server, scenario):
                    continue
                result = await self.trial(server, scenario, trial)
                table.setdefault(server.name, []).append(result)
                log(f"  {scenario}/{key} rep {rep + 1} {server.name}: {brief(result)}")

    def ensure_alive(self, server: Server, scenario: str) -> bool:
        """A server that died (or was killed from outside) is restarted, at most twice."""
        if not server.argv or (server.proc is not None and server.proc.poll() is None):
            return True
        code = server.proc.returncode if server.proc is not None else None
        self.restarts[server.name] = self.restarts.get(server.name, 0) + 1
        if self.restarts[server.name] > 2:
            server.skipped = f"exited (code {code}) during {scenario}, after 2 restarts"
            return False
        self.notes.append(
            f"{server.name} was found dead (exit code {code}) before a {scenario} trial and "
            "restarted; see its log in bench/out/logs/."
        )
        log(f"  {server.name} is gone (exit code {code}): restarting")
        try:
            server.restart(self.server_core)
        except (RuntimeError, OSError) as exc:
            server.skipped = f"did not restart during {scenario}: {exc}"
            return False
        return True

    async def with_settings(
        self, servers: list[Server], overrides: dict[str, str], scenario: str
    ) -> None:
        """Restart these servers with these settings changed from their own (none: restore)."""
        if not servers:
            return
        for server in servers:
            server.overrides = overrides
            if server.skipped:
                continue
            changed = " ".join(f"{k}={v}" for k, v in overrides.items()) or "its own settings"
            log(f"  {server.name}: restarting with {changed}")
            try:
                server.restart(self.server_core)
            except (RuntimeError, OSError) as exc:
                server.skipped = f"did not restart for {scenario}: {exc}"
                log(f"  {server.name}: {server.skipped}")
        await asyncio.sleep(1.0)

    async def others_quiet(self, server: Server, scenario: str) -> None:
        """Wait until the other servers use under `QUIET_SHARE` of a core (see there)."""
        others = [s.pid for s in self.live() if s is not server and s.proc is not None]
        started = time.monotonic()
        while True:
            before = sum(cpu_seconds(pid) for pid in others)
            await asyncio.sleep(QUIET_WINDOW_S)
            busy = (sum(cpu_seconds(pid) for pid in others) - before) / QUIET_WINDOW_S
            waited = time.monotonic() - started
            if busy < QUIET_SHARE:
                if waited > 2 * QUIET_WINDOW_S:
                    log(f"  waited {waited:.1f} s for the other servers to go quiet")
                return
            if waited > QUIET_LIMIT_S:
                self.notes.append(
                    f"A {scenario} trial of {server.name} started while the other servers "
                    f"still used {busy:.0%} of a core, after waiting {QUIET_LIMIT_S:g} s."
                )
                return

    async def run_shared(self, own: list[Server]) -> None:
        """12: the servers with a tool loop on the server core at once, kind after kind."""
        # In a run of every scenario, the default, the two Redis configurations, the floor and
        # any baseline: the more processes take turns on the core, the less each finds of its
        # own in the caches. Asked for by name (`--scenarios shared`), every one in the run.
        kept = {DEFAULT, REDIS, PROD, FLOOR}
        named = bool(self.args.scenarios) and "shared" in self.args.scenarios
        left = [s.name for s in own if not named and s.name not in kept and "@" not in s.name]
        own = [s for s in own if s.name not in left]
        if left:
            self.notes.append(f"Scenario 12 (one core shared) leaves out {', '.join(left)}.")
        log(f"12. shared core: {', '.join(s.name for s in own)}")
        table = self.results["shared"]
        for rep in range(self.plan.shared_reps):
            for kind, *_ in SHARED_KINDS:
                live = [s for s in own if not s.skipped and self.ensure_alive(s, "shared")]
                if len(live) < 2:
                    self.notes.append("Scenario 12 needs two servers with a tool loop.")
                    return
                await self.others_quiet(live[0], "shared")  # the peers, when in the run
                try:
                    results = await shared_trial(live, self.upstream, self.plan, kind)
                except Exception as exc:
                    log(f"  shared/{kind}: failed: {type(exc).__name__}: {exc}")
                    continue
                for name, row in results.items():
                    table.setdefault(kind, {}).setdefault(name, []).append(row)
                    log(f"  shared/{kind} rep {rep + 1} {name}: {brief(row)}")

    async def trial(
        self,
        server: Server,
        scenario: str,
        trial: Callable[[Server], Coroutine[Any, Any, dict[str, Any]]],
    ) -> dict[str, Any]:
        await self.others_quiet(server, scenario)
        probe = await asyncio.to_thread(core_probe_ms, self.server_core)
        if probe is not None:
            self.probes.append((scenario, server.name, probe))
        try:
            result = await trial(server)
        except Exception as exc:  # a peer that falls over must not stop the run
            log(f"  {scenario} {server.name}: failed: {type(exc).__name__}: {exc}")
            result = {"failed": f"{type(exc).__name__}: {exc}"}
        if server.proc is not None and server.proc.poll() is not None:
            code = server.proc.returncode
            result = {"failed": f"the server exited during the trial (code {code})"}
        if probe is not None:
            result["core_probe_ms"] = probe
        return result

    def probe_note(self) -> str | None:
        """How fast the server's core ran Python before each trial, and which trials started
        on a slow core."""
        if not self.probes:
            return None
        values = sorted(probe for *_, probe in self.probes)
        fastest, median = values[0], values[len(values) // 2]
        slow = [(scenario, name) for scenario, name, probe in self.probes if probe > 1.2 * fastest]
        where = "the server's core" if self.server_core is None else f"core {self.server_core}"
        note = (
            f"Before each trial a fixed pure-Python loop timed how fast {where} ran "
            f"(`core_probe_ms` in the raw figures): fastest {fastest:.1f} ms, median "
            f"{median:.1f}, slowest {values[-1]:.1f}; {len(slow)} of {len(values)} trials "
            "started with the core over 1.2x slower than its fastest"
        )
        if slow:
            counted = Counter(f"{scenario} {name}" for scenario, name in slow)
            note += " (" + ", ".join(f"{k}: {v}" for k, v in counted.most_common(12)) + ")"
        return note + "."

    async def run(self) -> None:
        plan, up = self.plan, self.upstream
        if self.wants("throughput"):
            log("1. throughput")
            up.configure(mode="text", tokens=plan.tp_tokens, pace_ms=0, stamp=False)
            await self.each(
                "throughput",
                "text",
                plan.reps,
                lambda s: throughput_trial(s.target, s.pid, up, plan, side_pids=s.side_pids),
            )
        if self.wants("latency"):
            log("2. added latency")
            direct = Server("upstream (direct)", [], {}, BENCH, "", "", "openai")
            direct.port = up.port
            direct.path = "/v1/chat/completions"
            targets: list[Server] = [direct, *self.live()]
            for key, clients, tokens, seconds in (
                ("c1", 1, plan.lat1_tokens, plan.lat1_seconds),
                ("c200", plan.lat200_clients, plan.lat200_tokens, plan.lat200_seconds),
            ):
                await self.each(
                    "latency",
                    key,
                    plan.lat_reps,
                    functools.partial(_latency_of, up, plan, clients, tokens, seconds),
                    targets,
                )
        if self.wants("scale"):
            log(f"3. scale: {plan.scale_streams} open streams")
            await self.each(
                "scale",
                "open",
                plan.scale_reps,
                lambda s: scale_trial(s, up, plan, self.server_core),
            )
        if self.wants("features"):
            log("4. streamchat: tools and artifacts")
            streamchat = [s for s in self.live() if s.name == "streamchat"]
            for rep in range(plan.feature_reps):
                for mode in ("text", "tools", "artifact"):
                    if not streamchat:
                        break
                    server = streamchat[0]
                    if server.skipped or not self.ensure_alive(server, "features"):
                        break
                    up.configure(mode=mode, tokens=plan.tp_tokens, pace_ms=0, stamp=False)
                    result = await self.trial(
                        server,
                        "features",
                        lambda s: throughput_trial(s.target, s.pid, up, plan),
                    )
                    self.results["features"].setdefault(mode, []).append(result)
                    log(f"  features/{mode} rep {rep + 1}: {brief(result)}")
                    await asyncio.sleep(0.5)
            up.configure(mode="text")
        if self.wants("abort"):
            log("5. abort")
            # With its default grace, streamchat keeps a turn going for 30 s after its client
            # left, by design: what this scenario times is the grace-0 path, the abort itself.
            held = [s for s in self.live() if s.keeps_turns]
            await self.with_settings(held, {"RESUME_GRACE_SECONDS": "0"}, "abort")
            await self.each(
                "abort", "leave", plan.abort_reps, lambda s: abort_trial(s.target, up, plan)
            )
            await self.with_settings(held, {}, "abort")
        if self.wants("resume"):
            resumable = [s for s in self.live() if s.resumable]
            log(f"6. resume: {', '.join(s.name for s in resumable) or 'no server to resume'}")
            await self.each(
                "resume",
                "drop",
                plan.resume_reps,
                lambda s: resume_trial(s.target, up, plan),
                resumable,
            )
        # streamchat-redis's settings (streamchat-prod's would need its key on every request).
        on_redis = next((s for s in self.live() if s.name == "streamchat-redis"), None)
        if self.wants("roundtrips"):
            log("7. Redis round trips per turn")
            if on_redis is None:
                self.notes.append("No Redis round trips: streamchat-redis is not in this run.")
            else:
                await self.run_roundtrips(on_redis)
        if self.wants("nginx"):
            log("8. two processes behind nginx")
            if on_redis is None:
                self.notes.append("No nginx scenario: streamchat-redis is not in this run.")
            else:
                await self.run_nginx(on_redis)
        if self.wants("protocols"):
            await self.run_protocols()
        # The peers have no tool loop, and scenario 3 shows them at 1,000 streams already.
        own = [s for s in self.live() if s.tools]
        left_out = [s.name for s in self.live() if not s.tools]
        if self.wants("tools"):
            log(f"10. tool turns: {', '.join(s.name for s in own) or 'no server with tools'}")
            if left_out:
                self.notes.append(
                    f"Tool turns (scenario 10) leave out {', '.join(left_out)}: no tool loop."
                )
            up.configure(mode="tools", tokens=plan.tool_tokens, pace_ms=0, stamp=False)
            await self.each(
                "tools", "turns", plan.reps, lambda s: tool_turn_trial(s, up, plan), own
            )
            up.configure(mode="text", tokens=plan.tp_tokens)
        if self.wants("shared"):
            await self.run_shared(own)
            up.configure(mode="text", tokens=plan.tp_tokens, pace_ms=0)
        if self.wants("scale10k"):
            log(f"11. scale: {plan.scale10k_streams:,} open streams")
            # The default configuration and the floor: a minute or two each.
            others = [s.name for s in own if s.name not in ("streamchat", "floor")]
            own = [s for s in own if s.name in ("streamchat", "floor")]
            if left_out or others:
                self.notes.append(
                    f"{plan.scale10k_streams:,} open streams (scenario 11) leave out "
                    f"{', '.join(left_out + others)} (scenario 3 has them at "
                    f"{plan.scale_streams:,})."
                )
            await self.each(
                "scale10k",
                "open",
                plan.scale10k_reps,
                lambda s: scale10k_trial(s, up, plan, self.server_core, self.load_core),
                own,
            )
            up.configure(mode="text", tokens=plan.tp_tokens, pace_ms=0)
        if self.wants("profile") and not self.args.no_profile:
            await self.run_profile()

    async def run_protocols(self) -> None:
        """Scenario 1's load on streamchat, asked in each protocol in turn, repeated."""
        server = next((s for s in self.live() if s.name == "streamchat"), None)
        log("9. the protocols: " + (server.name if server else "streamchat is not in this run"))
        if server is None:
            self.notes.append("No protocol comparison: streamchat is not in this run.")
            return
        plan, up = self.plan, self.upstream
        up.configure(mode="text", tokens=plan.tp_tokens, pace_ms=0, stamp=False)
        table = self.results["protocols"].setdefault(server.name, {})
        for rep in range(plan.reps):
            for protocol, _, _ in PROTOCOLS:
                if server.skipped or not self.ensure_alive(server, "protocols"):
                    return
                result = await self.trial(
                    server,
                    "protocols",
                    functools.partial(protocol_trial, protocol=protocol, upstream=up, plan=plan),
                )
                table.setdefault(protocol, []).append(result)
                log(f"  protocols/{protocol} rep {rep + 1}: {brief(result)}")
                await asyncio.sleep(0.5)

    async def run_roundtrips(self, model: Server) -> None:
        """A streamchat process of its own, talking to Redis through a counting relay."""
        assert self.redis is not None and self.snapshot is not None
        redis = self.redis
        proxy = CountingProxy(redis.port)
        await proxy.start()
        env = {**model.env, "STORE_URL": redis.url(ROUND_TRIP_DB, port=proxy.port)}
        counted = streamchat_server("streamchat-redis-counted", self.snapshot, env)
        counted.redis, counted.redis_db = redis, ROUND_TRIP_DB
        table = self.results["roundtrips"].setdefault("turns", {})
        try:
            # In a thread: the relay runs on this event loop, and the start waits for /health.
            await asyncio.to_thread(counted.start, self.server_core)
            for kind, _, _ in ROUND_TRIP_KINDS:
                result = await self.trial(
                    counted,
                    "roundtrips",
                    functools.partial(roundtrip_kind, self.upstream, redis, proxy, self.plan, kind),
                )
                table.setdefault(kind, []).append(result)
                log(f"  roundtrips/{kind}: {brief(result)}")
        except (RuntimeError, OSError) as exc:
            self.notes.append(f"No Redis round trips: {exc} (see bench/out/logs/).")
        finally:
            await asyncio.to_thread(counted.stop)
            await proxy.stop()
            self.upstream.configure(mode="text", pace_ms=0)

    async def run_nginx(self, model: Server) -> None:
        """Two streamchat processes on one Redis behind nginx, against one process direct.

        Both processes share the server core (the core one process has in every other
        scenario); nginx and Redis run on the load core. So the pair has no more CPU than one
        process: what this shows is what the second process and the nginx hop cost, and that
        the pair serves as one service, not a speed-up (see bench/README.md).
        """
        assert self.redis is not None and self.snapshot is not None
        why = None if nginx_path() is not None else "nginx is not installed"
        if why is None:
            try:
                readme_nginx_config()
            except RuntimeError as exc:
                why = str(exc)
        if why is not None:
            self.notes.append(f"No nginx scenario: {why}.")
            return
        plan, up, redis = self.plan, self.upstream, self.redis
        env = {**model.env, "STORE_URL": redis.url(NGINX_DB)}
        a, b = (streamchat_server(f"streamchat-redis-{x}", self.snapshot, dict(env)) for x in "ab")
        one = Nginx("nginx-one", (a.port, a.port), self.load_core)
        two = Nginx("nginx-two", (a.port, b.port), self.load_core)
        redis.flush(NGINX_DB)
        started: list[Server | Nginx] = []
        try:
            for server in (a, b):
                server.start(self.server_core)
                started.append(server)
            for nginx in (one, two):
                nginx.start()
                started.append(nginx)
            rows = (
                (DIRECT, a.target, ()),
                (THROUGH_ONE, one.target(THROUGH_ONE), (one.pid,)),
                (THROUGH_TWO, two.target(THROUGH_TWO), (two.pid,)),
            )
            table = self.results["nginx"].setdefault("throughput", {})
            up.configure(mode="text", tokens=plan.tp_tokens, pace_ms=0, stamp=False)
            for rep in range(plan.nginx_reps):
                for label, target, side in rows:
                    result = await self.trial(
                        a,
                        "nginx",
                        functools.partial(through, target, (redis.pid, *side), (b.pid,), up, plan),
                    )
                    if b.proc is not None and b.proc.poll() is not None:
                        result = {"failed": f"{b.name} exited (code {b.proc.returncode})"}
                    table.setdefault(label, []).append(result)
                    log(f"  nginx/{label} rep {rep + 1}: {brief(result)}")
                    await asyncio.sleep(0.5)
            resumes = self.results["nginx"].setdefault("resume", {})
            for rep in range(plan.resume_reps):
                result = await self.trial(
                    a, "nginx", lambda _: resume_trial(two.target(THROUGH_TWO), up, plan)
                )
                resumes.setdefault(THROUGH_TWO, []).append(result)
                log(f"  nginx/resume rep {rep + 1}: {brief(result)}")
        except (RuntimeError, OSError) as exc:
            self.notes.append(f"nginx scenario stopped: {exc} (see bench/out/logs/).")
        finally:
            for proc in reversed(started):
                proc.stop()
            up.configure(mode="text", pace_ms=0)

    async def run_profile(self) -> None:
        streamchat = next((s for s in self.live() if s.name == "streamchat"), None)
        pyspy = VENV_PY.parent / "py-spy"
        if streamchat is None or not self.ensure_alive(streamchat, "profile"):
            return
        if not pyspy.exists():
            self.notes.append("No profile: py-spy is not installed (run bench/setup).")
            return
        log("profile: py-spy on streamchat under the throughput load")
        self.upstream.configure(mode="text", tokens=self.plan.tp_tokens, pace_ms=0, stamp=False)
        OUT.mkdir(exist_ok=True)
        raw = OUT / "profile-streamchat.txt"
        plan = self.plan
        load_task = asyncio.create_task(
            throughput_trial(
                streamchat.target,
                streamchat.pid,
                self.upstream,
                Plan(
                    **{**asdict(plan), "tp_warmup": 1.0, "tp_seconds": plan.profile_seconds + 1.5}
                ),
            )
        )
        await asyncio.sleep(1.5)
        argv = [
            str(pyspy),
            "record",
            "--pid",
            str(streamchat.pid),
            "--duration",
            str(int(plan.profile_seconds)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--nolineno",
            "--full-filenames",
            "--output",
            str(raw),
        ]
        if self.pinning:
            argv = ["taskset", "-c", LOAD_CORE, *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), plan.profile_seconds + 30)
        except TimeoutError:
            proc.kill()
            output = b"py-spy did not finish in time"
        under_profile = await load_task
        if proc.returncode != 0 or not raw.exists():
            text = output.decode(errors="replace").strip().splitlines()[-3:]
            self.notes.append("No profile: py-spy failed: " + " / ".join(text))
            return
        self.profile = summarize_profile(raw.read_text())
        self.profile["events_per_s"] = under_profile["events_per_s"]
        self.profile["seconds"] = plan.profile_seconds
        self.profile["raw_file"] = str(raw.relative_to(BENCH.parent))


async def roundtrip_kind(
    upstream: Upstream,
    redis: RedisServer,
    proxy: CountingProxy,
    plan: Plan,
    kind: str,
    server: Server,
) -> dict[str, Any]:
    return await roundtrip_trial(server.target, upstream, redis, proxy, plan, kind)


async def through(
    target: Target,
    side_pids: tuple[int, ...],
    more_pids: tuple[int, ...],
    upstream: Upstream,
    plan: Plan,
    server: Server,
) -> dict[str, Any]:
    """The throughput load on `target` (nginx, or `server` itself), CPU read from `server`."""
    return await throughput_trial(
        target, server.pid, upstream, plan, side_pids=side_pids, more_pids=more_pids
    )


DIRECT = "one process, direct"
THROUGH_ONE = "nginx, one process"
THROUGH_TWO = "nginx, two processes"


def tuning_log() -> str:
    """bench/TUNING.md (what the profiles showed and what each change bought), kept by hand."""
    path = BENCH / "TUNING.md"
    return "\n" + path.read_text() if path.exists() else ""


async def main_async(args: argparse.Namespace) -> int:
    if args.from_json:
        text = report(Report.load(Path(args.from_json))) + tuning_log()
        output = Path(args.output) if args.output else BENCH / "RESULTS.md"
        output.write_text(text)
        log(f"re-rendered {args.from_json} into {output}")
        return 0
    plan = QUICK if args.quick else Plan()
    started, t0 = datetime.datetime.now().astimezone(), time.monotonic()
    run = Run(plan, args)
    if args.concurrent:
        warning = "Another bench/run.py was running at the same time: these figures are skewed."
        log(warning)
        run.notes.append(warning)
    gc.collect()
    try:
        await run.start()
        if any(s.name == "streamchat" and s.skipped for s in run.servers):
            log("streamchat did not start: see bench/out/logs/streamchat.log")
        await run.run()
        await run.count_spans()
    finally:
        run.stop()
    probed = run.probe_note()
    if probed is not None:
        run.notes.append(probed)
    data = Report(
        plan=plan,
        results=run.results,
        profile=run.profile,
        notes=run.notes,
        servers={server.name: server.skipped for server in run.servers},
        about={server.name: server.about for server in run.servers if server.about},
        tracing=run.tracing,
        pinning=run.pinning,
        command=" ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        started=started.strftime("%Y-%m-%d %H:%M %Z").strip(),
        seconds=time.monotonic() - t0,
        git=f"{run.code}; the whole run used a copy of that code taken at its start",
        machine=machine(),
        versions=versions(),
    )
    text = report(data) + tuning_log()
    output = Path(args.output) if args.output else BENCH / "RESULTS.md"
    # The figures behind each report, named after it: bench/out/RESULTS.json for RESULTS.md.
    (OUT / f"{output.stem}.json").write_text(json.dumps(asdict(data), indent=1, default=str))
    output.write_text(text)
    print()
    print(text)
    log(f"written to {output}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="streamchat benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario")
    parser.add_argument(
        "--servers",
        nargs="*",
        default=[],
        help="only these (streamchat streamchat-redis floor vercel-ai-sdk litellm-proxy; also "
        "streamchat-memory, streamchat-nometrics, streamchat-otel, streamchat-keys and "
        "streamchat-prod, which run only when named)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="*",
        default=[],
        help="only these (throughput latency scale features abort resume roundtrips nginx "
        "protocols tools shared scale10k profile)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure streamchat at this commit (default settings), as streamchat@<commit>",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--output", help="where to write the report (default bench/RESULTS.md)")
    parser.add_argument(
        "--from-json",
        help="only re-render a report from its saved figures (bench/out/RESULTS.json)",
    )
    args = parser.parse_args()
    if args.quick and not args.output and not args.from_json:
        args.output = str(OUT / "RESULTS-quick.md")
    OUT.mkdir(exist_ok=True)
    with open(OUT / ".run.lock", "w") as lock:  # held for the whole run
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            args.concurrent = False
        except BlockingIOError:
            args.concurrent = not args.from_json
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
