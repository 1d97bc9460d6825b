"""The toolset protocol, and the combined set a turn sees.

A toolset lists its tools (name, description, JSON schema of the arguments) and calls them by
name with the model's raw arguments. Every tool failure comes back as `ToolFailure`, a message
for the model and the user, never an exception that ends the turn. `CombinedToolset` puts
several toolsets behind the one interface the pipeline uses (`schemas`, `run`,
`requires_approval`) and never lets one tool silently replace another: a name that is taken
gets its toolset's name as a prefix, and the log says so.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamchat.tools.registry import ToolFailure

log = logging.getLogger(__name__)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")

__all__ = ["CombinedToolset", "ToolContext", "ToolFailure", "ToolSpec", "Tools", "Toolset"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who the call is for: lets a toolset use per-caller credentials."""

    owner: str
    conversation_id: str
    turn: int


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    requires_approval: bool = False

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools[]` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class Toolset(Protocol):
    name: str

    def tools(self) -> Sequence[ToolSpec]:
        """The tools it has now (an MCP server that is down has the ones it had)."""
        ...

    async def call(self, name: str, arguments: str, context: ToolContext | None) -> str:
        """Run a tool; its result as text, or `ToolFailure`."""
        ...


class Tools(Protocol):
    """What a turn's pipeline needs of its tools."""

    def schemas(self) -> list[dict[str, Any]]: ...

    def requires_approval(self, name: str) -> bool: ...

    async def run(self, name: str, arguments: str, context: ToolContext | None = None) -> str: ...


@dataclass
class _Entry:
    toolset: Toolset
    original: str  # the toolset's own name for the tool
    spec: ToolSpec


@dataclass
class CombinedToolset:
    """Several toolsets as one; `approval` patterns (fnmatch) add to what each tool asks."""

    toolsets: list[Toolset]
    approval: list[str] = field(default_factory=list)
    _entries: dict[str, _Entry] = field(default_factory=dict, init=False)
    _schemas: list[dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the combined list (at start-up, and when an MCP server's tools change)."""
        entries: dict[str, _Entry] = {}
        for toolset in self.toolsets:
            for spec in toolset.tools():
                name = spec.name
                if name in entries:
                    name = _NOT_NAME.sub("_", f"{toolset.name}_{spec.name}")[:64]
                    log.warning(
                        "tool %r of %s clashes with one of %s: it is offered as %r",
                        spec.name,
                        toolset.name,
                        entries[spec.name].toolset.name,
                        name,
                    )
                    if name in entries:
                        log.warning(
                            "tool %r of %s left out: its name is taken", spec.name, toolset.name
                        )
                        continue
                approval = spec.requires_approval or any(
                    fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(spec.name, p)
                    for p in self.approval
                )
                entries[name] = _Entry(
                    toolset,
                    spec.name,
                    ToolSpec(name, spec.description, spec.parameters, approval),
                )
        self._entries = entries
        self._schemas = [entry.spec.schema() for entry in entries.values()]

    def names(self, toolset: Toolset | None = None) -> list[str]:
        """The names offered to the model (of one toolset's tools, when given)."""
        return [n for n, e in self._entries.items() if toolset is None or e.toolset is toolset]

    def schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    def requires_approval(self, name: str) -> bool:
        entry = self._entries.get(name)
        return entry is not None and entry.spec.requires_approval

    async def run(self, name: str, arguments: str, context: ToolContext | None = None) -> str:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self._entries) or "none"
            raise ToolFailure(f"Unknown tool {name!r}. Available tools: {known}")
        return await entry.toolset.call(entry.original, arguments, context)
