"""The shape of one streamed chunk of an OpenAI-compatible reply, for msgspec's typed decoder.

Imported only when msgspec is installed (the `fast` extra). `CHUNK_DECODER` reads a `data:` line
in C straight into these structs: the fields streamchat never reads (`object`, `created`,
`provider`, `index`, `logprobs`, ...) are skipped without building a dict or a string for them,
which makes it about six times faster than `json.loads` on a typical OpenRouter chunk. Only the
containers that lead to the fields read are typed (a chunk is an object, `choices` a list of
objects, a `delta` an object or null); every field read is `Any`, so `RoundAssembler` checks its
type itself, with the same messages as on the `json.loads` path. A chunk the typed decoder
refuses (not JSON, a lone surrogate, NaN, a number out of range, a wrong container) is read
again by `json.loads`, which keeps the refusal's exact message or accepts what it accepts.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct
from msgspec.json import Decoder, Encoder

# gc=False: a decoded chunk is a tree that lives for one call; leaving its structs out of the
# garbage collector's tracking is a few percent faster and triggers fewer collections.


class Delta(Struct, gc=False):
    content: Any = None
    tool_calls: Any = None


class Choice(Struct, gc=False):
    delta: Delta | None = None
    finish_reason: Any = None


class Chunk(Struct, gc=False):
    id: Any = None
    model: Any = None
    choices: list[Choice] | None = None
    usage: Any = None
    error: Any = None


CHUNK_DECODER = Decoder(Chunk)

# The request body, in C: a few times faster than json.dumps for a long history. A string it
# cannot encode (a lone surrogate) makes the caller fall back to json.dumps.
BODY_ENCODER = Encoder()
