"""Tool calling in Qwen2.5's format: OpenAI ``tools`` go to the chat template, ``<tool_call>{json}</tool_call>`` in
the reply comes back as OpenAI ``tool_calls``; a forced ``tool_choice`` becomes a grammar (llguidance Lark)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from .grammar import LlamaGrammar

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def normalize(tools: Any, tool_choice: Any, functions: Any = None, function_call: Any = None,
              token_id: Any = None) -> tuple[list[dict[str, Any]] | None, Any]:  # fmt: skip
    """(the tools for the template or None, a grammar forcing a call or None) of a request; ``token_id(text)`` gives
    the id of a vocabulary token with that text (-1: none), so that a forced call opens with the special token."""
    tags = tuple(_tag(t, token_id) for t in ("<tool_call>", "</tool_call>"))
    if functions is not None:
        if tools is not None:
            raise ValueError("give tools or functions, not both")
        tools = [{"type": "function", "function": f} for f in functions]
        if function_call is not None:
            tool_choice = (
                function_call if isinstance(function_call, str) else {"type": "function", "function": function_call}
            )
    if tools is None:
        if tool_choice not in (None, "none", "auto"):
            raise ValueError("tool_choice needs tools")
        return None, None
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list")
    by_name: dict[str, dict[str, Any]] = {}
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(f, dict):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        if not isinstance(f.get("name"), str) or not f["name"]:
            raise ValueError(f"tools[{i}].function.name must be a non-empty string")
        by_name[f["name"]] = f
    if tool_choice in (None, "auto"):
        return tools, None
    if tool_choice == "none":
        return None, None
    if tool_choice == "required":
        return tools, _forced_grammar(list(by_name.values()), tags)
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    if name not in by_name:
        raise ValueError(f"tool_choice must be 'none', 'auto', 'required' or a function of tools, got {tool_choice!r}")
    return tools, _forced_grammar([by_name[name]], tags)


def _tag(text: str, token_id: Any) -> str:
    """The Lark spelling of a tag: llguidance's ``<[id]>`` for a special token, else the quoted text."""
    token = token_id(text) if token_id is not None else -1
    return f"<[{token}]>" if token >= 0 else json.dumps(text)


def _forced_grammar(functions: list[dict[str, Any]], tags: tuple[str, ...]) -> Any:
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, "arguments": f.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    lark = f'start: {tags[0]} "\\n" call "\\n" {tags[1]}\ncall: %json {json.dumps(schema)}\n'
    return LlamaGrammar(_grammar=lark, _format="lark")


def template_message(message: dict[str, Any], role: str, content: str) -> dict[str, Any]:
    """A message as chat templates read it: tool-call arguments as objects (templates apply ``tojson``)."""
    out: dict[str, Any] = {"role": role, "content": content}
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise ValueError("tool_calls must be a list")
        converted = []
        for c in calls:
            f = c.get("function") if isinstance(c, dict) else None
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ValueError("each tool call needs function.name")
            args = f.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError as exc:
                    raise ValueError(f"tool call arguments are not JSON: {exc}") from exc
            converted.append({**c, "function": {"name": f["name"], "arguments": args}})
        out["tool_calls"] = converted
    for key in ("name", "tool_call_id"):
        if isinstance(message.get(key), str):
            out[key] = message[key]
    return out


def parse_tool_calls(text: str, names: set[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(the text outside the calls, OpenAI tool_calls) of a reply; blocks that are not JSON stay in the text. Small
    models sometimes drop the tags: a reply that is nothing but ``{"name": <one of names>, "arguments": {...}}``
    is a call too."""
    if "<tool_call>" not in text and names:
        try:
            obj = json.loads(text.strip())
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("name") in names and isinstance(obj.get("arguments"), dict):
            text = f"<tool_call>{text}</tool_call>"
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    pos = 0
    for m in _CALL.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", obj.get("parameters", {}))
        kept.append(text[pos : m.start()])
        pos = m.end()
        calls.append({
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)},
        })  # fmt: skip
    kept.append(text[pos:])
    return "".join(kept).strip(), calls
