"""Tool calls read back out of an answer, as OpenAI's `message.tool_calls`. Pure.

Chat templates that take tools ask the model to answer a call in one of two common
shapes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Hermes, Qwen
and their kin), or the whole answer one JSON object `{"name": ..., "parameters"|
"arguments": {...}}` (Llama 3.x). A call counts only when it names an offered function;
anything else stays the answer's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ToolCalls:
    content: str | None  # the answer's text outside the calls (None when nothing is left)
    calls: list[dict[str, Any]]


def _call(raw: str, offered: Collection[str]) -> tuple[str, str] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in offered:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as JSON text already
        return str(value["name"]), arguments
    return str(value["name"]), json.dumps(arguments, ensure_ascii=False)


def read_tool_calls(text: str, offered: Collection[str], call_id_prefix: str) -> ToolCalls:
    """The calls in `text` to functions in `offered`, with ids `call_<prefix>_<i>`."""
    found = []
    rest = text
    blocks = _BLOCK.findall(text)
    if blocks:
        for block in blocks:
            call = _call(block, offered)
            if call is not None:
                found.append(call)
        if found:
            rest = _BLOCK.sub("", text)
    else:
        call = _call(text.strip(), offered)
        if call is not None:
            found.append(call)
            rest = ""
    calls = [{"id": f"call_{call_id_prefix}_{index}", "type": "function",
              "function": {"name": name, "arguments": arguments}}
             for index, (name, arguments) in enumerate(found)]
    return ToolCalls(content=rest.strip() or None if calls else text, calls=calls)
