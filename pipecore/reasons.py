"""Reasons: a key and its arguments, which the page tells in its own language."""

from typing import Any

# {"key": str, "args": {str: str | int | float | bool | None}}: docs/protocol.md lists the keys.
Reason = dict[str, Any]


def reason(key: str, **args: Any) -> Reason:
    """A run outcome or a verdict as a key and its arguments (docs/protocol.md); the event's
    `message` keeps the English text."""
    return {"key": key, "args": args}
