"""The processes of a benchmark run: the fake upstream, the servers under test, Redis and nginx,
and what /proc says about them (CPU seconds and resident memory, summed over a process and its
children).

Every process is started here in its own session, pinned with `taskset`, with its output in
`bench/out/logs/`, and stopped by its own process-group id when the run ends.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadclient import HOST, Target

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
LOGS = OUT / "logs"
# The project's venv; a checkout without one of its own (a git worktree) runs everything on the
# interpreter that runs the harness, e.g. another checkout's `.venv/bin/python bench/run.py`.
VENV_PY = ROOT / ".venv" / "bin" / "python"
if not VENV_PY.exists():
    VENV_PY = Path(sys.executable)
LITELLM = BENCH / ".peers" / "litellm-venv" / "bin" / "litellm"
VERCEL = BENCH / "peers" / "vercel"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
LOAD_CORE = "1"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=BENCH.parent, capture_output=True, text=True, timeout=10
    ).stdout


def git_state() -> str:
    """The commit measured, and which tracked files differed from it (the tree is measured)."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        changed = _git("status", "--porcelain", "--untracked-files=no").split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    files = [line[3:] for line in changed if line.strip()]
    if not files:
        return f"commit {head}, clean tree"
    return f"commit {head} plus uncommitted changes to " + ", ".join(f"`{f}`" for f in files)


def snapshot_streamchat() -> Path:
    """A copy of streamchat's code as it is now, for the whole run to measure one version.

    The owners may commit while a run goes on, and a server restarted mid-run (the scale
    scenario restarts every server) would otherwise load newer code than the trials before it.
    `python app.py` in the copy imports the copied package: the script's folder comes first on
    sys.path, ahead of the editable install's finder.
    """
    dest = OUT / f"snapshot-{os.getpid()}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(
        ROOT / "streamchat", dest / "streamchat", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    return dest


