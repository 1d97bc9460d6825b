"""Real nginx, configured exactly as the README shows, round robin in front of two processes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, AppProcess, StartApp, free_port, parse_events
from tests.fake_upstream import FakeUpstream, paced, text_reply
from tests.redis_server import RedisServer
from tests.test_turns import Reader


def readme_nginx_config() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README shows one nginx configuration"
    return str(blocks[0])


class Nginx:
    """nginx in the foreground with its files under one folder; stopped with the test."""

    def __init__(self, folder: Path, config: str) -> None:
        self.folder = folder
        folder.mkdir()
        (folder / "nginx.conf").write_text(f"daemon off;\n{config}")
        self._log = open(folder / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [nginx_path() or "nginx", "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def errors(self) -> str:
        return (self.folder / "stderr.log").read_text(errors="replace")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(5)
        self._log.close()


def nginx_path() -> str | None:
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


@pytest.fixture
async def behind_nginx(
    start_app: StartApp, own_redis: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[str, AppProcess, AppProcess]]:
    if nginx_path() is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    env = {"STORE_URL": own_redis.url, "RESUME_GRACE_SECONDS": "10"}
    a, b = await start_app(**env), await start_app(**env)
    port = free_port()
    config = readme_nginx_config()
    config = config.replace("127.0.0.1:5282", a.url.removeprefix("http://"))
    config = config.replace("127.0.0.1:5283", b.url.removeprefix("http://"))
    config = config.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    nginx = Nginx(tmp_path / "nginx", config)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{url}/health") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError(nginx.errors())
        yield url, a, b
    finally:
        nginx.stop()


async def test_a_turn_through_nginx_streams_token_by_token(
    behind_nginx: tuple[str, AppProcess, AppProcess], upstream: FakeUpstream
) -> None:
    url, _, _ = behind_nginx
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(20)]), 0.1))
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session:
        body = {"message": "count slowly", "conversationId": "c"}
        async with session.post(f"{url}/api/stream", json=body) as response:
            reader = Reader(response)
            started = time.monotonic()
            while True:
                event = await reader.next()
                arrivals.append(time.monotonic() - started)
                if event["type"] == "completion":
                    break

    # Not buffered: the first word arrives long before the last one is written.
    assert arrivals[0] < 1.0
    assert arrivals[-1] - arrivals[0] > 1.0
    assert len(arrivals) == 21


async def test_a_resume_through_nginx_lands_anywhere_and_misses_nothing(
    behind_nginx: tuple[str, AppProcess, AppProcess], upstream: FakeUpstream
) -> None:
    url, _, _ = behind_nginx
    upstream.add(paced(text_reply(*[f"w{i} " for i in range(30)]), 0.03))
    async with aiohttp.ClientSession() as session:
        body = {"message": "count", "conversationId": "c"}
        first = Reader(await session.post(f"{url}/api/stream", json=body))
        seen = [await first.next() for _ in range(3)]
        first.response.close()
        rests = []
        for _ in range(2):  # round robin: one of these lands on the other process
            headers = {"Last-Event-ID": first.ids[2]}
            async with session.get(f"{url}/api/conversation/c/stream", headers=headers) as got:
                rests.append(parse_events(await got.read()))

    for rest in rests:
        everything = seen + rest
        assert [e["chunkIndex"] for e in everything] == list(range(len(everything)))
        assert everything[-1]["type"] == "completion"
