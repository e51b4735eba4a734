"""JSON from clients, held to what the server can keep and send on: finite numbers, text
that is valid Unicode, bounded nesting."""

import json
import re
from typing import Any

# orjson, which encodes every stored and sent event, refuses nesting deeper than 255.
MAX_DEPTH = 64
# A lone surrogate can only come from a \\uD800–\\uDFFF escape: texts without one skip that check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class ClientJSONError(ValueError):
    """The text is not JSON the server accepts; the message, after the word naming what was
    read ("frame …"), says why."""


def _no_constant(name: str) -> Any:
    raise ClientJSONError(f"holds {name}, which JSON does not allow")


def loads(text: str) -> Any:
    """The JSON value of `text`; ClientJSONError for malformed JSON, NaN or Infinity, a
    string with a lone surrogate (not valid Unicode), or nesting deeper than MAX_DEPTH."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ClientJSONError(f"is nested deeper than {MAX_DEPTH} levels") from None
    except ClientJSONError:
        raise
    except ValueError as exc:
        raise ClientJSONError(f"is not JSON: {exc}") from None
    strings = _SURROGATE_ESCAPE.search(text) is not None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            if strings and isinstance(value, str):
                _unicode(value)
            continue
        if depth > MAX_DEPTH:
            raise ClientJSONError(f"is nested deeper than {MAX_DEPTH} levels")
        for key, item in items:
            if strings and isinstance(key, str):
                _unicode(key)
            if isinstance(item, dict | list) or (strings and isinstance(item, str)):
                stack.append((item, depth + 1))
    return data


def _unicode(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ClientJSONError(
            f"holds a lone surrogate, which is not valid Unicode, in {text[:40]!r}"
        ) from None
