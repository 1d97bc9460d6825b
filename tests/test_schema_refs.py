"""Tool schemas with `$ref`s inlined, so the grammar of a tool call can be built from them."""

from __future__ import annotations

from typing import Any

from streamchat.providers.local_prompt import tools_schema
from streamchat.providers.schema_refs import inline_refs


def test_references_into_defs_are_written_out_in_place() -> None:
    schema = {
        "type": "object",
        "properties": {"trip": {"$ref": "#/$defs/Trip"}},
        "$defs": {
            "Trip": {
                "type": "object",
                "properties": {"stops": {"type": "array", "items": {"$ref": "#/$defs/Stop"}}},
            },
            "Stop": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }

    inlined = inline_refs(schema)

    assert "$defs" not in inlined
    stops = inlined["properties"]["trip"]["properties"]["stops"]
    assert stops["items"] == {"type": "object", "properties": {"city": {"type": "string"}}}
    assert "$ref" not in repr(inlined)


def test_a_reference_to_itself_is_cut_at_a_depth() -> None:
    schema: dict[str, Any] = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }

    inlined = inline_refs(schema)

    depth, node = 0, inlined
    while "properties" in node:
        node, depth = node["properties"]["child"], depth + 1
    assert node == {"type": "object"}
    assert depth == 8


def test_the_grammar_schema_of_tool_calls_has_no_dangling_references() -> None:
    parameters = {
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/X"}},
        "$defs": {"X": {"type": "integer"}},
    }
    tools = [
        {"type": "function", "function": {"name": "f", "description": "", "parameters": parameters}}
    ]

    schema = tools_schema(tools)

    assert schema["anyOf"][0]["properties"]["arguments"]["properties"]["x"] == {"type": "integer"}
