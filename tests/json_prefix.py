"""Whether a text is JSON or a prefix of JSON, for output cut at max_tokens under a JSON grammar.

A grammar-constrained generation that hits its token limit stops mid-document; what it wrote must still be the start of
some valid document. We decide that with Python's own json module: close the open string and brackets, try the few
fillers a cut can need (the rest of a literal, a number, a value after ':' or ','), and ask json.loads."""

from __future__ import annotations

import itertools
import json

_IN_STRING_FILLERS = ["", "n", "0", "00", "000", "0000"]  # after a cut escape: "\" or "\u", "\u1"...
_VALUE_FILLERS = ["", "null", ":null", '"":null', "0", "1", "e", "l", "ue", "se", "ll", "rue", "alse", "ull"]


def _open_state(text: str) -> tuple[list[str], bool]:
    closers: list[str] = []
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
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]" and closers:
            closers.pop()
    return closers, in_string


def is_json_or_prefix(text: str) -> bool:
    """True when `text` parses as JSON, or some completion of it does."""
    closers, in_string = _open_state(text)
    tail = "".join(reversed(closers))
    string_fillers = _IN_STRING_FILLERS if in_string else [""]
    for in_str, value in itertools.product(string_fillers, _VALUE_FILLERS):
        try:
            json.loads(text + in_str + ('"' if in_string else "") + value + tail)
            return True
        except json.JSONDecodeError:
            continue
    return False


def assert_json_object_or_cut(content: str, finish_reason: str) -> None:
    """A finished JSON-mode reply is an object; one cut by the token limit is the start of valid JSON."""
    if finish_reason == "length":
        assert content.lstrip().startswith("{") and is_json_or_prefix(content), content
    else:
        assert finish_reason == "stop", finish_reason
        assert isinstance(json.loads(content), dict), content
