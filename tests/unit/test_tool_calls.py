"""Tools: offered on chat lines, refused per model whose chat template takes none, and
the calls read back out of an answer in OpenAI's tool_calls shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from compat.tool_calls import read_tool_calls
from intake.limits import IntakeLimits
from intake.openai_lines import parse_batch_file
from workers.engine import GenerationRequest, no_tools_message, template_takes_tools

LIMITS = IntakeLimits(models=frozenset({"m"}), default_model="m", max_output_tokens=512,
                      max_prompt_chars=10_000)
CHAT = "/v1/chat/completions"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
# The shape of tool-taking templates (Hermes / Qwen style), cut down.
TOOLS_TEMPLATE = ("{%- if tools %}<|im_start|>system\n<tools>{% for tool in tools %}"
                  "{{ tool | tojson }}{% endfor %}</tools><|im_end|>\n{%- endif %}"
                  "{% for message in messages %}{{ message['content'] }}{% endfor %}")


def parse(**body: Any) -> Any:
    payload = {"model": "m", "messages": [{"role": "user", "content": "Weather in Oslo?"}],
               **body}
    line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": payload}
    return parse_batch_file(json.dumps(line).encode(), CHAT, LIMITS, 10)


def test_a_chat_line_offers_its_tools_to_the_job() -> None:
    parsed = parse(tools=[WEATHER], tool_choice="auto")
    assert parsed.errors == []
    stored = parsed.lines[0].request.engine_request()
    assert stored["tools"] == [WEATHER]
    request = GenerationRequest.from_stored("k", stored, cache_salt="")
    assert request.tools == (WEATHER,)
    # tool_choice none: no call may be made, so none is offered.
    assert "tools" not in parse(tools=[WEATHER], tool_choice="none").lines[0].request \
        .engine_request()


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"tools": [WEATHER], "tool_choice": "required"}, "body.tool_choice",
         "forcing a call"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
         "body.tools.0.function.name", "pattern"),
        ({"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "nope"}}}]},
         "body.tools.0.function.parameters", "not a valid JSON Schema"),
        ({"functions": [{"name": "f"}]}, "body.functions", "use tools"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}]},
         "body.messages.0.tool_calls", "not served"),
        ({"messages": [{"role": "tool", "content": "18C", "tool_call_id": "c"}]},
         "body.messages.0.role", "not served"),
    ],
)
def test_a_bad_tools_line_names_the_field(body: dict[str, Any], param: str,
                                          fragment: str) -> None:
    errors = parse(**body).errors
    assert [e.param for e in errors] == [param]
    assert fragment in errors[0].message


def test_whether_a_template_takes_tools_is_read_from_the_template() -> None:
    assert template_takes_tools(TOOLS_TEMPLATE)
    plain = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
             "message['content'] + '<|im_end|>\\n'}}{% endfor %}")
    assert not template_takes_tools(plain)
    assert not template_takes_tools(None)
    # A template that only says the word in its text has no place for tools.
    assert not template_takes_tools("You may use tools. " + plain)
    assert "model tiny's chat template takes no tools" in no_tools_message("tiny")


def test_calls_in_tool_call_blocks_become_tool_calls() -> None:
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Oslo"}}\n</tool_call>')
    read = read_tool_calls(text, {"get_weather"}, "abc")
    assert read.content == "Let me check."
    assert read.calls == [{"id": "call_abc_0", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]


def test_a_whole_answer_json_call_becomes_a_tool_call() -> None:
    read = read_tool_calls('{"name": "get_weather", "parameters": {"city": "Rome"}}',
                           {"get_weather"}, "x")
    assert read.content is None
    assert json.loads(read.calls[0]["function"]["arguments"]) == {"city": "Rome"}


@pytest.mark.parametrize("text", [
    '{"name": "launch_rockets", "arguments": {}}',  # not offered
    "<tool_call>not json</tool_call>",
    "It is sunny in Oslo.",
])
def test_anything_else_stays_the_answer_text(text: str) -> None:
    read = read_tool_calls(text, {"get_weather"}, "x")
    assert (read.content, read.calls) == (text, [])
