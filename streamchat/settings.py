"""Every knob of the server, read once from the environment (and `.env`, loaded by `app.py`).

`Settings.from_env()` is the only place that reads `os.environ`; everything else receives a
`Settings`. A bad value stops start-up with a message naming the variable, never a traceback
deep inside a request.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from fnmatch import fnmatchcase
from typing import Any

DEFAULT_SYSTEM_PROMPT = """\
You are a helpful assistant behind a chat API.

You have calculator tools: add, subtract, multiply and divide. Use them for arithmetic instead \
of calculating in your head, then state the result.

When the user asks for a complete deliverable (a code file, a script, a configuration file, a \
document), put it in an artifact, exactly like this:

<artifact id="hello-py" type="code" title="hello.py" language="python">
def hello():
    print('Hello, World!')
</artifact>

Use a short, unique id; type is one of code, document, data; title is a file name; language \
is the programming language, if any. Put explanations outside the artifact, and never use \
Markdown code fences for deliverables."""


# The small local model cannot follow the long prompt above (and writes code fences, which
# ARTIFACT_FENCES turns into artifacts): a short prompt also keeps its first token quick.
LOCAL_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer briefly and clearly. Put code in Markdown code fences."
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    # auto: OpenRouter when a key is set, else the embedded local model.
    backend: str = "auto"
    openrouter_api_key: str = dataclasses.field(default="", repr=False)
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    default_model: str = "google/gemini-2.5-flash"
    host: str = "127.0.0.1"
    port: int = 5282
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Request limits.
    max_message_chars: int = 32_000
    max_body_bytes: int = 256 * 1024
    # Tools.
    max_tool_rounds: int = 8
    tool_timeout_seconds: float = 30.0
    # Python modules whose functions become tools (comma-separated), and MCP servers (a JSON
    # file in the mcpServers shape of Claude Desktop and Cursor).
    tools_modules: str = ""
    mcp_config: str = ""
    # Tools whose calls wait for a person (comma-separated names or patterns like send_*).
    approval_required: str = ""
    approval_timeout_seconds: float = 300.0
    # Conversations: sqlite:///<path> (durable, the default) or memory://.
    store_url: str = "sqlite:///streamchat.db"
    # The memory store's bounds.
    conversation_ttl_seconds: float = 3600.0
    max_conversations: int = 10_000
    # Turns: how long a turn waits for a reader to come back, how long a finished turn's events
    # stay for late readers (and how many bytes of them at most), and how long a shutdown waits.
    resume_grace_seconds: float = 30.0
    resume_retention_seconds: float = 300.0
    resume_retention_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 30.0
    # With Redis: how long a conversation stays held by a process that died mid-turn.
    lease_seconds: float = 20.0
    # Seeing what it does (SPEC section 14): GET /metrics (on unless METRICS=0; with a token it
    # needs Authorization: Bearer <token>), OpenTelemetry traces to an OTLP/HTTP endpoint (with
    # the otel extra), and the logs: level, text or json lines, and whether prompts, answers and
    # tool arguments and results may appear in them (never, unless LOG_CONTENT=1).
    metrics: bool = True
    metrics_token: str = dataclasses.field(default="", repr=False)
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "streamchat"
    log_level: str = "INFO"
    log_format: str = "text"
    log_content: bool = False
    # Per-owner limits, each off at 0 (counted in Redis when STORE_URL is redis://, so every
    # process shares them), and the models a request may name (comma-separated fnmatch
    # patterns such as google/*; empty allows any).
    limit_turns_per_minute: int = 0
    limit_concurrent_turns: int = 0
    limit_tokens_per_day: int = 0
    limit_cost_per_day: float = 0.0
    allowed_models: str = ""
    # Callers (SPEC section 10): how they are known (none, keys, jwt, header), and which browser
    # origins and host names may reach the API. Secrets stay out of reprs and logs.
    auth: str = "none"
    api_keys: str = dataclasses.field(default="", repr=False)
    api_keys_file: str = ""
    jwt_secret: str = dataclasses.field(default="", repr=False)
    jwt_public_key: str = ""
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_seconds: float = 30.0
    auth_header: str = "X-Forwarded-User"
    cors_origins: str = ""
    allowed_hosts: str = ""
    # What a client may send and keep: how long a request body may take to arrive (a stalled
    # one gets 408), the stored bytes past which a conversation takes no new turn (413), and
    # the bytes the memory store holds in all (the least recently used idle conversations go).
    request_body_timeout_seconds: float = 10.0
    max_conversation_bytes: int = 2 * 1024 * 1024
    memory_store_max_bytes: int = 256 * 1024 * 1024
    # What an upstream may send: the longest SSE line (or one event's data lines together), the
    # text and tool arguments of one turn's reply, tool calls in one model round, and how long a
    # whole turn may run (0: no deadline; a slow drip outlives UPSTREAM_READ_TIMEOUT_SECONDS).
    max_line_bytes: int = 1024 * 1024
    max_reply_bytes: int = 1024 * 1024
    max_tool_calls_per_round: int = 32
    max_turn_seconds: float = 600.0
    # Upstream.
    upstream_connect_timeout_seconds: float = 10.0
    upstream_read_timeout_seconds: float = 60.0
    upstream_max_retries: int = 2
    upstream_max_retry_wait_seconds: float = 20.0
    # Each open stream holds one upstream connection; 0 is no limit (aiohttp's default is 100).
    upstream_max_connections: int = 0
    app_url: str = "https://github.com/streamchat/streamchat"
    app_title: str = "streamchat"
    # The embedded local model.
    local_model_path: str = ""
    local_context_tokens: int = 4096
    local_max_tokens: int = 1024
    local_threads: int = 0
    local_temperature: float = 0.3
    # Markdown code fences as artifacts: auto is on for the local model, off for OpenRouter.
    artifact_fences: str = "auto"
    # Streaming.
    ping_interval_seconds: float = 15.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from its upper-case environment variable, when set and not empty."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper(), "").strip()
            if raw:
                values[field.name] = _parse(field.name.upper(), raw, field.type)
        for name in ("backend", "artifact_fences", "auth", "log_format"):
            if name in values:
                values[name] = values[name].lower()
        return cls(**values).validated()

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()

    def validated(self) -> Settings:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in (float, "float") and not math.isfinite(value):
                raise SettingsError(f"{field.name.upper()} must be a finite number, not {value!r}")
        for name in (
            "max_message_chars",
            "max_body_bytes",
            "max_conversations",
            "max_conversation_bytes",
            "memory_store_max_bytes",
            "local_context_tokens",
            "local_max_tokens",
            "max_line_bytes",
            "max_reply_bytes",
            "max_tool_calls_per_round",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        for name in (
            "max_tool_rounds",
            "upstream_max_retries",
            "upstream_max_connections",
            "resume_grace_seconds",
            "resume_retention_seconds",
            "resume_retention_bytes",
            "shutdown_grace_seconds",
            "approval_timeout_seconds",
            "limit_turns_per_minute",
            "limit_concurrent_turns",
            "limit_tokens_per_day",
            "limit_cost_per_day",
            "max_turn_seconds",
            "ping_interval_seconds",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must not be negative")
        for name in ("tool_timeout_seconds", "upstream_read_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be more than 0")
        if self.backend not in ("auto", "openrouter", "local"):
            raise SettingsError(f"BACKEND must be auto, openrouter or local, not {self.backend!r}")
        if self.artifact_fences not in ("auto", "on", "off"):
            raise SettingsError(
                f"ARTIFACT_FENCES must be auto, on or off, not {self.artifact_fences!r}"
            )
        patterns = self.allowed_model_patterns
        if patterns and not any(fnmatchcase(self.default_model, p) for p in patterns):
            raise SettingsError(
                f"DEFAULT_MODEL {self.default_model} is not allowed by ALLOWED_MODELS "
                f"({', '.join(patterns)}): add it, or set DEFAULT_MODEL to an allowed model"
            )
        if self.auth not in ("none", "keys", "jwt", "header"):
            raise SettingsError(f"AUTH must be none, keys, jwt or header, not {self.auth!r}")
        if self.jwt_leeway_seconds < 0:
            raise SettingsError("JWT_LEEWAY_SECONDS must not be negative")
        if self.request_body_timeout_seconds <= 0:
            raise SettingsError("REQUEST_BODY_TIMEOUT_SECONDS must be more than 0")
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(
                f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT must be text or json, not {self.log_format!r}")
        endpoint = self.otel_exporter_otlp_endpoint
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise SettingsError("OTEL_EXPORTER_OTLP_ENDPOINT must start with http:// or https://")
        if self.lease_seconds < 1:
            raise SettingsError("LEASE_SECONDS must be at least 1")
        if not 0 < self.port < 65536:
            raise SettingsError(f"PORT must be between 1 and 65535, not {self.port}")
        if not self.openrouter_base_url.startswith(("http://", "https://")):
            raise SettingsError("OPENROUTER_BASE_URL must start with http:// or https://")
        return self

    @property
    def allowed_model_patterns(self) -> tuple[str, ...]:
        """`ALLOWED_MODELS` split at commas; empty when any model is allowed."""
        return tuple(p.strip() for p in self.allowed_models.split(",") if p.strip())

    @property
    def chat_completions_url(self) -> str:
        return self.openrouter_base_url.rstrip("/") + "/chat/completions"


def _parse(name: str, raw: str, kind: object) -> object:
    if kind in (bool, "bool"):
        if raw.lower() not in _TRUE + _FALSE:
            raise SettingsError(f"{name} must be 1 or 0, not {raw!r}")
        return raw.lower() in _TRUE
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    return raw.replace("\\n", "\n") if name == "SYSTEM_PROMPT" else raw
