"""Settings: read once from the environment, every knob documented in .env.example."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from streamchat.settings import DEFAULT_SYSTEM_PROMPT, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})

    assert settings.openrouter_base_url == "https://openrouter.ai/api/v1"
    assert settings.default_model == "google/gemini-2.5-flash"
    assert (settings.host, settings.port) == ("127.0.0.1", 5282)
    assert settings.max_message_chars == 32_000
    assert settings.ping_interval_seconds == 15
    assert settings.system_prompt == DEFAULT_SYSTEM_PROMPT


def test_environment_values_are_typed_and_empty_ones_keep_the_default() -> None:
    settings = Settings.from_env(
        {"PORT": "8080", "UPSTREAM_READ_TIMEOUT_SECONDS": "2.5", "DEFAULT_MODEL": "", "HOST": "::"}
    )

    assert settings.port == 8080
    assert settings.upstream_read_timeout_seconds == 2.5
    assert settings.default_model == "google/gemini-2.5-flash"
    assert settings.host == "::"
    assert settings.chat_completions_url == "https://openrouter.ai/api/v1/chat/completions"


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"PORT": "eighty"}, "PORT must be a number"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"MAX_CONVERSATIONS": "0"}, "MAX_CONVERSATIONS must be at least 1"),
        ({"OPENROUTER_BASE_URL": "openrouter.ai"}, "must start with http"),
        ({"REQUEST_BODY_TIMEOUT_SECONDS": "nan"}, "REQUEST_BODY_TIMEOUT_SECONDS must be a finite"),
        ({"MAX_TURN_SECONDS": "inf"}, "MAX_TURN_SECONDS must be a finite number"),
        ({"PING_INTERVAL_SECONDS": "-1"}, "PING_INTERVAL_SECONDS must not be negative"),
        ({"TOOL_TIMEOUT_SECONDS": "0"}, "TOOL_TIMEOUT_SECONDS must be more than 0"),
        ({"UPSTREAM_READ_TIMEOUT_SECONDS": "0"}, "UPSTREAM_READ_TIMEOUT_SECONDS must be more"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(environ)


def test_every_setting_is_listed_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = {line.split("=")[0] for line in example.splitlines() if "=" in line}

    assert {f.name.upper() for f in fields(Settings)} <= listed


def test_every_number_of_seconds_or_dollars_must_be_finite() -> None:
    # A NaN deadline goes into the event loop's timer heap, where it compares false with every
    # other time: each setting that takes a fraction refuses one, and an infinity too.
    floats = [f.name.upper() for f in fields(Settings) if f.type in (float, "float")]
    assert len(floats) > 10
    for name in floats:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(SettingsError, match=f"{name} must be a finite number"):
                Settings.from_env({name: value})
