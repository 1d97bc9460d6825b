"""The four built-in calculator tools (`add`, `subtract`, `multiply`, `divide`): plain
arithmetic, never `eval`."""

from __future__ import annotations

from streamchat.tools.registry import ToolFailure, ToolRegistry


def add(a: float, b: float) -> float:
    """Add two numbers: a + b."""
    return a + b


def subtract(a: float, b: float) -> float:
    """Subtract the second number from the first: a - b."""
    return a - b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers: a * b."""
    return a * b


def divide(a: float, b: float) -> float:
    """Divide the first number by the second: a / b."""
    if b == 0:
        raise ToolFailure("Cannot divide by zero")
    return a / b


def register_calculator(registry: ToolRegistry) -> None:
    for function in (add, subtract, multiply, divide):
        registry.register(function, inline=True)  # arithmetic: no thread needed
