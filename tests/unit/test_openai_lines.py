"""intake.openai_lines: OpenAI batch lines to job requests, every bad line named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from intake.limits import IntakeLimits
from intake.openai_lines import parse_batch_file

LIMITS = IntakeLimits(models=frozenset({"m"}), default_model="m", max_output_tokens=512,
                      max_prompt_chars=1000)
CHAT = "/v1/chat/completions"


def line(custom_id: str = "a", url: str = CHAT, **body: Any) -> dict[str, Any]:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def parse(*lines: Any, endpoint: str = CHAT, max_requests: int = 100) -> Any:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    return parse_batch_file(text.encode(), endpoint, LIMITS, max_requests)


def test_chat_body_maps_onto_the_job_request() -> None:
    parsed = parse(line(max_completion_tokens=9, stop="END", seed=3, temperature=0.5,
                        user="u-1", n=1, messages=[
                            {"role": "developer", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "a"},
                                                         {"type": "text", "text": "b"}]}]))
    assert parsed.errors == []
    request = parsed.lines[0].request
    assert [(m.role, m.content) for m in request.messages or []] == [
        ("system", "be brief"), ("user", "ab")]
    assert (request.max_tokens, request.stop, request.seed, request.temperature) == (
        9, ["END"], 3, 0.5)
    assert request.custom_id == "a" and parsed.lines[0].model == "m"


def test_completions_default_to_sixteen_tokens_like_the_hosted_api() -> None:
    body = {"custom_id": "c", "method": "POST", "url": "/v1/completions",
            "body": {"model": "m", "prompt": ["Once"]}}
    parsed = parse(body, endpoint="/v1/completions")
    assert parsed.errors == []
    assert parsed.lines[0].request.prompt == "Once"
    assert parsed.lines[0].request.max_tokens == 16


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        ("[1, 2]", "invalid_json_line", None),
        ({**line(), "custom_id": ""}, "invalid_custom_id", "custom_id"),
        ({**line(), "method": "PUT"}, "invalid_method", "method"),
        ({**line(), "url": "/v2/chat"}, "invalid_url", "url"),
        (line(url="/v1/embeddings"), "mismatched_endpoint", "url"),
        ({**line(), "body": "text"}, "invalid_request", "body"),
        (line(messages=[{"role": "tool", "content": "x"}]), "unsupported_parameter",
         "body.messages.0.role"),
        (line(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
         "unsupported_parameter", "body.messages.0.content.0"),
        (line(n=0), "invalid_request", "body.n"),
        (line(stream=True), "unsupported_parameter", "body.stream"),
        (line(max_tokens=0), "invalid_request", "body.max_tokens"),
        (line(max_tokens=10_000), "invalid_request", "body.max_tokens"),
        (line(model="other"), "model_not_found", "body.model"),
        (line(messages=[{"role": "user", "content": "x" * 2000}]), "invalid_request",
         "body.messages"),
    ],
)
def test_each_bad_line_is_reported_with_its_line(bad: Any, code: str, param: str | None) -> None:
    parsed = parse(line("first"), bad)
    assert [(e.line, e.code, e.param) for e in parsed.errors] == [(2, code, param)]
    assert [p.custom_id for p in parsed.lines] == ["first"]


def test_duplicates_blank_lines_and_limits() -> None:
    parsed = parse(line("a"), "", line("a"), line("b"), line("c"), max_requests=2)
    assert [(e.line, e.code) for e in parsed.errors] == [
        (3, "duplicate_custom_id"), (4, "too_many_requests")]  # the 3rd request
    assert "line 1" in parsed.errors[0].message


def test_empty_and_non_utf8_files() -> None:
    assert [e.code for e in parse("", "  ").errors] == ["empty_file"]
    broken = parse_batch_file(b"\xff\xfe", CHAT, LIMITS, 10)
    assert [e.code for e in broken.errors] == ["invalid_file"]
