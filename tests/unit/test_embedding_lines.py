"""intake.embeddings: /v1/embeddings batch lines to embedding jobs, every bad line named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from intake.embeddings import MAX_INPUTS, EmbeddingJobRequest
from intake.limits import IntakeLimits
from intake.openai_lines import parse_batch_file
from intake.service import embedding_job

EMBED = "/v1/embeddings"
LIMITS = IntakeLimits(models=frozenset({"chat"}), default_model="chat", max_output_tokens=512,
                      max_prompt_chars=1000, embedding_models={"mini": 384, "wide": 768},
                      default_embedding_model="mini")


def line(custom_id: str = "a", url: str = EMBED, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": "mini", "input": "hello", **body}}


def parse(*lines: Any, endpoint: str = EMBED) -> Any:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    return parse_batch_file(text.encode(), endpoint, LIMITS, 100)


@pytest.mark.parametrize(
    ("body", "model", "inputs", "encoding_format"),
    [
        ({}, "mini", ("hello",), "float"),
        ({"input": ["a", "b c"]}, "mini", ("a", "b c"), "float"),
        ({"encoding_format": "base64"}, "mini", ("hello",), "base64"),
        ({"encoding_format": "float", "dimensions": 384, "user": "u-1"}, "mini", ("hello",),
         "float"),
        ({"encoding_format": None, "dimensions": None, "user": None}, "mini", ("hello",),
         "float"),
        ({"model": "wide", "dimensions": 768}, "wide", ("hello",), "float"),
        ({"model": None}, "mini", ("hello",), "float"),  # no model: the default
        ({"input": " "}, "mini", (" ",), "float"),  # blank is not empty
    ],
)
def test_good_bodies(body: dict[str, Any], model: str, inputs: tuple[str, ...],
                     encoding_format: str) -> None:
    parsed = parse(line(**body))
    assert parsed.errors == []
    (only,) = parsed.lines
    assert only.model == model
    assert only.request == EmbeddingJobRequest(model=model, inputs=inputs,
                                               encoding_format=encoding_format, custom_id="a")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": None}, "missing_required_parameter", "body.input"),
        ({"input": ""}, "invalid_request", "body.input"),
        ({"input": []}, "invalid_request", "body.input"),
        ({"input": 42}, "invalid_request", "body.input"),
        ({"input": {"text": "a"}}, "invalid_request", "body.input"),
        ({"input": ["a", ""]}, "invalid_request", "body.input.1"),
        ({"input": ["a", 3]}, "invalid_request", "body.input.1"),
        ({"input": ["a", ["b"]]}, "invalid_request", "body.input.1"),
        ({"input": [1, 2, 3]}, "unsupported_parameter", "body.input"),
        ({"input": [[1, 2], [3]]}, "unsupported_parameter", "body.input"),
        ({"input": ["a"] * (MAX_INPUTS + 1)}, "invalid_request", "body.input"),
        ({"input": ["x" * 600, "y" * 600]}, "invalid_request", "body.input"),  # > 1000 chars
        ({"encoding_format": "int8"}, "unsupported_parameter", "body.encoding_format"),
        ({"encoding_format": 1}, "unsupported_parameter", "body.encoding_format"),
        ({"dimensions": 256}, "unsupported_parameter", "body.dimensions"),
        ({"model": "wide", "dimensions": 384}, "unsupported_parameter", "body.dimensions"),
        ({"dimensions": "384"}, "invalid_request", "body.dimensions"),
        ({"dimensions": True}, "invalid_request", "body.dimensions"),
        ({"dimensions": 0}, "invalid_request", "body.dimensions"),
        ({"model": "chat"}, "model_not_found", "body.model"),
        ({"model": "text-embedding-3-small"}, "model_not_found", "body.model"),
        ({"model": 7}, "invalid_request", "body.model"),
        ({"user": 5}, "invalid_request", "body.user"),
        ({"truncate": "END"}, "unsupported_parameter", "body.truncate"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "unsupported_parameter",
         "body.messages"),
    ],
)
def test_each_bad_body_is_reported_with_its_line(body: dict[str, Any], code: str, param: str
                                                 ) -> None:
    parsed = parse(line("first"), line("second", **body))
    assert [(e.line, e.code, e.param) for e in parsed.errors] == [(2, code, param)]
    assert parsed.errors[0].message
    assert [p.custom_id for p in parsed.lines] == ["first"]


def test_messages_say_what_to_change() -> None:
    parsed = parse(line("d", dimensions=256), line("m", model="chat"),
                   line("t", input=[101, 2023]), line("e", encoding_format="int8"))
    messages = [e.message for e in parsed.errors]
    assert "384" in messages[0] and "256" in messages[0]
    assert "chat model" in messages[1] and "mini" in messages[1]
    assert "token" in messages[2]
    assert "float" in messages[3] and "base64" in messages[3]


def test_endpoints_do_not_mix() -> None:
    chat = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}}
    in_embeddings = parse(line("e"), chat)
    assert [(e.line, e.code, e.param) for e in in_embeddings.errors] == [
        (2, "mismatched_endpoint", "url")]
    in_chat = parse(chat, line("e"), endpoint="/v1/chat/completions")
    assert [(e.line, e.code, e.param) for e in in_chat.errors] == [
        (2, "mismatched_endpoint", "url")]


def test_without_embedding_models_a_line_without_model_is_refused() -> None:
    limits = IntakeLimits(models=frozenset({"chat"}), default_model="chat",
                          max_output_tokens=512, max_prompt_chars=1000, embedding_models={},
                          default_embedding_model="mini")
    body = {"custom_id": "a", "method": "POST", "url": EMBED, "body": {"input": "hi"}}
    parsed = parse_batch_file(json.dumps(body).encode(), EMBED, limits, 10)
    assert [(e.code, e.param) for e in parsed.errors] == [("model_not_found", "body.model")]
    assert "(embedding models: none)" in parsed.errors[0].message


def test_a_chat_line_naming_the_embedding_model_is_told_so() -> None:
    chat = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "mini", "messages": [{"role": "user", "content": "hi"}]}}
    parsed = parse(chat, endpoint="/v1/chat/completions")
    assert [(e.code, e.param) for e in parsed.errors] == [("model_not_found", "body.model")]
    assert "embedding model" in parsed.errors[0].message


def test_an_embedding_line_becomes_a_job() -> None:
    request = EmbeddingJobRequest(model="mini", inputs=("abcdef", "x"),
                                  encoding_format="base64", custom_id="k")
    job = embedding_job(7, request)
    assert (job.line_no, job.model, job.custom_id, job.error) == (7, "mini", "k", None)
    assert job.request == {"input": ["abcdef", "x"], "encoding_format": "base64"}
    assert job.estimated_tokens == (6 // 3 + 2) + (1 // 3 + 2)  # no output allowance
