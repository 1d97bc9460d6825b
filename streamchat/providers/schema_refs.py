"""JSON schemas with their `$ref`s written out in place, for grammar-constrained decoding.

A tool's parameters may define shared parts under `$defs` and point at them with
`{"$ref": "#/$defs/Name"}` (pydantic and the MCP SDK write nested models that way). Put inside
a larger schema, such a reference no longer resolves against its own root, so the grammar for
"a call of any offered tool" is built from copies with every reference replaced by what it
names. A reference that points at itself, directly or not, is cut at a depth and allows any
object there: grammars cannot recurse through it anyway.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 8


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its local references (`#/$defs/...`, `#/definitions/...`) inlined."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    resolved = _resolve(schema, defs, 0)
    assert isinstance(resolved, dict)
    resolved.pop("$defs", None)
    resolved.pop("definitions", None)
    return resolved


def _resolve(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
        target = defs.get(ref.rsplit("/", 1)[1])
        if target is None or depth >= MAX_DEPTH:
            return {"type": "object"}
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **rest}, defs, depth + 1)
    return {
        key: _resolve(value, defs, depth)
        for key, value in node.items()
        if key not in ("$defs", "definitions")
    }
