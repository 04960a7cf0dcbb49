"""Plain text helpers shared by library modules and commands (no click, no I/O)."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``"1 error"``, ``"2 errors"``, ``"3 classes"``: ``count`` and ``noun``, made plural (``-es`` after
    ``s``, ``x``, ``z`` or ``sh``, else ``-s``; ``epoch`` -> ``epochs``) unless ``count`` is 1."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x", "z", "sh")) else f"{count} {noun}s"
