"""compat: embeddings lines in the OpenAI output file, float and base64, and the float32
codec behind them. Decoded the way the openai SDK decodes them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib._parsing._embeddings import parse_embedding_response

from compat.openai_output import render_batch_files
from compat.records import LineRecord
from compat.vectors import base64_vector, float_list, pack_vectors, split_vectors

PROPERTY = settings(database=None, deadline=None, max_examples=200)
EMBED = "/v1/embeddings"
VECTORS = np.array([[0.1, -0.25, 1 / 3, 7e-8], [1e30, -0.0, 2.5, -1e-30]], dtype=np.float32)


def record(status: str = "succeeded", encoding_format: str = "float",
           error: dict[str, Any] | None = None) -> LineRecord:
    ok = status == "succeeded"
    return LineRecord(
        job_id="00000000-0000-0000-0000-000000000001", line=3, custom_id=f"e-{encoding_format}",
        model="mini", status=status, text="" if ok else None, finish_reason="" if ok else None,
        error=error, prompt_tokens=11 if ok else 0, cached_tokens=0, output_tokens=0,
        engine_seconds=0.02 if ok else 0.0,
        cost_usd=Decimal("0.0000005") if ok else None,
        list_cost_usd=Decimal("0.00000022") if ok else None,
        finished_at=datetime(2026, 1, 2, tzinfo=UTC),
        embedding=pack_vectors(VECTORS.tolist()) if ok else None,
        embedding_dimensions=4 if ok else None, encoding_format=encoding_format)


def only_output(records: list[LineRecord]) -> dict[str, Any]:
    files = render_batch_files(records, EMBED)
    (line,) = [json.loads(x) for x in files.output.splitlines()]
    return line


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_an_embeddings_line_reads_like_the_hosted_api(encoding_format: str) -> None:
    line = only_output([record(encoding_format=encoding_format)])
    assert line["id"] == "batch_req_00000000000000000000000000000001"
    assert line["custom_id"] == f"e-{encoding_format}" and line["error"] is None
    response = line["response"]
    assert response["status_code"] == 200 and response["request_id"].startswith("req_")
    body = response["body"]
    assert set(body) == {"object", "data", "model", "usage"}
    assert (body["object"], body["model"]) == ("list", "mini")
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0),
                                                                 ("embedding", 1)]
    assert line["penny_cost"]["input_tokens"] == 11
    assert line["penny_cost"]["output_tokens"] == 0
    assert line["penny_cost"]["list_cost_usd"] == "0.00000022"  # not "2.2E-7"


def test_float_vectors_are_the_exact_float32_values() -> None:
    body = only_output([record(encoding_format="float")])["response"]["body"]
    parsed = openai.types.CreateEmbeddingResponse.model_validate(body)  # floats validate
    got = np.array([d.embedding for d in parsed.data], dtype=np.float32)
    assert np.array_equal(got, VECTORS)
    # Short numbers, not 17-digit doubles: 1/3 as float32 reads back from 8 digits.
    assert json.dumps(body["data"][0]["embedding"][2]) == "0.33333334"


def test_base64_vectors_decode_as_the_sdk_decodes_them() -> None:
    body = only_output([record(encoding_format="base64")])["response"]["body"]
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    # What `client.embeddings.create()` does with a response when no format was asked for:
    # build the model without validation, then decode each base64 string.
    parsed = parse_embedding_response(
        openai.types.CreateEmbeddingResponse.construct(**body), encoding_format=openai.omit)
    got = np.array([d.embedding for d in parsed.data], dtype=np.float32)
    assert np.array_equal(got, VECTORS)


def test_a_failed_embeddings_line_goes_to_the_error_file() -> None:
    files = render_batch_files(
        [record(), record("failed", error={"code": "context_length_exceeded",
                                           "message": "the input has 300 tokens"})], EMBED)
    assert (files.output_lines, files.error_lines) == (1, 1)
    (failed,) = [json.loads(x) for x in files.errors.splitlines()]
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert failed["penny_cost"] is None


def test_split_refuses_bytes_that_are_not_whole_vectors() -> None:
    with pytest.raises(ValueError, match="whole vectors"):
        split_vectors(b"\x00" * 10, 2)


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@PROPERTY
@given(st.integers(min_value=1, max_value=8).flatmap(
    lambda dims: st.lists(st.lists(finite_float32, min_size=dims, max_size=dims),
                          min_size=1, max_size=4)))
def test_vectors_round_trip_through_both_formats(vectors: list[list[float]]) -> None:
    expected = np.array(vectors, dtype=np.float32)
    data = pack_vectors(vectors)
    assert data == expected.astype("<f4").tobytes()
    parts = split_vectors(data, len(vectors[0]))
    through_json = json.loads(json.dumps([float_list(p) for p in parts]))
    assert np.array_equal(np.array(through_json, dtype=np.float32), expected)
    from_base64 = [np.frombuffer(base64.b64decode(base64_vector(p)), dtype="float32")
                   for p in parts]
    assert np.array_equal(np.array(from_base64), expected)
