"""Artifact ids that stay unique within a conversation.

Both artifact sources (the `<artifact>` tag parser and the code-fence converter) claim ids here,
so an id the model repeats, or leaves out, still names one artifact only.
"""

from __future__ import annotations

import re

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """`hello.py` -> `hello-py`; an empty result becomes `artifact`."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-")[:64] or "artifact"


class ArtifactIds:
    """The ids already used in one conversation; `claim()` hands out a fresh one."""

    def __init__(self, taken: set[str] | None = None) -> None:
        # The caller's set is shared on purpose: it lives with the conversation.
        self.taken = taken if taken is not None else set()
        self._next: dict[str, int] = {}  # where the search for a free suffix resumes

    def claim(self, wanted: str | None, title: str) -> str:
        base = wanted.strip() if wanted and wanted.strip() else slugify(title)
        candidate, n = base, self._next.get(base, 1)
        while candidate in self.taken:
            n += 1
            candidate = f"{base}-{n}"
        self._next[base] = n
        self.taken.add(candidate)
        return candidate
