"""Plain Python functions as a toolset: the calculator, and the modules `TOOLS_MODULES` names.

A module named in `TOOLS_MODULES` is imported at start-up. If it has a `register(registry)`
function, that is called (it registers what it wants, as `register_calculator` does); else
every public function defined in the module itself (not imported into it) becomes a tool, its
schema from its type hints and its description from its docstring.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Sequence

from streamchat.tools.registry import ToolRegistry
from streamchat.toolsets.base import ToolContext, ToolSpec


class FunctionToolset:
    name = "python"

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    def tools(self) -> Sequence[ToolSpec]:
        specs = []
        for tool in self.registry.tools():
            function = tool.schema()["function"]
            specs.append(ToolSpec(tool.name, function["description"], function["parameters"]))
        return specs

    async def call(self, name: str, arguments: str, context: ToolContext | None) -> str:
        return await self.registry.run(name, arguments)


class ToolModuleError(Exception):
    """A module of `TOOLS_MODULES` cannot be used."""


def load_tool_modules(registry: ToolRegistry, modules: Sequence[str]) -> list[str]:
    """Import each module and register its tools; the names registered."""
    before = {tool.name for tool in registry.tools()}
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # "importable from the folder the server starts in"
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ToolModuleError(f"TOOLS_MODULES: cannot import {module_name}: {exc}") from None
        register = getattr(module, "register", None)
        try:
            if callable(register):
                register(registry)
                continue
            for name, function in inspect.getmembers(module, inspect.isfunction):
                if not name.startswith("_") and function.__module__ == module.__name__:
                    registry.register(function)
        except (TypeError, ValueError) as exc:
            raise ToolModuleError(f"TOOLS_MODULES: {module_name}: {exc}") from None
    return [tool.name for tool in registry.tools() if tool.name not in before]
