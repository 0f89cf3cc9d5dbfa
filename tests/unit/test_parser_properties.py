"""Properties of every parser intake runs on untrusted input (JSONL lines, CSV rows,
OpenAI batch lines, Anthropic requests, request bodies), for any input hypothesis finds:
they raise nothing but penny's own domain errors, and they never lose a line."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from intake.anthropic_requests import parse_requests
from intake.files import LineError, ParsedLine, parse_csv, parse_input_file, parse_jsonl
from intake.limits import IntakeLimits
from intake.openai_lines import parse_batch_file
from intake.schema import JobRequest
from intake.service import jobs_for_file
from intake.text import load_json
from penny.errors import InputFileError, InvalidJson, InvalidRequest, PennyError

LIMITS = IntakeLimits(models=frozenset({"m"}), default_model="m", max_output_tokens=64,
                      max_prompt_chars=500, context_tokens=128, max_json_depth=8,
                      embedding_models={"e": 4}, default_embedding_model="e")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-ish values near the shapes penny reads, plus anything at all.
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["messages", "prompt", "max_tokens", "role", "content",
                                       "model", "custom_id", "metadata", "temperature",
                                       "stop", "params", "body", "url", "method", "input"])
                      | st.text(max_size=8), inner, max_size=5),
    max_leaves=12)
job_like = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "x"]),
         "content": st.text(max_size=30)}), max_size=3)},
    optional={"max_tokens": scalars, "model": st.sampled_from(["m", "e", "zz"]) | scalars,
              "temperature": scalars, "custom_id": scalars, "metadata": json_values})
# A line: a job-like object, any JSON, or text that may not be JSON at all.
lines = (job_like.map(json.dumps) | json_values.map(json.dumps)
         | st.text(max_size=60).map(lambda t: t.replace("\n", " ")))


def _non_blank(text: str) -> list[int]:
    return [n for n, raw in enumerate(text.split("\n"), start=1)
            if raw.removesuffix("\r").strip()]


@FUZZ
@given(st.lists(lines, max_size=12))
def test_jsonl_gives_one_outcome_per_line_and_raises_nothing(batch: list[str]) -> None:
    text = "\n".join(batch)
    outcomes = list(parse_jsonl(text, max_depth=8))
    assert [o.line_no for o in outcomes] == _non_blank(text)
    assert all(isinstance(o, ParsedLine | LineError) for o in outcomes)
    # ... and every line becomes a job (a bad one a failed job naming its line).
    jobs = jobs_for_file(outcomes, LIMITS)
    assert [j.line_no for j in jobs] == [o.line_no for o in outcomes]
    assert all(j.error["line"] == j.line_no for j in jobs if j.error is not None)


@FUZZ
@given(st.binary(max_size=200) | st.lists(lines, max_size=8).map(
    lambda b: "\n".join(b).encode()))
def test_input_files_raise_only_domain_errors(data: bytes) -> None:
    for name in ("in.jsonl", "in.csv", "in.txt"):
        try:
            outcomes = parse_input_file(name, data, max_depth=8)
        except InputFileError:
            continue
        assert outcomes  # an empty file is an InputFileError, never zero jobs


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FUZZ
@given(st.lists(st.sampled_from(["prompt", "system", "max_tokens", "temperature", "seed",
                                 "custom_id", "model", "tag"]), min_size=1, max_size=5,
                unique=True),
       st.lists(st.lists(cells, min_size=0, max_size=7), max_size=8))
def test_csv_gives_one_outcome_per_row(header: list[str], rows: list[list[str]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    written = [row for row in rows if any(row)]  # the reader skips empty rows
    writer.writerows(written)
    try:
        outcomes = list(parse_csv(buffer.getvalue()))
    except InputFileError:
        assert "prompt" not in header
        return
    assert len(outcomes) == len(written)
    line_numbers = [o.line_no for o in outcomes]
    assert line_numbers == sorted(set(line_numbers))


batch_lines = st.fixed_dictionaries(
    {"custom_id": st.text(max_size=6) | scalars,
     "method": st.sampled_from(["POST", "GET"]),
     "url": st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/x"]),
     "body": job_like | json_values}).map(json.dumps)


@FUZZ
@given(st.lists(batch_lines | lines, max_size=10),
       st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]))
def test_openai_batch_lines_are_each_parsed_or_named(batch: list[str], endpoint: str) -> None:
    text = "\n".join(batch)
    parsed = parse_batch_file(text.encode(), endpoint, LIMITS, max_requests=100)
    good = [line.line for line in parsed.lines]
    bad = [error.line for error in parsed.errors if error.line is not None]
    expected = _non_blank(text)
    if not expected:
        assert [e.code for e in parsed.errors] == ["empty_file"]
        return
    # Every line is either queued or named by an error, never both, never neither.
    assert sorted(set(good) | set(bad)) == expected
    assert not set(good) & set(bad)


@FUZZ
@given(st.binary(max_size=120))
def test_openai_batch_files_of_any_bytes_never_raise(data: bytes) -> None:
    parsed = parse_batch_file(data, "/v1/chat/completions", LIMITS, max_requests=100)
    assert parsed.lines or parsed.errors


anthropic_items = st.fixed_dictionaries(
    {"custom_id": st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True) | scalars,
     "params": st.fixed_dictionaries(
         {"max_tokens": scalars,
          "messages": st.lists(st.fixed_dictionaries(
              {"role": st.sampled_from(["user", "assistant", "system"]),
               "content": st.text(max_size=20) | json_values}), max_size=3)},
         optional={"model": scalars, "system": st.text(max_size=10) | json_values,
                   "stream": st.booleans()}) | json_values}) | json_values


@FUZZ
@given(st.lists(anthropic_items, max_size=6))
def test_anthropic_requests_parse_one_per_item_or_refuse_precisely(items: list[Any]) -> None:
    try:
        parsed = parse_requests(items, LIMITS, max_requests=5)
    except InvalidRequest as error:
        assert error.param is not None and error.param.startswith("requests")
        return
    assert [p.index for p in parsed] == list(range(len(items)))
    for item in parsed:
        assert (item.request is None) == (item.error is not None)


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_request_bodies_raise_only_invalid_json_or_validation_errors(body: bytes) -> None:
    try:
        document = load_json(body, max_depth=8)
    except InvalidJson:
        return
    try:
        JobRequest.model_validate(document)
    except ValidationError:
        pass
    except PennyError:  # pragma: no cover - a domain error is allowed, anything else not
        pass
