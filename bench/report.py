"""The report: the tables of RESULTS.md, from a `Report` (what one run measured, saved as JSON).

Every figure is a median over the repeats of a scenario; ratios are to the floor (or, for
streamchat's features, to its own plain text). `python bench/run.py --from-json FILE` re-renders
a saved run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profile_report import profile_section
from scenarios import HEALTH_MS, STREAM_GATE, Plan

FLOOR = "floor"
DEFAULT = "streamchat"  # streamchat with every default: the SQLite store, the resume grace
MEMORY = "streamchat-memory"  # the same with STORE_URL=memory://
REDIS = "streamchat-redis"  # the same with STORE_URL=redis://... (the harness's redis-server)
KEYS = "streamchat-keys"  # the defaults plus AUTH=keys and every limit set
PROD = "streamchat-prod"  # Redis, AUTH=keys, every limit, metrics: the production configuration
NOMETRICS = "streamchat-nometrics"  # the defaults with METRICS=0
OTEL = "streamchat-otel"  # the defaults plus OpenTelemetry traces to the harness's OTLP sink
# Issue 10's targets for the Redis store.
REDIS_FLOOR_RATIO = 0.7  # throughput at least this times the floor's
REDIS_EXTRA_P99_MS = 2.0  # token delay p99 at 200 paced streams at most this over SQLite's
RESUME_P99_MS = 10.0  # first replayed event, p99
PROTOCOL_RATIO = 0.9  # issue 12: each protocol's tokens/s at least this times the native's
KEYS_RATIO = 0.95  # issue 11: auth and limit checks cost at most a few per cent of events/s
PROD_FLOOR_RATIO = 0.9  # issue 15: the production configuration at least this times the floor
METRICS_RATIO = 0.95  # issue 14: throughput with metrics on at least this times metrics off
TOOLS_RATIO = 1.0  # issue 15: tool turns/s at least this times the floor's own tool loop
NATIVE = "native"
X = "\u00d7"  # the ratio sign, kept out of the source as ruff asks
DASH = "\u2013"  # a missing figure
HELD = "held"  # a server that keeps its turns going after the client left (the resume grace)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def brief(result: dict[str, Any]) -> str:
    parts = []
    for key, value in result.items():
        if key == "core_probe_ms":
            continue  # always shown, last
        if isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}")
        elif key == "failed":
            parts.append(f"FAILED {value}")
    probe = result.get("core_probe_ms")
    return " ".join(parts[:8] + ([f"core_probe_ms={probe:.3g}"] if probe is not None else []))


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return DASH
    if abs(value) >= 1000 and digits <= 1:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None, floor: float | None) -> str:
    if value is None or not floor:
        return DASH
    return f"{value / floor:.2f}{X}"


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    return median([r.get(key) for r in rows if "failed" not in r])


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "memory": _meminfo(),
    }


def _meminfo() -> str:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return "unknown"


@dataclass
class Report:
    """Everything the report says, as saved in bench/out/RESULTS.json (re-render: --from-json)."""

    plan: Plan
    results: dict[str, Any]
    profile: dict[str, Any] | None
    notes: list[str]
    servers: dict[str, str | None]  # name -> why it was left out (None: it ran)
    pinning: bool
    command: str
    started: str
    seconds: float
    git: str
    machine: dict[str, str]
    versions: dict[str, str]
    about: dict[str, str] = field(default_factory=dict)  # name -> its configuration
    # What the traced server exported (the OTLP sink's totals) and said about it in its log.
    tracing: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Report:
        raw = json.loads(path.read_text())
        raw["plan"] = Plan(**raw["plan"])
        return cls(**raw)


def report(data: Report) -> str:
    plan, res, info, ver = data.plan, data.results, data.machine, data.versions
    names = [n for n, why in data.servers.items() if why is None]
    names += [n for n, why in data.servers.items() if why is not None]
    lines = [
        "# streamchat benchmark results",
        "",
        f"- date: {data.started} (took {data.seconds / 60:.1f} min)",
        f"- command: `{data.command}`",
        f"- streamchat: {data.git}",
        f"- machine: {info['nproc']} cores, {info['cpu']}, {info['memory']}, "
        f"Linux {info['kernel']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()),
        "- pinning: "
        + (
            "server under test on core 0 (`taskset -c 0`); upstream, load client, profiler, "
            "Redis and nginx on core 1"
            if data.pinning
            else "none (fewer than 2 cores)"
        ),
        f"- repeats: {plan.reps} (throughput), {plan.lat_reps} (latency), {plan.scale_reps} "
        f"(scale), {plan.feature_reps} (features), {plan.abort_reps} (abort), "
        f"{plan.resume_reps} (resume), {plan.nginx_reps} (nginx), {plan.reps} (protocols), "
        f"{plan.reps} (tools), {plan.scale10k_reps} (scale10k), {plan.shared_reps} (shared); "
        "servers (and protocols) alternate within each repeat; figures are medians over the "
        "repeats",
        "- the machine is shared and noisy: treat figures as provisional, compare ratios",
        *(f"- {name}: {about}" for name, about in data.about.items() if name in names),
        "",
    ]
    skipped = {n: why for n, why in data.servers.items() if why is not None}
    for name, why in skipped.items():
        lines.append(f"- **{name} left out**: {why}")
    for note in data.notes:
        lines.append(f"- note: {note}")
    if skipped or data.notes:
        lines.append("")
    floor_tp = res["throughput"].get("text", {}).get(FLOOR, [])
    if res["throughput"]:
        lines += [
            f"## 1. Throughput: {plan.tp_clients} clients, back-to-back {plan.tp_tokens}-token "
            f"streams, unpaced upstream, {plan.tp_seconds:g} s per trial",
            "",
            f"| server | events/s | {X} floor | CPU ms / 1k events | {X} floor | server CPU "
            "| core-1 load | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        f_eps, f_cpu = med(floor_tp, "events_per_s"), med(floor_tp, "cpu_ms_per_1k")
        for name in names:
            rows = res["throughput"].get("text", {}).get(name)
            if not rows:
                continue
            eps, cpu = med(rows, "events_per_s"), med(rows, "cpu_ms_per_1k")
            lines.append(
                f"| {name} | {fmt(eps, 0)} | {ratio(eps, f_eps)} | {fmt(cpu, 1)} | "
                f"{ratio(cpu, f_cpu)} | {fmt(_pc(med(rows, 'server_cpu_util')), 0)}% | "
                f"{fmt(_pc(med(rows, 'core1_util')), 0)}% | "
                f"{sum(r.get('errors', 0) for r in rows)} |"
            )
        lines += [
            "",
            "An event is one SSE frame (`\\n\\n`); every server sends about one frame per token "
            "plus a few per stream (streamchat 501, floor 501, Vercel ~506, LiteLLM ~502). "
            "Core-1 load is the upstream plus the load client (and, for streamchat-redis, its "
            "Redis): well under 100% means the server under test, not the load, was the limit.",
            "",
        ]
    if res["latency"]:
        lines += _latency_table(data, names)
    if res["scale"]:
        lines += _scale_table(data, names)
    if res["features"]:
        lines += _features_table(data)
    if res["abort"]:
        lines += _abort_table(data, names)
    if res.get("resume"):
        lines += _resume_table(data, names)
    if res.get("roundtrips", {}).get("turns"):
        lines += _roundtrip_table(data)
    if res.get("nginx", {}).get("throughput"):
        lines += _nginx_table(data)
    if res.get("protocols"):
        lines += _protocol_table(data)
    if res.get("tools", {}).get("turns"):
        lines += _tools_table(data, names)
    if res.get("scale10k", {}).get("open"):
        lines += _scale10k_table(data, names)
    if res.get("shared"):
        lines += _shared_table(data, names)
    if any(name in data.servers for name in (KEYS, PROD)):
        lines += _config_section(data, names)
    if any(name in data.servers for name in (NOMETRICS, OTEL)):
        lines += _observability_section(data)
    if _has_both(res, REDIS):
        lines += _redis_section(data)
    if _has_both(res):
        lines += _store_table(data)
    if data.profile is not None:
        lines += profile_section(data.profile)
    lines += _raw_section(data)
    return "\n".join(lines) + "\n"


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _pc(value: float | None) -> float | None:
    return None if value is None else value * 100


def _latency_table(data: Report, names: list[str]) -> list[str]:
    plan, res = data.plan, data.results["latency"]
    lines = [
        f"## 2. Added latency: upstream paced at {plan.lat_pace_ms:g} ms per token",
        "",
        "TTFB: request sent → first token read by the client. Token delay: the upstream's write "
        "of a token → the client's read of it (the token carries its send time). *Added* is the "
        "server's figure minus the same figure taken straight from the upstream (first row). "
        "*Server CPU*: the share of its core the server used while the figures were taken (the "
        "tails grow as it nears 100%).",
        "",
        "| server | streams | TTFB p50 | TTFB p99 | added p50 | added p99 | token delay p50 | "
        "p99 | added p50 | added p99 | server CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("c1", "1"), ("c200", str(plan.lat200_clients))):
        table = res.get(key, {})
        base = table.get("upstream (direct)", [])
        b = {k: med(base, k) for k in ("ttfb_p50", "ttfb_p99", "delay_p50", "delay_p99")}
        for name in ["upstream (direct)", *names]:
            rows = table.get(name)
            if not rows:
                continue
            m = {k: med(rows, k) for k in b}
            added = {k: _minus(m[k], b[k]) for k in b}
            direct = name == "upstream (direct)"
            lines.append(
                f"| {name} | {label} | {_unit(m['ttfb_p50'], 2, ' ms')} | "
                f"{_unit(m['ttfb_p99'], 2, ' ms')} | "
                + (
                    f"{DASH} | {DASH} | "
                    if direct
                    else f"{fmt(added['ttfb_p50'], 2)} | {fmt(added['ttfb_p99'], 2)} | "
                )
                + f"{_unit(m['delay_p50'], 2, ' ms')} | {_unit(m['delay_p99'], 2, ' ms')} | "
                + (
                    f"{DASH} | {DASH} | "
                    if direct
                    else f"{fmt(added['delay_p50'], 2)} | {fmt(added['delay_p99'], 2)} | "
                )
                + f"{_unit(_pc(med(rows, 'server_cpu_util')), 0, '%')} | "
                + f"{sum(r.get('errors', 0) for r in rows if 'failed' not in r)} |"
            )
    lines += [
        "",
        f"1 stream: {plan.lat1_tokens}-token replies back to back; {plan.lat200_clients} streams: "
        f"{plan.lat200_tokens}-token replies back to back, starts spread over one reply's length; "
        f"{plan.lat1_seconds:g} s / {plan.lat200_seconds:g} s measured per trial.",
        "",
    ]
    return lines


def _scale_table(data: Report, names: list[str]) -> list[str]:
    plan, res = data.plan, data.results["scale"].get("open", {})
    floor = res.get(FLOOR, [])
    f_kib = med(floor, "kib_per_stream")
    lines = [
        f"## 3. Scale: {plan.scale_streams} streams open at once (upstream: one token per "
        f"{plan.scale_pace_ms / 1000:g} s)",
        "",
        "| server | open | streaming | errors | ramp s | RSS idle MiB | RSS all open MiB | KiB / "
        f"open stream | {X} floor | upstream requests open | dropped ≤1 s after close | "
        "dropped ≤5 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rows = res.get(name)
        if not rows:
            continue
        kib = med(rows, "kib_per_stream")
        base, peak = med(rows, "rss_base_kib"), med(rows, "rss_open_kib")
        held = any(r.get("keeps_turns") for r in rows)
        dropped = (
            f"{HELD} | {HELD}"
            if held
            else f"{fmt(med(rows, 'upstream_aborted_1s'), 0)} | "
            f"{fmt(med(rows, 'upstream_aborted'), 0)}"
        )
        lines.append(
            f"| {name} | {fmt(med(rows, 'open'), 0)} | {fmt(med(rows, 'streaming'), 0)} | "
            f"{fmt(med(rows, 'errors'), 0)} | "
            f"{fmt(med(rows, 'ramp_s'), 1)} | {fmt(base / 1024 if base else None, 0)} | "
            f"{fmt(peak / 1024 if peak else None, 0)} | {fmt(kib, 1)} | {ratio(kib, f_kib)} | "
            f"{fmt(med(rows, 'upstream_open'), 0)} | {dropped} |"
        )
    lines += [
        "",
        "Open: client requests accepted and still in flight when memory was read; streaming: "
        f"clients that had their first token within {plan.scale_deadline:g} s; errors: the "
        "other clients (refused, failed, or still waiting for a first token). RSS is VmRSS of a "
        "fresh server process after 3 warm-up requests, then 1.5 s after the ramp; KiB per open "
        "stream divides the growth by *open*. The last three columns: how many requests the "
        "upstream had open, and how many of them it saw dropped within 1 s and within 5 s of "
        f"every client closing at once; *{HELD}*: none, by design, as streamchat keeps a turn "
        "whose client left going for its resume grace (30 s) in case the client comes back "
        "(scenario 5 times the abort with the grace at 0).",
        "",
    ]
    return lines


def _tools_table(data: Report, names: list[str]) -> list[str]:
    """Scenario 10: tool turns against the floor's own tool loop, and issue 15's target."""
    plan, res = data.plan, data.results["tools"]["turns"]
    floor = res.get(FLOOR, [])
    f_tps, f_cpu = med(floor, "turns_per_s"), med(floor, "cpu_ms_per_turn")
    lines = [
        f"## 10. Tool turns: {plan.tp_clients} clients, back-to-back turns (a tool round, then a "
        f"{plan.tool_tokens}-token answer), unpaced upstream, {plan.tp_seconds:g} s per trial",
        "",
        f"| server | turns/s | {X} floor | CPU ms / turn | {X} floor | upstream requests / turn "
        "| frames / turn | server CPU | core-1 load | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for name in names:
        rows = res.get(name)
        if not rows:
            continue
        tps, cpu = med(rows, "turns_per_s"), med(rows, "cpu_ms_per_turn")
        errors = sum(r.get("errors", 0) for r in rows if "failed" not in r)
        lines.append(
            f"| {name} | {fmt(tps, 0)} | {ratio(tps, f_tps)} | {fmt(cpu, 2)} | "
            f"{ratio(cpu, f_cpu)} | {fmt(med(rows, 'upstream_requests_per_turn'), 2)} | "
            f"{fmt(med(rows, 'frames_per_stream'), 1)} | "
            f"{fmt(_pc(med(rows, 'server_cpu_util')), 0)}% | "
            f"{fmt(_pc(med(rows, 'core1_util')), 0)}% | {errors} |"
        )
        if name != FLOOR and tps is not None and f_tps:
            targets.append(
                f"| {name} | {tps / f_tps:.2f}{X} | {_met(tps >= TOOLS_RATIO * f_tps)} |"
            )
    lines += [
        "",
        "Every turn is a tool turn: the upstream answers the first request with a call to `add` "
        f'(`{{"a": 25, "b": 17}}`, in 4 fragments) and the request carrying the tool\'s '
        f"result with {plan.tool_tokens} tokens. A turn is one stream; *upstream requests / "
        "turn* (replies the upstream finished over turns the clients finished) shows the tool "
        "loop ran (2.00). The floor's tool loop (`floor.py`) is the least a server with tools "
        "does: the four calculator tools offered on every request, fragments joined by index, "
        "one `json.loads` of the arguments, the plain function called in the handler, "
        "`tool_executing` and `tool_completed` events, the second request with the history; no "
        "conversation kept, no schema check, no thread. The peers have no tool loop and are "
        "left out.",
        "",
    ]
    if targets and f_tps:
        lines += [
            f"Target (issue 15): tool turns at least {TOOLS_RATIO:.1f}{X} the floor's tool loop "
            "(turns/s).",
            "",
            f"| server | turns/s {X} floor | target |",
            "|---|---:|---|",
            *targets,
            "",
        ]
    return lines


def _shared_table(data: Report, names: list[str]) -> list[str]:
    """Scenario 12: what a turn, a tool turn and an event cost, the servers on one core at once."""
    plan, res = data.plan, data.results["shared"]
    kinds = {
        "turns": ("1-token turn", "cpu_us_per_turn", 0),
        "tools": (f"tool turn ({plan.tool_tokens}-token answer)", "cpu_us_per_turn", 0),
        "tokens": ("event of a paced 1,000-token reply", "cpu_us_per_event", 1),
    }
    lines = [
        f"## 12. One core shared: every server at once, {plan.shared_seconds:g} s per trial",
        "",
        f"| CPU µs per | server | µs | {X} floor | main thread | its Redis, µs | turns/s "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, (label, key, digits) in kinds.items():
        table = res.get(kind, {})
        floor = med(table.get(FLOOR, []), key)
        for name in names:
            rows = table.get(name)
            if not rows:
                continue
            value = med(rows, key)
            side = med(rows, key.replace("cpu_", "side_"))
            lines.append(
                f"| {label} | {name} | {fmt(value, digits)} | {ratio(value, floor)} | "
                f"{fmt(_pc(med(rows, 'main_share')), 0)}% | {fmt(side, digits)} | "
                f"{fmt(med(rows, 'turns_per_s'), 0)} | {sum(r.get('errors', 0) for r in rows)} |"
            )
    lines += [
        "",
        "The servers with a tool loop serve the same load at the same time, all pinned to the "
        "server core: 8 clients each doing back-to-back 1-token turns (what a turn costs beyond "
        "its tokens), 8 each doing back-to-back tool turns, and 40 paced streams each (20 ms a "
        "token, 1,000-token replies: what an event costs, the turn's own cost spread over a "
        "thousand). Unpaced, they keep the core busy and the kernel shares it out, so a "
        "server's turns per second here follow its share, not its speed; the CPU per turn does "
        "not. Since every server meets the machine's slow and fast moments alike, these ratios "
        "hold to within a few percent where the same server measured alone differs by 10-40% "
        "between trials; latencies here mean nothing (the servers wait on each other). *Main "
        "thread*: the part of the process's CPU its main thread used (the event loop); "
        "streamchat's SQLite store runs its writes on a thread of its own. *Its Redis*: the CPU "
        "of the redis-server a Redis configuration uses (on the load core, so not in its own "
        "figure; when two of them use it, its CPU is shared out over both one's turns).",
        "",
    ]
    return lines


def _scale10k_table(data: Report, names: list[str]) -> list[str]:
    """Scenario 11: many paced streams held open, /health probed throughout."""
    plan, res = data.plan, data.results["scale10k"]["open"]
    f_kib = med(res.get(FLOOR, []), "kib_per_stream")
    lines = [
        f"## 11. Scale: {plan.scale10k_streams:,} streams open at once (opened "
        f"{plan.scale10k_rate:g} a second, upstream: one token per "
        f"{plan.scale10k_pace_ms / 1000:g} s, held {plan.scale10k_hold:g} s)",
        "",
        "| server | streams | served | errors | open s | RSS idle MiB | RSS held MiB | KiB / "
        f"stream | {X} floor | fds / stream | server CPU | tokens read | core-1 load | "
        "/health p50 | p99 | max | ≥ 50 ms | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---:|",
    ]
    targets, capped, phases, kinds = [], [], [], []
    for name in names:
        rows = [r for r in res.get(name, []) if "failed" not in r]
        if not rows:
            continue
        kib = med(rows, "kib_per_stream")
        base, held = med(rows, "rss_base_kib"), med(rows, "rss_held_kib")
        lines.append(
            f"| {name} | {fmt(med(rows, 'streams'), 0)} | {fmt(med(rows, 'served'), 0)} | "
            f"{fmt(med(rows, 'errors'), 0)} | {fmt(med(rows, 'opening_s'), 1)} | "
            f"{fmt(base / 1024 if base else None, 0)} | {fmt(held / 1024 if held else None, 0)} | "
            f"{fmt(kib, 1)} | {ratio(kib, f_kib)} | {fmt(med(rows, 'fds_per_stream'), 2)} | "
            f"{fmt(_pc(med(rows, 'server_cpu_util')), 0)}% | "
            f"{fmt(_pc(med(rows, 'tokens_read_share')), 0)}% | "
            f"{fmt(_pc(med(rows, 'core1_util')), 0)}% | "
            f"{_unit(med(rows, 'health_p50_ms'), 1, ' ms')} | "
            f"{_unit(med(rows, 'health_p99_ms'), 1, ' ms')} | "
            f"{_unit(max((r.get('health_max_ms') or 0) for r in rows), 1, ' ms')} | "
            f"{sum(r.get('health_slow', 0) for r in rows)} / "
            f"{sum(r.get('health_probes', 0) for r in rows)} | "
            f"{sum(r.get('health_failed', 0) for r in rows)} |"
        )
        for row in rows:
            if row.get("capped_by"):
                capped.append(
                    f"{name} ran {row['streams']:,} streams, not {row['wanted']:,}: "
                    f"{row['capped_by']} has no room for more."
                )
            found = row.get("health_phases", {})
            each = "; ".join(
                f"{phase} {f.get('probes', 0)} probes, p50 {_unit(f.get('p50_ms'), 1, ' ms')}, "
                f"p99 {_unit(f.get('p99_ms'), 1, ' ms')}, max {_unit(f.get('max_ms'), 1, ' ms')}"
                f" ({f.get('slow', 0)} ≥ {HEALTH_MS:g} ms; slowest connect "
                f"{_unit(f.get('connect_max_ms'), 1, ' ms')})"
                for phase, f in found.items()
            )
            slow = next(
                (t for t in row.get("health_timeline", []) if t[1] is None or t[1] >= HEALTH_MS),
                None,
            )
            if slow is not None:
                each += (
                    f"; the first probe over {HEALTH_MS:g} ms (or failed) {slow[0]:g} s after the "
                    f"first stream opened, {slow[2]:,} streams served by then"
                )
            if each:
                phases.append(f"- {name}: {each}.")
            if row.get("error_kinds"):
                listed = ", ".join(f"{k}: {v}" for k, v in sorted(row["error_kinds"].items()))
                kinds.append(f"- {name}: {listed}.")
        if name != FLOOR:
            short = [why for r in rows for why in _scale10k_shortfalls(r)]
            ran = min(r["streams"] for r in rows)
            at = "" if ran >= plan.scale10k_streams else f" at {ran:,} streams"
            targets.append(f"| {name} | {_met(not short)}{at} | {'; '.join(short) or DASH} |")
    lines += [
        "",
        *capped,
        *([""] if capped else []),
        "*Streams*: opened on a freshly started server after 3 warm-up requests, "
        f"{plan.scale10k_rate:g} new ones a second (at most {STREAM_GATE} connecting at "
        f"once); *served*: those whose first token arrived within "
        f"{plan.scale10k_deadline:g} s of the last one opening; "
        "*errors*: the streams not still streaming at the end of the hold (refused, failed, "
        "ended, or never a first token); *open s*: from the first stream opening to the last "
        "first token. RSS is the server's VmRSS before the streams and at the end of the hold; "
        "*KiB / stream* divides the growth by the streams still open, as in scenario 3; *fds / "
        "stream* likewise (a proxy holds 2: its client's socket and its upstream request's). "
        "*Server CPU*, *tokens read* (the tokens the clients read over the tokens the streams "
        "open were sent) and *core-1 load* (upstream, load client, health probe) are over the "
        f"hold. `/health` is probed every {plan.health_interval_ms:g} ms on a new connection "
        "(`Connection: close`) by a process of its own on the load core (`healthprobe.py`), "
        "from the first stream opening to the end of the hold; each probe is timed from connect "
        "to the server closing the connection, and a slow one delays the next.",
        "",
        "/health by phase (idle: the second before the first stream; opening: until the last "
        "first token; holding: the hold):",
        "",
        *phases,
        "",
    ]
    if kinds:
        lines += ["Errors by kind:", "", *kinds, ""]
    if targets:
        lines += [
            f"Target (issue 15): {plan.scale10k_streams:,} concurrent open streams in one "
            f"process, all served, 0 errors, every `/health` probe under {HEALTH_MS:g} ms "
            "throughout.",
            "",
            "| server | target | what fell short |",
            "|---|---|---|",
            *targets,
            "",
        ]
    return lines


def _scale10k_shortfalls(row: dict[str, Any]) -> list[str]:
    """What kept one scenario-11 trial from its target (none: met)."""
    found = []
    if row["served"] < row["streams"]:
        found.append(f"{row['streams'] - row['served']:,} streams never served")
    if row["errors"]:
        found.append(f"{row['errors']:,} errors")
    if not row.get("health_probes"):
        found.append("no /health probe")
    if row.get("health_failed"):
        found.append(f"{row['health_failed']} probes failed")
    if row.get("health_slow"):
        by_phase = ", ".join(
            f"{phase} {f['slow']}"
            for phase, f in row.get("health_phases", {}).items()
            if phase != "idle" and f.get("slow")
        )
        found.append(
            f"{row['health_slow']} of {row['health_probes']} probes ≥ {HEALTH_MS:g} ms "
            f"({by_phase}; the slowest {fmt(row.get('health_max_ms'), 1)} ms)"
        )
    return found


def _features_table(data: Report) -> list[str]:
    res = data.results["features"]
    text = med(res.get("text", []), "cpu_ms_per_1k")
    lines = [
        "## 4. streamchat: tools and artifacts (same load as scenario 1)",
        "",
        f"| reply | events/s | CPU ms / 1k events | {X} plain text |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "text": "plain text (500 tokens)",
        "tools": "tool round trip: `add` call, then 500 tokens (2 upstream calls)",
        "artifact": "artifact-heavy: an `<artifact>` spanning ~490 of 500 tokens",
    }
    for mode in ("text", "tools", "artifact"):
        rows = res.get(mode)
        if not rows:
            continue
        cpu = med(rows, "cpu_ms_per_1k")
        lines.append(
            f"| {labels[mode]} | {fmt(med(rows, 'events_per_s'), 0)} | {fmt(cpu, 1)} | "
            f"{ratio(cpu, text)} |"
        )
    return [*lines, ""]


def _abort_table(data: Report, names: list[str]) -> list[str]:
    plan, res = data.plan, data.results["abort"].get("leave", {})
    lines = [
        f"## 5. Abort: {plan.abort_clients} clients leave mid-stream (after 5-30 frames; "
        "upstream paced at 20 ms)",
        "",
        "| server | clients left | upstream saw the drop (in 3 s) | within 1 s | p50 ms | p99 ms | "
        "max ms | still open after 3 s | finished anyway |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rows = [r for r in res.get(name, []) if "failed" not in r]
        if not rows:
            continue
        left = sum(r["left"] for r in rows)
        seen = sum(r["upstream_aborted"] for r in rows)
        within = sum(r["within_1s"] for r in rows)
        lines.append(
            f"| {name} | {left} | {seen} | {within}/{left} | {fmt(med(rows, 'p50_ms'), 1)} | "
            f"{fmt(med(rows, 'p99_ms'), 1)} | {fmt(max((r['max_ms'] or 0) for r in rows), 1)} | "
            f"{sum(r['upstream_still_open'] for r in rows)} | "
            f"{sum(r['upstream_completed'] for r in rows)} |"
        )
    lines += [
        "",
        "Time from the client's close (FIN, as a browser tab does) to the upstream noticing its "
        "connection drop. The target: every upstream stream aborted within a second. streamchat "
        "runs this scenario restarted with `RESUME_GRACE_SECONDS=0`, so the figure is the abort "
        "with grace 0; with the default grace (30 s) a turn whose client left goes on, by "
        "design, waiting for the client to resume, and is aborted when the grace runs out.",
        "",
    ]
    return lines


def _resume_table(data: Report, names: list[str]) -> list[str]:
    plan, res = data.plan, data.results["resume"].get("drop", {})
    lines = [
        f"## 6. Resume: {plan.resume_clients} streams drop their connection and reconnect with "
        f"`Last-Event-ID` ({plan.resume_tokens}-token replies, upstream paced at "
        f"{plan.lat_pace_ms:g} ms)",
        "",
        "| server | resumed | first replayed event p50 | p99 | max | events checked | lost | "
        "repeated | without terminal event | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rows = [r for r in res.get(name, []) if "failed" not in r]
        if not rows:
            continue
        lines.append(
            f"| {name} | {sum(r['resumed'] for r in rows)} | "
            f"{fmt(med(rows, 'resume_p50_ms'), 2)} ms | {fmt(med(rows, 'resume_p99_ms'), 2)} ms | "
            f"{fmt(max((r['resume_max_ms'] or 0) for r in rows), 2)} ms | "
            f"{sum(r['events'] for r in rows):,} | {sum(r['lost'] for r in rows)} | "
            f"{sum(r['repeated'] for r in rows)} | {sum(r['unterminated'] for r in rows)} | "
            f"{sum(r['failures'] for r in rows)} |"
        )
    kinds = _failure_kinds(res, names)
    lines += [
        "",
        *kinds,
        "Each client starts a turn (its own `conversationId`; starts spread over one reply's "
        "length), reads 3-20 events, notes the last `id:`, closes its connection (FIN), waits "
        "50-250 ms (so the first event after the reconnect is a replay, not the next token), "
        "then sends `GET /api/conversation/{id}/stream` with `Last-Event-ID` on a new connection "
        f"and reads to the end ({plan.resume_rounds} of these rounds per client and trial). The "
        "time is from sending the reconnect request to reading the first replayed event (the "
        "TCP connect before it is not counted); the target is p99 under 10 ms. The `id:`s of both "
        "connections are checked: every event of the turn exactly once (*lost*, *repeated*: "
        "both should be 0), the terminal event last. Only streamchat (on each store) is in this "
        "table: the floor and the peers have no resume.",
        "",
    ]
    return lines


def _failure_kinds(res: dict[str, Any], names: list[str]) -> list[str]:
    """What the failed resumes got instead (`HTTP 204`: the server found nothing to resume)."""
    lines = []
    for name in names:
        kinds: dict[str, int] = {}
        for row in res.get(name, []):
            for kind, count in row.get("failure_kinds", {}).items():
                kinds[kind] = kinds.get(kind, 0) + count
        if kinds:
            listed = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
            lines.append(f"Failed resumes of {name}: {listed}.")
            if "HTTP 204" in kinds:
                lines.append(
                    "(`204`: the server had nothing to resume for that id, so the client missed "
                    "the rest of its turn.)"
                )
    return [*lines, ""] if lines else []


def _has_both(res: dict[str, Any], other: str = MEMORY) -> bool:
    """Both stores ran in a scenario the store sections quote (not scenario 12: its own table
    has them)."""
    return any(
        DEFAULT in table and other in table
        for name, scenario in res.items()
        if name != "shared"
        for table in scenario.values()
        if isinstance(table, dict)
    )


def _store_rows(data: Report, other: str) -> list[tuple[str, str, float | None, float | None]]:
    """The figures of streamchat (SQLite) and of `other`, side by side, where both have one."""
    res = data.results
    rows: list[tuple[str, str, float | None, float | None]] = []

    def add(label: str, scenario: str, key: str, field_: str, unit: str = " ms") -> None:
        table = res.get(scenario, {}).get(key, {})
        if DEFAULT in table and other in table:
            rows.append((label, unit, med(table[DEFAULT], field_), med(table[other], field_)))

    clients = data.plan.lat200_clients
    add("throughput: events/s", "throughput", "text", "events_per_s", "")
    add("throughput: CPU ms / 1k events", "throughput", "text", "cpu_ms_per_1k", "")
    add(f"{clients} paced streams: TTFB p50", "latency", "c200", "ttfb_p50")
    add(f"{clients} paced streams: TTFB p99", "latency", "c200", "ttfb_p99")
    add(f"{clients} paced streams: token delay p50", "latency", "c200", "delay_p50")
    add(f"{clients} paced streams: token delay p99", "latency", "c200", "delay_p99")
    add("scale: KiB per open stream", "scale", "open", "kib_per_stream", "")
    add("abort: p99", "abort", "leave", "p99_ms")
    add("resume: first replayed event p50", "resume", "drop", "resume_p50_ms")
    add("resume: first replayed event p99", "resume", "drop", "resume_p99_ms")
    return rows


def _store_table(data: Report) -> list[str]:
    """streamchat's default SQLite store beside the memory store, figure by figure."""
    lines = [
        "## The store: SQLite (the default) against memory",
        "",
        f"| figure | {DEFAULT} (SQLite) | {MEMORY} | SQLite {X} memory |",
        "|---|---:|---:|---:|",
    ]
    for label, unit, sqlite, memory in _store_rows(data, MEMORY):
        digits = 2 if unit else 1  # milliseconds to the hundredth; counts and CPU to a tenth
        lines.append(
            f"| {label} | {_unit(sqlite, digits, unit)} | {_unit(memory, digits, unit)} | "
            f"{ratio(sqlite, memory)} |"
        )
    lines += [
        "",
        "The same figures as above, for the two stores side by side: what keeping conversations "
        "in SQLite (a write at each turn's start and end, on the store's worker thread) costs "
        "against keeping them in memory.",
        "",
    ]
    return lines


