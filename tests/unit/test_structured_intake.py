"""Structured outputs and the sampling extras at intake: native jobs and OpenAI batch lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from coalescer.single_flight import single_flight_key
from intake.anthropic_requests import parse_requests
from intake.limits import IntakeLimits
from intake.openai_lines import parse_batch_file
from intake.schema import JobRequest
from intake.structured import MAX_SCHEMA_CHARS
from workers.engine import GenerationRequest
from workers.guided_decoding import OutputConstraint

LIMITS = IntakeLimits(models=frozenset({"m"}), default_model="m", max_output_tokens=512,
                      max_prompt_chars=1000)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
PERSON_TEXT = json.dumps(PERSON, separators=(",", ":"))  # as stored: text keeps key order


def schema_format(schema: Any = PERSON, **extra: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, **extra}}


def job(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({"prompt": "p", **fields})


def parse_line(**body: Any) -> Any:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": payload}
    return parse_batch_file(json.dumps(line).encode(), CHAT, LIMITS, 10)


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({"response_format": schema_format(strict=True)}, {"json_schema": PERSON_TEXT}),
        ({"response_format": {"type": "json_object"}}, {"json_object": True}),
        ({"guided": {"regex": "[0-9]{3}"}}, {"regex": "[0-9]{3}"}),
        ({"guided": {"choice": ["yes", "no"]}}, {"choice": ["yes", "no"]}),
    ],
)
def test_constraint_is_stored_and_rebuilt_for_the_engine(fields: dict[str, Any],
                                                         stored: dict[str, Any]) -> None:
    document = job(**fields).engine_request()
    assert document["constraint"] == stored
    request = GenerationRequest.from_stored("k", document, cache_salt="")
    assert request.constraint == OutputConstraint.from_stored(stored)
    assert request.constraint is not None


def test_schema_keeps_its_property_order_through_storage() -> None:
    # Generated fields follow `properties` order; a JSONB object would re-sort its keys,
    # so the schema is stored as text (here round-tripped as Postgres JSONB would).
    schema = {"type": "object", "properties": {"zeta": {"type": "string"},
                                               "alpha": {"type": "integer"}}}
    document = job(response_format=schema_format(schema)).engine_request()
    resorted = json.loads(json.dumps(document, sort_keys=True))
    constraint = GenerationRequest.from_stored("k", resorted, cache_salt="").constraint
    assert constraint is not None and constraint.json_schema is not None
    assert list(json.loads(constraint.json_schema)["properties"]) == ["zeta", "alpha"]


def test_plain_job_document_is_unchanged_by_the_new_parameters() -> None:
    # No constraint and default penalties: the stored request (and so the single-flight
    # key of jobs queued before this change) stays what it was.
    assert job(response_format={"type": "text"}).engine_request() == {
        "sampling": {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0, "stop": [],
                     "seed": None},
        "prompt": "p",
    }


def test_sampling_extras_reach_the_engine_request() -> None:
    document = job(presence_penalty=0.5, frequency_penalty=-1, logit_bias={"42": -100,
                                                                           "7": 5.5}
                   ).engine_request()
    sampling = GenerationRequest.from_stored("k", document, cache_salt="").sampling
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, -1.0)
    assert sorted(sampling.logit_bias) == [(7, 5.5), (42, -100.0)]


def test_single_flight_key_tells_formats_apart() -> None:
    keys = {
        single_flight_key("t", "m", job(**fields).engine_request())
        for fields in ({}, {"response_format": {"type": "json_object"}},
                       {"response_format": schema_format()},
                       {"response_format": schema_format({**PERSON, "required": ["name"]})},
                       {"guided": {"choice": ["a", "b"]}}, {"guided": {"choice": ["b", "a"]}},
                       {"guided": {"regex": "a+"}}, {"presence_penalty": 1},
                       {"logit_bias": {"1": 2}})
    }
    assert None not in keys and len(keys) == 9


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        pytest.param({"response_format": {"type": "xml"}}, "response_format", id="bad-type"),
        pytest.param({"response_format": {"type": "json_schema"}}, "json_schema",
                     id="schema-missing"),
        pytest.param({"response_format": schema_format({"type": "object",
                                                        "required": "name"})},
                     "not a valid JSON Schema at required", id="invalid-schema"),
        pytest.param({"response_format": schema_format({"type": "strng"})},
                     "not a valid JSON Schema", id="unknown-type"),
        pytest.param({"response_format": schema_format(
            {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 50}
                                              for i in range(300)}})},
            f"the limit is {MAX_SCHEMA_CHARS}", id="too-large"),
        pytest.param({"response_format": {"type": "json_schema", "json_schema": {
            "name": "has space", "schema": PERSON}}}, "name", id="bad-name"),
        pytest.param({"response_format": schema_format(strict="yes")}, "strict",
                     id="strict-not-bool"),
        pytest.param({"guided": {"regex": "(unclosed"}}, "not a valid regex", id="bad-regex"),
        pytest.param({"guided": {}}, "exactly one", id="guided-empty"),
        pytest.param({"guided": {"regex": "a", "choice": ["a"]}}, "exactly one",
                     id="guided-both"),
        pytest.param({"guided": {"choice": []}}, "choice", id="no-choices"),
        pytest.param({"guided": {"choice": ["a", ""]}}, "choice", id="empty-choice"),
        pytest.param({"guided": {"choice": ["a", "a"]}}, "twice", id="duplicate-choice"),
        pytest.param({"guided": {"regex": "a"}, "response_format": {"type": "json_object"}},
                     "not both", id="guided-and-json"),
        pytest.param({"presence_penalty": 2.5}, "presence_penalty", id="penalty-high"),
        pytest.param({"frequency_penalty": "1"}, "frequency_penalty", id="penalty-string"),
        pytest.param({"logit_bias": {"abc": 1}}, "logit_bias", id="bias-key"),
        pytest.param({"logit_bias": {"5": 101}}, "logit_bias", id="bias-range"),
    ],
)
def test_bad_formats_and_extras_are_refused(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        job(**fields)
    assert fragment in str(caught.value)


def test_openai_line_maps_response_format_and_extras() -> None:
    parsed = parse_line(response_format=schema_format(strict=True), stop="END", seed=4,
                        presence_penalty=0.2, frequency_penalty=0.1, logit_bias={"3": -1},
                        user="u")
    assert parsed.errors == []
    request = parsed.lines[0].request
    assert request.output_constraint() == {"json_schema": PERSON_TEXT}
    assert (request.stop, request.seed, request.presence_penalty, request.frequency_penalty,
            request.logit_bias) == (["END"], 4, 0.2, 0.1, {"3": -1})
    guided = parse_line(penny_guided={"choice": ["x", "y"]}).lines[0].request
    assert guided.output_constraint() == {"choice": ["x", "y"]}


@pytest.mark.parametrize(
    ("body", "code", "param", "fragment"),
    [
        ({"response_format": schema_format({"type": "object", "required": 3})},
         "invalid_request", "body.response_format.json_schema.schema",
         "not a valid JSON Schema"),
        ({"penny_guided": {"regex": "("}}, "invalid_request", "body.penny_guided.regex",
         "not a valid regex"),
        ({"logit_bias": {"x": 1}}, "invalid_request", "body.logit_bias.x.[key]", "pattern"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "f"}}},
         "unsupported_parameter", "body.tool_choice", "forcing a call"),
        ({"n": 17}, "invalid_request", "body.n", "less than or equal to 16"),
        ({"n": "2"}, "invalid_request", "body.n", "valid integer"),
        ({"top_logprobs": 3}, "invalid_request", "body.top_logprobs", "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "invalid_request", "body.top_logprobs",
         "less than or equal to 20"),
        ({"logprobs": "yes"}, "invalid_request", "body.logprobs", "true or false"),
        ({"stream": True}, "unsupported_parameter", "body.stream", "do not stream"),
        ({"penny_compress": {"ratio": 2}}, "invalid_request", "body.penny_compress.ratio",
         "less than or equal to 0.9"),
    ],
)
def test_bad_line_names_the_field(body: dict[str, Any], code: str, param: str,
                                  fragment: str) -> None:
    errors = parse_line(**body).errors
    assert [(e.line, e.code, e.param) for e in errors] == [(1, code, param)]
    assert fragment in errors[0].message


def test_openai_line_maps_n_logprobs_and_compression() -> None:
    request = parse_line(n=3, logprobs=True, top_logprobs=2, temperature=0.7, seed=1,
                         penny_compress={"ratio": 0.4}).lines[0].request
    sampling = request.engine_request()["sampling"]
    assert (sampling["n"], sampling["top_logprobs"], sampling["logprobs"]) == (3, 2, True)
    assert request.engine_request()["compress"]["ratio"] == 0.4
    plain = parse_line(n=1, logprobs=False, top_logprobs=0).lines[0].request
    assert not {"n", "top_logprobs", "logprobs"} & set(plain.engine_request()["sampling"])
    # The same prompt with another n is another request: keys that include the stored
    # request never let a 2-sample line share a 3-sample run.
    two = parse_line(n=2, temperature=0.7, seed=1).lines[0].request.engine_request()
    three = parse_line(n=3, temperature=0.7, seed=1).lines[0].request.engine_request()
    assert single_flight_key("t", "m", two) != single_flight_key("t", "m", three)


def test_completions_lines_take_n_but_not_logprobs() -> None:
    line = {"custom_id": "a", "method": "POST", "url": COMPLETIONS,
            "body": {"model": "m", "prompt": "hi", "n": 2, "logprobs": 2}}
    errors = parse_batch_file(json.dumps(line).encode(), COMPLETIONS, LIMITS, 10).errors
    assert [(e.code, e.param) for e in errors] == [("unsupported_parameter", "body.logprobs")]
    assert "chat/completions lines only" in errors[0].message


def anthropic(**params: Any) -> Any:
    item = {"custom_id": "r1", "params": {
        "model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}],
        **params}}
    return parse_requests([item], LIMITS, 10)[0]


def test_anthropic_output_config_format_is_a_json_schema() -> None:
    parsed = anthropic(output_config={"format": {"type": "json_schema", "schema": PERSON}})
    assert parsed.error is None and parsed.request is not None
    assert parsed.request.output_constraint() == {"json_schema": PERSON_TEXT}
    assert anthropic(output_config={"format": None}).request.output_constraint() is None


@pytest.mark.parametrize(
    ("output_config", "fragment"),
    [
        ({"format": {"type": "json_schema", "schema": {"type": "nope"}}},
         "output_config.format.schema: not a valid JSON Schema"),
        ({"format": {"type": "text"}}, "params.output_config.format: only"),
        ({"effort": "high"}, "params.output_config.effort: not served here"),
        ("json", "params.output_config: must be an object"),
    ],
)
def test_anthropic_bad_output_config_errors_its_request(output_config: Any,
                                                        fragment: str) -> None:
    parsed = anthropic(output_config=output_config)
    assert parsed.request is None and parsed.error is not None
    assert fragment in parsed.error["message"]


def test_anthropic_penny_metadata_tags_the_request_and_metadata_does_not() -> None:
    tagged = anthropic(penny_metadata={"feature": "essay", "team": "a"},
                       metadata={"user_id": "u-1"})
    assert tagged.request is not None
    assert tagged.request.metadata == {"feature": "essay", "team": "a"}
    assert anthropic(metadata={"user_id": "u-1"}).request.metadata == {}
    bad = anthropic(penny_metadata={f"k{i}": "v" for i in range(17)})
    assert bad.request is None and bad.error is not None
    assert bad.error["message"].startswith("params: penny_metadata")
