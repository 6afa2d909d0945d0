"""Request parameters (the form field ``params`` / ``info``): a JSON object, not nested deeper than a limit.

MONAI Label passes them to ``dict.update`` (a list or ``null`` raised a TypeError: 500) and parses them with
``json.loads``, which recurses once per nesting level (10,000 ``[`` raised RecursionError: 500).
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from lib.errors import BadRequest, Refused

MAX_DEPTH = 32
"""Deepest nesting accepted; real parameters are one or two levels deep."""

FINAL_TAG = "final"


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting in JSON ``text``, brackets inside strings ignored; linear, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_params(text: Optional[str], what: str = "params") -> Dict[str, Any]:
    """The JSON object in ``text`` ("" or None: {}); :class:`BadRequest` naming the problem otherwise."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, dict):
        return text
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise BadRequest(f"request {what} are nested {depth} levels deep; at most {MAX_DEPTH} are accepted")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request {what} are not valid JSON ({exc.msg} at character {exc.pos})") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"request {what} are not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"request {what} must be a JSON object such as {{}}, "
                         f"not {type(value).__name__ if value is not None else 'null'}")
    return value


def is_final_tag(tag: Any) -> bool:
    """``final`` in any spelling a case-insensitive file system or a sloppy client could use."""
    return isinstance(tag, str) and tag.strip().lower() == FINAL_TAG


def refuse_final_tag(params: Dict[str, Any]) -> None:
    """Infer and batch infer save predictions under a tag of the client's choice, but never ``final``: that
    tag holds the radiologists' corrections and is written only by ``PUT /datastore/label``."""
    if is_final_tag(params.get("label_tag")):
        raise Refused("inference never writes the 'final' label tag (radiologists' corrections); save corrections "
                      "with PUT /datastore/label, or choose another label_tag")
