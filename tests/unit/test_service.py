"""intake.service: turning validated requests and file lines into jobs (no database)."""

from __future__ import annotations

import json

import pytest

from intake.files import parse_input_file
from intake.limits import IntakeLimits
from intake.schema import JobRequest
from intake.service import jobs_for_file, jobs_for_requests, request_hash
from models.submissions import NewJob
from penny.errors import InvalidRequest, UnknownModel

LIMITS = IntakeLimits(
    models=frozenset({"tiny", "small"}),
    default_model="tiny",
    max_output_tokens=100,
    max_prompt_chars=50,
)


def test_jobs_for_requests_builds_one_job_per_request() -> None:
    requests = [
        JobRequest(prompt="x" * 30, max_tokens=10, custom_id="a", metadata={"t": 1},
                   priority=-2),
        JobRequest.model_validate(
            {"messages": [{"role": "user", "content": "hi"}], "model": "small", "max_tokens": 5}
        ),
    ]
    jobs = jobs_for_requests(requests, LIMITS)
    assert jobs == [
        NewJob(line_no=0, model="tiny", request=requests[0].engine_request(),
               estimated_tokens=10 + 8 + 10, custom_id="a", tags={"t": 1}, priority=-2),
        NewJob(line_no=1, model="small", request=requests[1].engine_request(),
               estimated_tokens=0 + 8 + 5, custom_id=None, tags={}, priority=0),
    ]


def test_jobs_for_requests_is_all_or_nothing_and_names_every_bad_index() -> None:
    requests = [
        JobRequest(prompt="fine", max_tokens=5),
        JobRequest(prompt="fine", model="huge", max_tokens=5),
        JobRequest(prompt="fine", max_tokens=5),
        JobRequest(prompt="fine", max_tokens=500),
    ]
    with pytest.raises(InvalidRequest) as caught:
        jobs_for_requests(requests, LIMITS)
    error = caught.value
    assert error.param == "jobs"
    assert error.message.startswith("2 of 4 jobs are invalid")
    assert [(d["index"], d["code"], d["param"]) for d in error.details] == [
        (1, "model_not_found", "model"),
        (3, "invalid_request", "max_tokens"),
    ]


def test_single_bad_request_reports_its_own_param() -> None:
    with pytest.raises(InvalidRequest) as caught:
        jobs_for_requests([JobRequest(prompt="x", max_tokens=500)], LIMITS)
    assert caught.value.param == "max_tokens"
    assert "500" in caught.value.message
    assert caught.value.details == []


def test_single_request_with_unknown_model_stays_unknown_model() -> None:
    with pytest.raises(UnknownModel) as caught:
        jobs_for_requests([JobRequest(prompt="x", model="huge", max_tokens=5)], LIMITS)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_jobs_for_file_turns_bad_lines_into_failed_jobs() -> None:
    data = (
        b'{"prompt": "ok", "max_tokens": 5, "custom_id": "c1"}\n'
        b"{oops\n"
        b"\n"
        b'{"prompt": "who", "model": "huge", "max_tokens": 5}\n'
        b'{"prompt": "long", "max_tokens": 500}\n'
    )
    jobs = jobs_for_file(parse_input_file("in.jsonl", data), LIMITS)
    assert [(j.line_no, j.model) for j in jobs] == [(1, "tiny"), (2, "tiny"), (4, "huge"),
                                                    (5, "tiny")]
    good, bad_json, unknown, too_long = jobs
    assert good.error is None
    assert good.custom_id == "c1"
    assert good.estimated_tokens == 0 + 8 + 5
    assert bad_json.error is not None
    assert (bad_json.error["code"], bad_json.error["line"]) == ("invalid_json", 2)
    assert bad_json.request == {"raw": "{oops"}
    assert bad_json.estimated_tokens == 0
    assert unknown.error is not None
    assert (unknown.error["code"], unknown.error["line"]) == ("model_not_found", 4)
    assert json.loads(unknown.request["raw"])["model"] == "huge"
    assert too_long.error is not None
    assert (too_long.error["code"], too_long.error["line"]) == ("invalid_request", 5)


def test_jobs_for_file_truncates_a_huge_raw_line() -> None:
    data = ("{" + "x" * 5000 + "\n").encode()
    (job,) = jobs_for_file(parse_input_file("in.jsonl", data), LIMITS)
    assert len(job.request["raw"]) == 2000


def test_request_hash_is_stable_under_key_order() -> None:
    one = {"b": 1, "a": {"y": [1, 2], "x": None}}
    two = {"a": {"x": None, "y": [1, 2]}, "b": 1}
    assert request_hash(one) == request_hash(two)
    assert len(request_hash(one)) == 64
    int(request_hash(one), 16)


@pytest.mark.parametrize(
    "other",
    [
        {"b": 2, "a": {"y": [1, 2], "x": None}},
        {"b": 1, "a": {"y": [2, 1], "x": None}},
        {"b": 1, "a": {"y": [1, 2]}},
    ],
)
def test_request_hash_changes_with_content(other: dict[str, object]) -> None:
    assert request_hash({"b": 1, "a": {"y": [1, 2], "x": None}}) != request_hash(other)