def _met(ok: bool | None) -> str:
    return DASH if ok is None else ("met" if ok else "**not met**")


def _redis_section(data: Report) -> list[str]:
    """Issue 10's targets for the Redis store, its figures beside SQLite's, its Redis costs."""
    res = data.results
    tp = res.get("throughput", {}).get("text", {})
    c200 = res.get("latency", {}).get("c200", {})
    resume = res.get("resume", {}).get("drop", {}).get(REDIS, [])
    eps, f_eps = med(tp.get(REDIS, []), "events_per_s"), med(tp.get(FLOOR, []), "events_per_s")
    times = eps / f_eps if eps is not None and f_eps else None
    base = c200.get("upstream (direct)", [])
    extra: dict[str, float | None] = {}
    for q in ("p50", "p99"):
        redis, sqlite = (
            med(c200.get(REDIS, []), f"delay_{q}"),
            med(c200.get(DEFAULT, []), f"delay_{q}"),
        )
        extra[q] = _minus(redis, sqlite)
    added = _minus(med(c200.get(REDIS, []), "delay_p99"), med(base, "delay_p99"))
    r99 = med(resume, "resume_p99_ms")
    clients = data.plan.lat200_clients
    lines = [
        "## The store: Redis (several processes) against SQLite",
        "",
        f"`{REDIS}` is streamchat with `STORE_URL=redis://...` on a `redis-server` the harness "
        "started (no persistence), pinned to core 1 with the upstream and the load client: Redis "
        "is a service of its own, as in a deployment, so its CPU is not in streamchat's CPU per "
        "event; it is shown apart below and counted in the core-1 load.",
        "",
        "| target (issue 10) | measured | |",
        "|---|---:|---|",
        f"| throughput at least {REDIS_FLOOR_RATIO:.1f}{X} the floor's | "
        f"{fmt(times, 2) + X if times is not None else DASH} | "
        f"{_met(None if times is None else times >= REDIS_FLOOR_RATIO)} |",
        f"| token delay p99 at {clients} paced streams at most {REDIS_EXTRA_P99_MS:g} ms over "
        f"SQLite's | {_signed(extra['p99'])} (p50: {_signed(extra['p50'])}; added over the "
        f"upstream: {fmt(added, 2)} ms) | "
        f"{_met(None if extra['p99'] is None else extra['p99'] <= REDIS_EXTRA_P99_MS)} |",
        f"| resume: first replayed event p99 under {RESUME_P99_MS:g} ms | "
        f"{fmt(r99, 2)} ms ({sum(r.get('lost', 0) for r in resume if 'failed' not in r)} lost, "
        f"{sum(r.get('failures', 0) for r in resume if 'failed' not in r)} failed) | "
        f"{_met(None if r99 is None else r99 < RESUME_P99_MS)} |",
        "",
    ]
    rows = _store_rows(data, REDIS)
    if rows:
        lines += [
            f"| figure | {DEFAULT} (SQLite) | {REDIS} | Redis {X} SQLite |",
            "|---|---:|---:|---:|",
        ]
        for label, unit, sqlite, redis in rows:
            digits = 2 if unit else 1
            lines.append(
                f"| {label} | {_unit(sqlite, digits, unit)} | {_unit(redis, digits, unit)} | "
                f"{ratio(redis, sqlite)} |"
            )
        side = med(tp.get(REDIS, []), "side_cpu_ms_per_1k")
        if side is not None:
            lines.append(
                f"| throughput: Redis's own CPU ms / 1k events | {DASH} | {fmt(side, 1)} | {DASH} |"
            )
        lines += [
            "",
            "The figures of scenarios 1-6 for the two stores side by side. A turn on Redis writes "
            "its events to a Redis Stream as it goes (the new events of every running turn in "
            "one script call, at most every 50 ms) so that any process can resume it, and keeps a "
            "lease and a liveness key alive; on SQLite a turn writes its start, each tool round "
            "and its end.",
            "",
        ]
    return lines