def snapshot_commit(rev: str) -> tuple[Path, str]:
    """streamchat's code at commit `rev` (its folder, its short hash), for a run to measure it
    beside the working tree's: two versions in one run, under the same load and noise."""
    git = ["git", "-C", str(ROOT)]
    short = subprocess.run(
        [*git, "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = OUT / f"baseline-{os.getpid()}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        [*git, "archive", short, "streamchat", "app.py"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest, short


def pinned(argv: list[str], core: str | None) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", core, *argv]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (bounded)."""
    pids, i = [pid], 0
    while i < len(pids) and len(pids) < 512:
        current = pids[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pids.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def _cpu_ticks(stat_path: str) -> int:
    """utime + stime from a /proc `stat` file (fields 14 and 15); 0 once it is gone."""
    try:
        with open(stat_path) as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree (all threads), from /proc/<pid>/stat."""
    return sum(_cpu_ticks(f"/proc/{p}/stat") for p in process_tree(pid)) / CLK_TCK


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process's main thread alone (its event loop, for a server)."""
    return _cpu_ticks(f"/proc/{pid}/task/{pid}/stat") / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of a process tree, from /proc/<pid>/status."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def open_fds(pid: int) -> int:
    """File descriptors a process tree holds open (sockets included), from /proc/<pid>/fd."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def fd_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a process, from /proc/<pid>/limits (None: unlimited, unknown)."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    return None


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http(method: str, port: int, path: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


def _spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    log.write(f"\n=== {time.strftime('%H:%M:%S')} in {cwd}: {' '.join(argv)}\n".encode())
    log.flush()
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


class _Service:
    """A process of the harness's own (the upstream, the span sink, Redis, nginx) on a free
    port of the load core."""

    def __init__(self, core: str | None) -> None:
        self.core = core
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Upstream(_Service):
    """bench/upstream.py in its own process, pinned to the load core."""

    def start(self) -> None:
        argv = [str(VENV_PY), str(BENCH / "upstream.py"), "--port", str(self.port)]
        self.proc = _spawn("upstream", pinned(argv, self.core), dict(os.environ), BENCH)
        _wait_ready(self.proc, self.port, "/health", 20.0)

    def base(self, prefix: str = "/v1") -> str:
        return f"http://{HOST}:{self.port}{prefix}"

    def configure(self, **config: Any) -> None:
        http("POST", self.port, "/_bench/config", config)

    def reset(self) -> None:
        http("POST", self.port, "/_bench/reset", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http("GET", self.port, "/_bench/stats")
        return result

    def target(self) -> Target:
        return Target("upstream (direct)", self.port, "/v1/chat/completions", "openai")


class OtlpSink(_Service):
    """bench/otlpsink.py in its own process, pinned to the load core: where spans go."""

    def start(self) -> None:
        argv = [str(VENV_PY), str(BENCH / "otlpsink.py"), "--port", str(self.port)]
        self.proc = _spawn("otlpsink", pinned(argv, self.core), _base_env(), BENCH)
        _wait_ready(self.proc, self.port, "/health", 20.0)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http("GET", self.port, "/_bench/stats")
        return result

    def spans(self, start_ns: int, end_ns: int) -> dict[str, int]:
        """Spans by name that ended in this wall-clock window (once they have been exported)."""
        query = f"/_bench/spans?start_ns={start_ns}&end_ns={end_ns}"
        result: dict[str, int] = http("GET", self.port, query)
        return result


def otel_missing(code: Path) -> str | None:
    """Why streamchat cannot trace here (None: it can): the setting, and the `otel` extra."""
    if "OTEL_EXPORTER_OTLP_ENDPOINT" not in settings_names(code):
        return "OTEL_EXPORTER_OTLP_ENDPOINT is not a setting of this streamchat"
    modules = (
        "opentelemetry.sdk.trace",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.instrumentation.aiohttp_client",
    )
    probe = subprocess.run(
        [str(VENV_PY), "-c", "; ".join(f"import {m}" for m in modules)],
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return "the otel extra is not installed in the venv (pip install 'streamchat[otel]')"
    return None


# --- Redis and nginx, for the servers that keep their conversations in Redis ------------------


def redis_missing() -> str | None:
    """Why streamchat cannot run on Redis here (None: it can)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    probe = subprocess.run([str(VENV_PY), "-c", "import redis"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return "redis-py is not installed in the venv (pip install 'streamchat[redis]')"
    return None


def _resp_command(args: tuple[str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _resp_reply(reader: Any) -> Any:
    line: bytes = reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"Redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_resp_reply(reader) for _ in range(size)]
    raise RuntimeError(f"unexpected reply from Redis: {line!r}")


class RedisServer(_Service):
    """redis-server on a free loopback port for the whole run; nothing is saved to disk.

    The harness talks to it with a few lines of RESP (PING, FLUSHDB, INFO), so it needs no client
    library of its own.
    """

    def start(self) -> None:
        folder = OUT / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
        argv += ["--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(folder)]
        self.proc = _spawn("redis", pinned(argv, self.core), dict(os.environ), folder)
        deadline = time.monotonic() + 10.0
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            with contextlib.suppress(OSError, RuntimeError):
                if self.call("PING") == "PONG":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 10 s")
            time.sleep(0.05)

    def url(self, db: int = 0, port: int | None = None) -> str:
        return f"redis://{HOST}:{port or self.port}/{db}"

    def call(self, *args: str, db: int | None = None) -> Any:
        commands: list[tuple[str, ...]] = [("SELECT", str(db))] if db is not None else []
        commands.append(args)
        with socket.create_connection((HOST, self.port), timeout=10.0) as sock:
            sock.sendall(b"".join(_resp_command(c) for c in commands))
            with sock.makefile("rb") as reader:
                replies = [_resp_reply(reader) for _ in commands]
        return replies[-1]

    def flush(self, db: int) -> None:
        self.call("FLUSHDB", db=db)

    def commandstats(self) -> dict[str, int]:
        """Commands Redis has run since it started, by name (those run by scripts included)."""
        calls: dict[str, int] = {}
        for line in str(self.call("INFO", "commandstats")).splitlines():
            found = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if found:
                calls[found[1]] = int(found[2])
        return calls


def nginx_path() -> str | None:
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


# The addresses in README.md's nginx configuration: the two streamchat processes, and nginx.
README_BACKENDS = ("127.0.0.1:5282", "127.0.0.1:5283")
README_LISTEN = "127.0.0.1:8080"


def readme_nginx_config() -> str:
    """The nginx configuration README.md shows ("Running several processes"), as written there."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", readme, flags=re.S)
    if len(blocks) != 1:
        raise RuntimeError(f"README.md shows {len(blocks)} nginx configurations, not one")
    config = str(blocks[0])
    for address in (*README_BACKENDS, README_LISTEN):
        if address not in config:
            raise RuntimeError(f"README.md's nginx configuration no longer names {address}")
    return config


class Nginx(_Service):
    """nginx in the foreground with README.md's configuration, on ports of its own.

    Only the addresses change: the README's two backends become `backends` (the same port twice
    sends every request to one process, through the same configuration), its listen address a
    free port. Its files live in `bench/out/<name>/`.
    """

    def __init__(self, name: str, backends: tuple[int, int], core: str | None) -> None:
        super().__init__(core)
        self.name = name
        self.backends = backends

    def start(self) -> None:
        executable = nginx_path()
        if executable is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
        swap = {
            README_BACKENDS[0]: f"{HOST}:{self.backends[0]}",
            README_BACKENDS[1]: f"{HOST}:{self.backends[1]}",
            README_LISTEN: f"{HOST}:{self.port}",
        }
        config = re.sub(
            "|".join(re.escape(a) for a in swap), lambda m: swap[m[0]], readme_nginx_config()
        )
        folder = OUT / self.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "nginx.conf").write_text(f"daemon off;\n{config}")
        argv = [executable, "-p", str(folder), "-c", str(folder / "nginx.conf")]
        self.proc = _spawn(self.name, pinned(argv, self.core), dict(os.environ), folder)
        _wait_ready(self.proc, self.port, "/health", 15.0)

    def target(self, name: str) -> Target:
        return Target(name, self.port, "/api/stream", "streamchat")


@dataclass
class Server:
    """A server under test: how to start it and how to ask it for a stream."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    health: str
    path: str
    style: str
    headers: tuple[tuple[str, str], ...] = ()
    startup_timeout: float = 30.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    skipped: str | None = None  # why this server is left out of the run
    about: str = ""  # its configuration, as the report states it
    opt_in: bool = False  # runs only when named in --servers
    resumable: bool = False  # a turn outlives its connection: join and resume routes, grace
    tools: bool = False  # it runs a tool loop of its own (streamchat's servers and the floor)
    # Emptied before every start: whatever state the server keeps on disk starts afresh.
    home: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # settings one scenario changes
    # The Redis its store lives in (database `redis_db`), emptied before every start as `home`.
    redis: RedisServer | None = None
    redis_db: int = 0
    sink: OtlpSink | None = None  # where its spans go (streamchat-otel)

    @property
    def keeps_turns(self) -> bool:
        """A turn whose client left goes on for the resume grace instead of being aborted."""
        return self.resumable and self.overrides.get("RESUME_GRACE_SECONDS") != "0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> Target:
        return Target(self.name, self.port, self.path, self.style, self.headers)

    @property
    def side_pids(self) -> tuple[int, ...]:
        """Processes that do part of its work elsewhere (its Redis, its trace sink): their CPU
        is reported too."""
        found = []
        if self.redis is not None and self.redis.running:
            found.append(self.redis.pid)
        if self.sink is not None and self.sink.running:
            found.append(self.sink.pid)
        return tuple(found)

    def start(self, core: str | None) -> None:
        if self.home is not None:
            _fresh_home(self.home)
        if self.redis is not None:
            self.redis.flush(self.redis_db)
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        env = {**self.env, **self.overrides}
        self.proc = _spawn(self.name, pinned(argv, core), env, self.cwd)
        _wait_ready(self.proc, self.port, self.health, self.startup_timeout)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def restart(self, core: str | None) -> None:
        self.stop()
        self.start(core)


def _fresh_home(home: Path) -> None:
    """An empty working folder for a streamchat process, with an empty `.env`.

    The SQLite file of the default store (`sqlite:///streamchat.db`, relative to the working
    folder) then starts empty on every start: a restart neither fails on nor inherits the rows
    of the trials before it. And app.py, which reads the nearest `.env` from its working folder
    upwards, finds this empty one before a developer's own `.env` above `bench/`.
    """
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / ".env").write_text("")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} during start-up (see log)")
        try:
            http("GET", port, path, timeout=2.0)
            return
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f} s: {last}")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "LITELLM_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def settings_names(code: Path) -> set[str]:
    """The environment variables streamchat reads: the fields of its `Settings`, upper-cased."""
    tree = ast.parse((code / "streamchat" / "settings.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return {
                item.target.id.upper()
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    return set()


REDIS_DB = 0  # streamchat-redis; the scenarios with processes of their own use others
PROD_DB = 3  # streamchat-prod (1 and 2: the nginx and round-trip scenarios' processes)
BASELINE_REDIS_DB = 4  # streamchat-redis@<commit>
# Per-owner limits high enough never to refuse the bench's load (its busiest scenarios start a
# few thousand turns a minute and hold about 1,000 at once), so that every check still runs on
# every turn: turns per minute and concurrent turns at the start, tokens and cost at the end.
LIMITS = {
    "LIMIT_TURNS_PER_MINUTE": "1000000",
    "LIMIT_CONCURRENT_TURNS": "100000",
    "LIMIT_TOKENS_PER_DAY": "1000000000000",
    "LIMIT_COST_PER_DAY": "1000000",
    "ALLOWED_MODELS": "bench/model",  # the bench's model (DEFAULT_MODEL), so every request passes
}


def keys_settings(key: str) -> dict[str, str]:
    """`AUTH=keys` with one owner, `bench`, and every limit set: what checking callers costs."""
    return {"AUTH": "keys", "API_KEYS": f"bench:{key}", **LIMITS}


# A fixed piece of pure-Python work (dict stores and lookups), timed three times, the fastest
# printed in ms: how fast the core runs Python at that moment. On a shared machine the same
# code runs up to half again as slowly at times, whoever is measured.
PROBE = """
import time
def work():
    table, total = {}, 0
    for i in range(200_000):
        table[i & 1023] = i
        total += table.get((i * 5) & 1023, 0)
    return total
best = min(
    (lambda t0: (work(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3)
)
print(f"{best * 1000:.2f}")
"""


def core_probe_ms(core: int | str | None) -> float | None:
    """The probe's time on `core` (None: unpinned), or None when it could not run."""
    command = [str(VENV_PY), "-c", PROBE]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return float(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def baseline_name(commit: str, store: str = "") -> str:
    """`streamchat@<commit>`, or with a store `streamchat-redis@<commit>`."""
    return f"streamchat{'-' + store if store else ''}@{commit}"


def streamchat_server(
    name: str, streamchat_dir: Path, env: dict[str, str], about: str = "", opt_in: bool = False
) -> Server:
    """A `python app.py` of the run's copy of streamchat, in an empty working folder of its own."""
    home = streamchat_dir / f"home-{name}"
    return Server(
        name,
        [str(VENV_PY), str(streamchat_dir / "app.py"), "--host", HOST, "--port", "{port}"],
        env,
        home,
        "/health",
        "/api/stream",
        "streamchat",
        about=about,
        opt_in=opt_in,
        resumable=True,
        tools=True,
        home=home,
    )


def streamchat_env(upstream: Upstream, streamchat_dir: Path) -> dict[str, str]:
    """The environment of a streamchat process: none of the caller's own streamchat settings,
    and none of OpenTelemetry's (`OTEL_BSP_*`, sampling, ...): the SDK's defaults are measured."""
    mine = settings_names(streamchat_dir)
    env = {k: v for k, v in _base_env().items() if k not in mine and not k.startswith("OTEL_")}
    env.update(
        OPENROUTER_API_KEY="bench-key",
        OPENROUTER_BASE_URL=upstream.base("/api/v1"),
        DEFAULT_MODEL="bench/model",
    )
    return env


def build_servers(
    upstream: Upstream,
    wanted: list[str],
    streamchat_dir: Path,
    redis: RedisServer | None = None,
    no_redis: str | None = None,
    sink: OtlpSink | None = None,
    no_sink: str | None = None,
    baseline: tuple[Path, str] | None = None,
) -> list[Server]:
    """streamchat, the floor, and the peers that bench/setup installed (or why they are missing).

    `redis` is the run's Redis for `streamchat-redis` and `streamchat-prod` (None: they are
    left out, for the reason `no_redis`); `sink` the OTLP/HTTP sink `streamchat-otel` sends its
    spans to (None: left out, for the reason `no_sink`). `streamchat-memory`,
    `streamchat-nometrics`, `streamchat-otel`, `streamchat-keys` and `streamchat-prod` run only
    when named in `wanted`. `baseline` (a folder of streamchat's code, its commit) adds
    `streamchat@<commit>`: that commit with the default settings, measured beside `streamchat`.
    """
    servers: list[Server] = []
    # None of the caller's own streamchat settings (STORE_URL, RESUME_GRACE_SECONDS, ...).
    env = streamchat_env(upstream, streamchat_dir)
    key = secrets.token_hex(16)  # 32 characters: the one API key of the servers with AUTH=keys
    bearer = (("Authorization", f"Bearer {key}"),)
    known = settings_names(streamchat_dir)
    # Metrics may not be a setting of the streamchat measured yet: passed anyway (an unknown
    # variable is ignored), and the report says whether it was one.
    metrics = {"METRICS": "1", "METRICS_TOKEN": secrets.token_hex(16)}
    metrics_note = "`METRICS=1`" + (
        "" if "METRICS" in known else " (not a setting of this streamchat yet: ignored)"
    )
    redis_url = redis.url(REDIS_DB) if redis is not None else ""
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint if sink is not None else "",
        "OTEL_SERVICE_NAME": "streamchat-bench",
    }
    prod_url = redis.url(PROD_DB) if redis is not None else ""
    # streamchat as it ships: every setting at its default but the upstream's, so the SQLite
    # store and the resume grace are measured. `python <snapshot>/app.py` imports the copied
    # package (the script's folder comes first on sys.path) whatever the working folder.
    # (name, settings changed from the defaults, its Redis database or None, the report's
    # description, runs only when named, headers its requests carry)
    for name, changed, db, about, opt_in, headers in (
        (
            "streamchat",
            {},
            None,
            "default settings: the SQLite store (`sqlite:///streamchat.db`, a new file for "
            "every start of the server), resume grace 30 s",
            False,
            (),
        ),
        (
            "streamchat-redis",
            {"STORE_URL": redis_url},
            REDIS_DB,
            "`STORE_URL=redis://127.0.0.1:<port>/0` on a `redis-server` the harness starts "
            "(no persistence, pinned with the load; emptied before every start of the server), "
            "otherwise the defaults: what several processes cost one",
            False,
            (),
        ),
        (
            "streamchat-memory",
            {"STORE_URL": "memory://"},
            None,
            "`STORE_URL=memory://`, otherwise the defaults: what the SQLite store costs",
            True,
            (),
        ),
        (
            "streamchat-nometrics",
            {"METRICS": "0"},
            None,
            "`METRICS=0`, otherwise the defaults: what the Prometheus metrics cost",
            True,
            (),
        ),
        (
            "streamchat-otel",
            otel,
            None,
            "`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>` (an OTLP/HTTP sink the "
            "harness starts, pinned with the load, answering every export at once), "
            "`OTEL_SERVICE_NAME=streamchat-bench`, the SDK's own defaults (every span sampled, "
            "a batch span processor), otherwise the defaults: what tracing costs",
            True,
            (),
        ),
        (
            "streamchat-keys",
            keys_settings(key),
            None,
            "the defaults (SQLite) plus `AUTH=keys` (one key, sent as `Authorization: Bearer`) "
            "and every limit set (turns per minute, concurrent turns, tokens and cost per day, "
            "high enough never to refuse; `ALLOWED_MODELS=bench/model`): what checking callers "
            "costs",
            True,
            bearer,
        ),
        (
            "streamchat-prod",
            {"STORE_URL": prod_url, **keys_settings(key), **metrics},
            PROD_DB,
            f"the production configuration: `STORE_URL=redis://127.0.0.1:<port>/{PROD_DB}` "
            "(the harness's `redis-server`, emptied before every start; the limits are counted "
            "there too), `AUTH=keys`, every limit set as `streamchat-keys`, " + metrics_note,
            True,
            bearer,
        ),
    ):
        server = streamchat_server(name, streamchat_dir, {**env, **changed}, about, opt_in)
        server.headers = headers
        if name == "streamchat-otel":
            server.sink = sink
            if sink is None:
                server.skipped = no_sink or "no trace sink"
        if db is not None:
            server.redis, server.redis_db = redis, db
            if redis is None:
                server.skipped = no_redis or "no Redis"
        servers.append(server)
        if name == "streamchat" and baseline is not None:
            folder, commit = baseline
            servers.append(
                streamchat_server(
                    baseline_name(commit),
                    folder,
                    streamchat_env(upstream, folder),
                    f"the default settings, at commit {commit} (`--baseline`): `streamchat` "
                    "against an earlier version of itself, in one run",
                )
            )
        if name == "streamchat-redis" and baseline is not None:
            folder, commit = baseline
            earlier = streamchat_server(
                baseline_name(commit, "redis"),
                folder,
                {
                    **streamchat_env(upstream, folder),
                    "STORE_URL": redis.url(BASELINE_REDIS_DB) if redis is not None else "",
                },
                f"`streamchat-redis` at commit {commit} (`--baseline`; Redis database "
                f"{BASELINE_REDIS_DB}): runs when `streamchat-redis` does",
            )
            earlier.redis, earlier.redis_db = redis, BASELINE_REDIS_DB
            if redis is None:
                earlier.skipped = no_redis or "no Redis"
            servers.append(earlier)
    servers.append(
        Server(
            "floor",
            [
                str(VENV_PY),
                str(BENCH / "floor.py"),
                "--port",
                "{port}",
                "--upstream",
                upstream.base(),
            ],
            _base_env(),
            BENCH,
            "/health",
            "/api/stream",
            "streamchat",
            tools=True,
        )
    )
    vercel_env = _base_env()
    vercel_env.update(OPENROUTER_BASE_URL=upstream.base(), OPENROUTER_API_KEY="bench-key")
    vercel = Server(
        "vercel-ai-sdk",
        ["node", str(VERCEL / "server.mjs")],
        vercel_env,
        VERCEL,
        "/health",
        "/api/stream",
        "streamchat",
    )
    vercel.env["PORT"] = str(vercel.port)
    vercel.env["HOST"] = HOST
    if shutil.which("node") is None:
        vercel.skipped = "node is not installed"
    elif not (VERCEL / "node_modules" / "ai").is_dir():
        vercel.skipped = "not installed: run bench/setup (npm install in bench/peers/vercel)"
    servers.append(vercel)

    master = "sk-bench-" + secrets.token_hex(24)
    litellm_env = _base_env()
    litellm_env.update(
        BENCH_UPSTREAM_BASE=upstream.base(),
        LITELLM_MASTER_KEY=master,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
    )
    litellm = Server(
        "litellm-proxy",
        [
            str(LITELLM),
            "--config",
            str(BENCH / "peers/litellm/config.yaml"),
            "--host",
            HOST,
            "--port",
            "{port}",
        ],
        litellm_env,
        BENCH / "peers" / "litellm",
        "/health/liveliness",
        "/v1/chat/completions",
        "openai",
        (("Authorization", f"Bearer {master}"),),
        startup_timeout=90.0,
    )
    if not LITELLM.exists():
        litellm.skipped = "not installed: run bench/setup (litellm[proxy] in bench/.peers)"
    servers.append(litellm)
    return [s for s in servers if s.name in wanted or (not wanted and not s.opt_in)]


def versions() -> dict[str, str]:
    """What the run compared: the peers' versions, as installed."""
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for name, path in (
        ("ai", VERCEL / "node_modules" / "ai" / "package.json"),
        (
            "@ai-sdk/openai-compatible",
            VERCEL / "node_modules/@ai-sdk/openai-compatible/package.json",
        ),
    ):
        with contextlib.suppress(OSError, ValueError):
            found[name] = json.loads(path.read_text())["version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    dist = BENCH / ".peers" / "litellm-venv" / "lib"
    for meta in dist.glob("python*/site-packages/litellm-*.dist-info/METADATA"):
        for line in meta.read_text().splitlines():
            if line.startswith("Version:"):
                found["litellm"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(VENV_PY), "-c", "import aiohttp; print(aiohttp.__version__)"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        found["aiohttp"] = out.stdout.strip()
    return found
