"""JSON from the network with bounded nesting, checked before the parser sees it.

The C JSON scanner guards its recursion with the interpreter's recursion limit, not the C stack: where that
limit is raised (hypothesis and torch.compile raise it), a 1 MiB run of `[[[[…` from a hostile peer overflowed
the C stack and killed the process with SIGSEGV instead of raising. So depth is counted first, by one regex
pass that skips string literals (brackets inside strings do not nest)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64  # our documents nest a few levels; anything deeper is an attack
_TOKENS_BYTES = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOKENS_TEXT = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    """JSON nested deeper than MAX_JSON_DEPTH (a ValueError, so callers' JSON error handling covers it)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        super().__init__(f"JSON nested deeper than {depth} levels")


def check_depth(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    tokens = _TOKENS_BYTES if isinstance(data, bytes) else _TOKENS_TEXT
    depth = 0
    for match in tokens.finditer(data):  # type: ignore[arg-type]
        first = match.group()[:1]
        if first in (b"[", b"{", "[", "{"):
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(max_depth)
        elif first in (b"]", b"}", "]", "}"):
            depth -= 1


def loads(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads after the depth check; raises ValueError (JsonTooDeep or JSONDecodeError) for bad input."""
    check_depth(data, max_depth)
    return json.loads(data)