def _unit(value: float | None, digits: int, unit: str) -> str:
    return DASH if value is None else f"{fmt(value, digits)}{unit}"


def _signed(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f} ms"


def _roundtrip_table(data: Report) -> list[str]:
    res = data.results.get("roundtrips", {}).get("turns", {})
    labels = {
        "text": "plain text: the reply in one upstream write",
        "text-paced": "plain text: one token per upstream read, 20 ms apart",
        "tools": "tool round trip: `add`, then the text (2 upstream calls), unpaced",
    }
    lines = [
        "## 7. Redis round trips per turn",
        "",
        "| turn | turns | round trips / turn | commands sent / turn | commands run in Redis / "
        "turn | new connections | commands sent, per turn |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    idle = 0.0
    for kind, label in labels.items():
        rows = [r for r in res.get(kind, []) if "failed" not in r]
        if not rows:
            continue
        names: dict[str, float] = {}
        for row in rows:
            for name, n in row.get("commands", {}).items():
                names[name] = names.get(name, 0.0) + n / len(rows)
        top = ", ".join(
            f"{name} {n:.1f}" for name, n in sorted(names.items(), key=lambda kv: -kv[1])
        )
        idle = max(idle, max(r.get("idle_round_trips_per_s", 0.0) for r in rows))
        tokens = rows[0].get("tokens")
        lines.append(
            f"| {label}; {tokens} tokens | {sum(r['turns'] for r in rows)} | "
            f"{fmt(med(rows, 'round_trips_per_turn'), 1)} | "
            f"{fmt(med(rows, 'commands_per_turn'), 1)} | "
            f"{fmt(med(rows, 'redis_commands_per_turn'), 1)} | "
            f"{sum(r.get('connections_opened', 0) for r in rows)} | {top} |"
        )
    lines += [
        "",
        "Counted by a relay between a streamchat process of its own and Redis (not used in any "
        "timed figure): a round trip starts with a command sent on a connection where every "
        "command before it has had its reply, so a pipeline is one round trip however many "
        "commands it holds. *Commands sent* are the RESP commands the process sent "
        "(`EVALSHA`: one of streamchat's scripts: begin, write, renew, release); *run in "
        "Redis* adds the commands those scripts run "
        "(`INFO commandstats`). Each turn starts a new conversation; a round of turns before "
        "the count opens the process's connections, so their set-up is mostly not counted (*new "
        "connections*: opened during the count, each with a few round trips of its own). "
        f"Round trips in the second measured while the process was idle: {idle:.0f}.",
        "",
    ]
    return lines


def _nginx_table(data: Report) -> list[str]:
    res = data.results.get("nginx", {})
    table = res.get("throughput", {})
    names = list(table)
    direct = med(table.get(names[0], []), "events_per_s") if names else None
    lines = [
        f"## 8. Two processes behind nginx: {data.plan.tp_clients} clients, back-to-back "
        f"{data.plan.tp_tokens}-token streams",
        "",
        f"| path | events/s | {X} one process direct | streamchat CPU ms / 1k events | "
        "streamchat CPU (a / b) | Redis + nginx CPU ms / 1k events | core-1 load | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        rows = [r for r in table[name] if "failed" not in r]
        if not rows:
            lines.append(f"| {name} | failed: {table[name][0].get('failed', '')} | | | | | | |")
            continue
        eps = med(rows, "events_per_s")
        each = [median([r["server_cpu_utils"][i] for r in rows]) for i in range(2)]
        split = " / ".join(f"{fmt(_pc(u), 0)}%" for u in each)
        lines.append(
            f"| {name} | {fmt(eps, 0)} | {ratio(eps, direct)} | "
            f"{fmt(med(rows, 'cpu_ms_per_1k'), 1)} | "
            f"{split} | {fmt(med(rows, 'side_cpu_ms_per_1k'), 1)} | "
            f"{fmt(_pc(med(rows, 'core1_util')), 0)}% | {sum(r.get('errors', 0) for r in rows)} |"
        )
    resumes = res.get("resume", {})
    for name, trials in resumes.items():
        rows = [r for r in trials if "failed" not in r]
        if rows:
            lines += [
                "",
                f"Resumes through nginx ({name}; scenario 6's clients, so about half of the "
                "reconnects land on the process that is not running the turn): "
                f"{sum(r['resumed'] for r in rows)} resumed, first replayed event p50 "
                f"{fmt(med(rows, 'resume_p50_ms'), 2)} ms, p99 "
                f"{fmt(med(rows, 'resume_p99_ms'), 2)} ms; "
                f"{sum(r['events'] for r in rows):,} events checked, "
                f"{sum(r['lost'] for r in rows)} lost, {sum(r['repeated'] for r in rows)} "
                f"repeated, {sum(r['unterminated'] for r in rows)} without their terminal event, "
                f"{sum(r['failures'] for r in rows)} failed.",
            ]
            lines += [line for line in _failure_kinds({name: rows}, [name]) if line]
    lines += [
        "",
        "Two streamchat processes (`a`, `b`) on one Redis, nginx in front with README.md's "
        "configuration (round robin, `proxy_buffering off`), taken from the README as written "
        "with only its addresses changed. *One process, direct*: the clients connect to `a`. "
        "*nginx, one process*: the same configuration with both of its `server` lines on `a`, "
        "so every request takes the nginx hop to one process. *nginx, two processes*: round "
        "robin over `a` and `b`. Placement on this 2-core machine: `a` and `b` both on core 0 "
        "(the core one server has in every other scenario), nginx and Redis on core 1 with the "
        "upstream and the load client. So the pair has no more CPU than one process, and cannot "
        "be faster: the ratio shows what a second process and the nginx hop cost, while the "
        "service is spread over two processes that either can take over. With a core (or a "
        "machine) per process, and Redis and nginx with room of their own, the pair's ceiling "
        "is twice one process's; this machine cannot show that. On a busy shared machine, two "
        "processes on one core get a larger share of it against other work than one process "
        "does (the scheduler shares a core per thread), so events/s above 1.00"
        f"{X} here is the machine, not streamchat: compare the CPU per 1k events, and the "
        "*streamchat CPU* column (how much of core 0 each process had).",
        "",
    ]
    return lines


PROTOCOL_REQUESTS = {
    NATIVE: '`POST /api/stream {"message"}`',
    "ai-sdk": '`POST /api/chat {"id": <new>, "messages": [<UI message>]}`',
    "openai": '`POST /v1/chat/completions {"model", "messages", "stream": true}`',
    "openai-kept": "the same with `X-Conversation-Id: <new>` (streamchat keeps the history)",
    "ag-ui": '`POST /api/agui {"threadId": <new>, "runId", "messages"}`',
}


def _protocol_table(data: Report) -> list[str]:
    """Issue 12: each protocol's throughput against the native dialect's, on one server."""
    plan, lines = data.plan, []
    for server, table in data.results["protocols"].items():
        native = [r for r in table.get(NATIVE, []) if "failed" not in r]
        n_tps, n_cpu = med(native, "tokens_per_s"), med(native, "cpu_ms_per_1k_tokens")
        lines += [
            f"## 9. The protocols: {server}, {plan.tp_clients} clients, back-to-back "
            f"{plan.tp_tokens}-token replies asked in each protocol in turn",
            "",
            f"| protocol | request | frames / reply | frames/s | tokens/s | {X} native | "
            f"tokens/s, upstream's count | CPU ms / 1k tokens | {X} native | server CPU | "
            f"at least {PROTOCOL_RATIO:.1f}{X} native | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for protocol, trials in table.items():
            rows = [r for r in trials if "failed" not in r]
            if not rows:
                failed = trials[0].get("failed", "") if trials else ""
                lines.append(f"| {protocol} | failed: {failed} | | | | | | | | | | |")
                continue
            tps, cpu = med(rows, "tokens_per_s"), med(rows, "cpu_ms_per_1k_tokens")
            errors = sum(r.get("errors", 0) for r in rows)
            met = (
                DASH
                if protocol == NATIVE or tps is None or not n_tps
                else _met(tps >= PROTOCOL_RATIO * n_tps and errors == 0)
            )
            lines.append(
                f"| {protocol} | {PROTOCOL_REQUESTS.get(protocol, '')} | "
                f"{fmt(med(rows, 'frames_per_stream'), 1)} | {fmt(med(rows, 'events_per_s'), 0)} | "
                f"{fmt(tps, 0)} | {ratio(tps, n_tps)} | "
                f"{fmt(med(rows, 'upstream_tokens_per_s'), 0)} | {fmt(cpu, 1)} | "
                f"{ratio(cpu, n_cpu)} | {fmt(_pc(med(rows, 'server_cpu_util')), 0)}% | {met} | "
                f"{errors} |"
            )
        kinds: dict[str, int] = {}
        for trials in table.values():
            for row in trials:
                for kind, count in row.get("error_kinds", {}).items():
                    kinds[kind] = kinds.get(kind, 0) + count
        if kinds:
            listed = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
            lines += ["", f"Errors by kind: {listed}."]
        lines += [
            "",
            "Scenario 1's load on one server, the protocols alternating within each repeat. Each "
            "protocol wraps the same tokens in frames of its own (the AI SDK: a `text-delta` "
            "part per token plus its `start`, step, text and `finish` parts and `[DONE]`; "
            "OpenAI: a chunk per token plus its role, finish and usage chunks and `[DONE]`; "
            "AG-UI: a `TEXT_MESSAGE_CONTENT` per token between `RUN_STARTED` and "
            "`RUN_FINISHED`), so frames per second do not compare. *tokens/s* does: the "
            "upstream's tokens delivered to the clients, frames/s times the tokens of a reply "
            f"({plan.tp_tokens}) over the frames of a whole reply (*frames / reply*, measured). "
            "*Upstream's count* is the replies the upstream served in the same window times "
            "their tokens, a check on it (it counts a reply when it is written, so it moves in "
            "steps of a reply). CPU is the server's, per 1,000 upstream tokens. The target "
            f"(issue 12): every protocol at least {PROTOCOL_RATIO:.1f}{X} the native dialect's "
            "tokens/s, with no errors. *Server CPU* is the share of its core the server had: "
            "when it differs much between rows, the machine, not the protocol, set the "
            "tokens/s, and the CPU per 1,000 tokens is the figure to read. "
            "*openai* sends no conversation id, so streamchat keeps "
            "nothing (the request's `messages` are the whole history); *openai-kept* is the "
            "same request with `X-Conversation-Id`, stored as the other protocols' turns are.",
            "",
        ]
    return lines


def _config_section(data: Report, names: list[str]) -> list[str]:
    """Issues 11 and 15: streamchat with callers checked, and as it would run in production."""
    res = data.results
    tp = res.get("throughput", {}).get("text", {})
    c200 = res.get("latency", {}).get("c200", {})
    base99 = med(c200.get("upstream (direct)", []), "delay_p99")
    order = [DEFAULT, KEYS, REDIS, PROD, FLOOR]
    shown = [n for n in order if n in names and (n in tp or n in c200)]
    if not shown:
        return []
    eps = {n: med(tp.get(n, []), "events_per_s") for n in shown}
    cpu = {n: med(tp.get(n, []), "cpu_ms_per_1k") for n in shown}
    clients = data.plan.lat200_clients
    lines = [
        "## Configurations: callers checked, and production",
        "",
        f"| server | events/s | {X} floor | {X} {DEFAULT} | CPU ms / 1k events | "
        f"{X} {DEFAULT} | server CPU | Redis CPU ms / 1k events | added token delay p99, "
        f"{clients} streams | added TTFB p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in shown:
        rows = [r for r in tp.get(name, []) if "failed" not in r]
        lat = [r for r in c200.get(name, []) if "failed" not in r]
        added = _minus(med(lat, "delay_p99"), base99)
        ttfb = _minus(med(lat, "ttfb_p99"), med(c200.get("upstream (direct)", []), "ttfb_p99"))
        errors = sum(r.get("errors", 0) for r in rows) + sum(r.get("errors", 0) for r in lat)
        lines.append(
            f"| {name} | {fmt(eps[name], 0)} | {ratio(eps[name], eps.get(FLOOR))} | "
            f"{ratio(eps[name], eps.get(DEFAULT))} | {fmt(cpu[name], 1)} | "
            f"{ratio(cpu[name], cpu.get(DEFAULT))} | "
            f"{_unit(_pc(med(rows, 'server_cpu_util')), 0, '%')} | "
            f"{fmt(med(rows, 'side_cpu_ms_per_1k'), 1)} | {_unit(added, 2, ' ms')} | "
            f"{_unit(ttfb, 2, ' ms')} | {errors} |"
        )
    targets: list[str] = []
    keys, default = eps.get(KEYS), eps.get(DEFAULT)
    if keys is not None and default:
        change = (keys / default - 1) * 100
        targets.append(
            f"| auth and limit checks cost at most a few per cent (issue 11): `{KEYS}` at least "
            f"{KEYS_RATIO:.2f}{X} `{DEFAULT}`'s events/s | {keys / default:.2f}{X} "
            f"({change:+.1f}% events/s; CPU per event {ratio(cpu.get(KEYS), cpu.get(DEFAULT))}) "
            f"| {_met(keys >= KEYS_RATIO * default)} |"
        )
    prod, floor = eps.get(PROD), eps.get(FLOOR)
    if prod is not None and floor:
        targets.append(
            f"| production at least {PROD_FLOOR_RATIO:.1f}{X} the floor (issue 15): `{PROD}` | "
            f"{prod / floor:.2f}{X} (CPU per event {ratio(cpu.get(PROD), cpu.get(FLOOR))}) | "
            f"{_met(prod >= PROD_FLOOR_RATIO * floor)} |"
        )
    redis = eps.get(REDIS)
    if prod is not None and redis:
        targets.append(
            f"| what auth, limits and metrics cost on Redis: `{PROD}` against `{REDIS}` | "
            f"{prod / redis:.2f}{X} events/s, CPU per event "
            f"{ratio(cpu.get(PROD), cpu.get(REDIS))} | {DASH} |"
        )
    if targets:
        lines += ["", "| target | measured | |", "|---|---|---|", *targets]
    lines += [
        "",
        f"The figures of scenarios 1 and 2 for each configuration side by side. `{KEYS}` is "
        f"`{DEFAULT}` with `AUTH=keys` (every request carries `Authorization: Bearer <key>`) and "
        "every limit set, high enough never to refuse a turn, so every check runs on every "
        f"turn; against `{DEFAULT}` it reads what checking callers costs. `{PROD}` adds the "
        "Redis store (limits counted in Redis) and metrics; its Redis is a service of its own "
        "on core 1, so Redis's CPU is the column apart, not in the server's CPU per event. "
        "*Added* latency is the server's p99 minus the upstream's own (scenario 2's first "
        "row). Errors (a `401` or a `429` would be one) are scenario 1's and 2's together. "
        "*Server CPU* is the share of its core the server had in scenario 1: well under 100% "
        "means the machine was busy with other work and events/s say little; read the CPU per "
        "1,000 events. A difference of a few per cent is within the noise of one run on a "
        "shared machine: repeat before reading one.",
        "",
    ]
    return lines


def _side_by_side(data: Report, shown: list[str]) -> dict[str, dict[str, float | None]]:
    """Scenario 1's and 2's figures of these servers, latency as added over the upstream."""
    res = data.results
    tp = res.get("throughput", {}).get("text", {})
    c200 = res.get("latency", {}).get("c200", {})
    base = {k: med(c200.get("upstream (direct)", []), k) for k in ("delay_p99", "delay_p50")}
    base |= {k: med(c200.get("upstream (direct)", []), k) for k in ("ttfb_p99", "ttfb_p50")}
    figures: dict[str, dict[str, float | None]] = {}
    for name in shown:
        rows = [r for r in tp.get(name, []) if "failed" not in r]
        lat = [r for r in c200.get(name, []) if "failed" not in r]
        errors = sum(r.get("errors", 0) for r in rows) + sum(r.get("errors", 0) for r in lat)
        figures[name] = {
            "eps": med(rows, "events_per_s"),
            "cpu": med(rows, "cpu_ms_per_1k"),
            "util": _pc(med(rows, "server_cpu_util")),
            "side": med(rows, "side_cpu_ms_per_1k"),
            "spans": med(rows, "spans_per_turn"),
            "traced": med(rows, "turns_traced"),
            "errors": float(errors),
            **{k: _minus(med(lat, k), b) for k, b in base.items()},
        }
    return figures


BUSY_SHARE = 90.0  # per cent of its core: a server with less was sharing it with other work


def _cost_sentence(what: str, on: dict[str, float | None], off: dict[str, float | None]) -> str:
    """The cost of a feature in throughput, read from the CPU per event, and the events/s.

    On a core of its own a server's events/s go as the inverse of its CPU per event, and the
    CPU per event holds when the machine is busy, where the events/s follow the share of the
    core the server got: so the CPU per event states the cost, the events/s are beside it.
    """
    if not on["cpu"] or not off["cpu"]:
        return ""
    cost = (1 - off["cpu"] / on["cpu"]) * 100
    said = (
        f"**{what} costs {cost:.1f}% of throughput**, read from the CPU per event "
        f"({fmt(on['cpu'], 1)} against {fmt(off['cpu'], 1)} ms per 1,000 events, "
        f"{ratio(on['cpu'], off['cpu'])}: on a core of its own the server serves "
        f"{off['cpu'] / on['cpu']:.2f}{X} the events)."
    )
    if on["eps"] is None or not off["eps"]:
        return said
    said += (
        f" Events/s measured in this run: {ratio(on['eps'], off['eps'])} "
        f"({fmt(on['eps'], 0)} against {fmt(off['eps'], 0)})"
    )
    on_share, off_share = on["util"], off["util"]
    if on_share is None or off_share is None:
        return said + "."
    low, high = sorted((on_share, off_share))
    if low < BUSY_SHARE or high - low > 10:
        return said + (
            f", with {fmt(on['util'], 0)}% and {fmt(off['util'], 0)}% of the server's core: "
            "the machine was busy with other work, so that ratio is mostly the machine's."
        )
    return said + f", each with at least {BUSY_SHARE:.0f}% of the server's core."


def _observability_section(data: Report) -> list[str]:
    """Issue 14: what the metrics and the traces cost, each against the same server without."""
    tp = data.results.get("throughput", {}).get("text", {})
    c200 = data.results.get("latency", {}).get("c200", {})
    clients = data.plan.lat200_clients
    ran = {n for n, why in data.servers.items() if why is None}
    lines = ["## Observability: what metrics and traces cost", ""]
    latency = (
        f"added token delay p50 / p99, {clients} streams | added TTFB p50 / p99, {clients} streams"
    )
    if {NOMETRICS, DEFAULT} <= ran and NOMETRICS in tp:
        f = _side_by_side(data, [DEFAULT, NOMETRICS])
        on, off = f[DEFAULT], f[NOMETRICS]
        lines += [
            "### Metrics",
            "",
            f"| server | metrics | events/s | CPU ms / 1k events | server CPU | {latency} | "
            "errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, state in ((DEFAULT, "on (the default)"), (NOMETRICS, "off (`METRICS=0`)")):
            lines.append(_observed_row(name, state, f[name]))
        if on["eps"] is not None and off["eps"]:
            times = on["eps"] / off["eps"]
            lines += [
                "",
                "| target (issue 14) | measured | |",
                "|---|---|---|",
                f"| throughput with metrics on at least {METRICS_RATIO:.2f}{X} metrics off | "
                f"{times:.2f}{X} (CPU per event {ratio(on['cpu'], off['cpu'])}) | "
                f"{_met(times >= METRICS_RATIO)} |",
                "",
                _cost_sentence("Metrics on", on, off),
            ]
        lines.append("")
    if {OTEL, DEFAULT} <= ran and (OTEL in tp or OTEL in c200):
        lines += _tracing_table(data, _side_by_side(data, [DEFAULT, OTEL]), latency)
    elif OTEL in data.servers:
        why = data.servers[OTEL] or f"`{DEFAULT}` was not in the run to compare it with"
        lines += ["### Tracing", "", f"Not measured: {why}.", ""]
    return lines


def _observed_row(name: str, state: str, f: dict[str, float | None]) -> str:
    return (
        f"| {name} | {state} | {fmt(f['eps'], 0)} | {fmt(f['cpu'], 1)} | "
        f"{_unit(f['util'], 0, '%')} | {fmt(f['delay_p50'], 2)} / "
        f"{_unit(f['delay_p99'], 2, ' ms')} | {fmt(f['ttfb_p50'], 2)} / "
        f"{_unit(f['ttfb_p99'], 2, ' ms')} | {fmt(f['errors'], 0)} |"
    )


def _tracing_table(data: Report, f: dict[str, dict[str, float | None]], latency: str) -> list[str]:
    off, on = f[DEFAULT], f[OTEL]
    lines = [
        "### Tracing",
        "",
        f"| server | tracing | events/s | CPU ms / 1k events | server CPU | {latency} | "
        f"errors | sink CPU ms / 1k events | spans exported / turn | turns traced |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, state, fig in (
        (DEFAULT, "off (the default)", off),
        (OTEL, "on: OTLP/HTTP, every span", on),
    ):
        traced = name == OTEL
        lines.append(
            _observed_row(name, state, fig)
            + (
                f" {fmt(fig['side'], 2)} | {fmt(fig['spans'], 2)} | "
                f"{_unit(_pc(fig['traced']), 0, '%')} |"
                if traced
                else f" {DASH} | {DASH} | {DASH} |"
            )
        )
    delta = {k: _minus(on[k], off[k]) for k in ("delay_p50", "delay_p99", "ttfb_p50", "ttfb_p99")}
    lines += [
        "",
        f"| {OTEL} against {DEFAULT} | |",
        "|---|---:|",
        f"| events/s | {ratio(on['eps'], off['eps'])} |",
        f"| CPU per event | {ratio(on['cpu'], off['cpu'])} |",
        f"| token delay at {data.plan.lat200_clients} streams, p50 / p99 | "
        f"{_signed(delta['delay_p50'])} / {_signed(delta['delay_p99'])} |",
        f"| TTFB at {data.plan.lat200_clients} streams, p50 / p99 | "
        f"{_signed(delta['ttfb_p50'])} / {_signed(delta['ttfb_p99'])} |",
        "",
    ]
    if on["cpu"] and off["cpu"]:
        lines += [
            _cost_sentence("Tracing on", on, off)
            + " Every span sampled and exported; no target is set for tracing (issue 14: "
            "report the cost).",
            "",
        ]
    lines += _sink_lines(data)
    lines += [
        f"`{DEFAULT}` is the server as it ships, with tracing off: without "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` nothing of OpenTelemetry is imported, no tracing "
        "middleware is installed and the provider is not wrapped; what is left of tracing on the "
        "hot path is an `is None` check per turn and per tool call. So tracing off costs "
        "nothing to measure, and "
        f"the off row is `{DEFAULT}` itself. `{OTEL}` is the same server with the endpoint set to "
        "an OTLP/HTTP sink the harness runs on core 1 (`bench/otlpsink.py`: it answers every "
        "export at once with an empty `200`, so the exporter never waits or retries; its CPU is "
        "the *sink CPU* column, not in the server's CPU per event), and the SDK's defaults: "
        "every span sampled, a batch span processor exporting from a thread of its own in the "
        "server's process (that thread's CPU is in the server's figure). *Spans exported / "
        "turn*: the spans whose end time fell in scenario 1's measured window, as the sink "
        "decoded them once the exporter had sent them, over the streams that finished in the "
        f"window; *turns traced*: the turns' own `invoke_agent` spans over the same streams "
        "(100%: no turn's spans were dropped). *Added* latency is over the upstream's own "
        "figures; the second table is tracing on minus off. A difference of a few per cent is "
        "within the noise of one run on a shared machine: repeat before reading one.",
        "",
    ]
    return lines


def _sink_lines(data: Report) -> list[str]:
    sink = data.tracing.get("sink")
    if not sink:
        return []
    spans = sink.get("spans")
    size = sink.get("bytes", 0)
    said = []
    if spans is None:
        said.append(
            f"The sink received {sink.get('requests', 0):,} exports, {size / 1e6:.1f} MB (it "
            "could not decode spans: opentelemetry-proto is not in the venv)."
        )
    else:
        names = ", ".join(
            f"`{n}` {c:,}"
            for n, c in sorted(sink.get("by_name", {}).items(), key=lambda kv: -kv[1])
        )
        said.append(
            f"Over the whole run the sink received {sink.get('requests', 0):,} exports, "
            f"{size / 1e6:.1f} MB, {spans:,} spans "
            f"({size / spans if spans else 0:.0f} bytes a span; by name: {names})."
            + (
                f" {sink['undecoded']} exports could not be decoded."
                if sink.get("undecoded")
                else ""
            )
        )
    warnings = data.tracing.get("queue_full_warnings")
    if warnings:
        said.append(
            f"The server's log says {warnings} times that the span queue was full: spans were "
            "dropped, and the cost above is of fewer spans than the turns made."
        )
    elif warnings == 0:
        said.append("The server's log has no warning of a full span queue (no span dropped).")
    banner = data.tracing.get("banner")
    if banner:
        said.append(f"Its start-up line: `{banner}`.")
    return [" ".join(said), ""]


def _raw_section(data: Report) -> list[str]:
    lines = ["## Raw figures per trial", "", "<details><summary>every trial</summary>", ""]
    for scenario, tables in data.results.items():
        for key, table in tables.items():
            rows = table.items() if isinstance(table, dict) else [(key, table)]
            for name, trials in rows:
                for i, trial in enumerate(trials):
                    lines.append(f"- {scenario}/{key} {name} #{i + 1}: {brief(trial)}")
    lines += ["", "</details>", ""]
    return lines
