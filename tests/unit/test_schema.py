"""intake.schema and intake.limits: validating a job request and resolving its model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from intake.limits import IntakeLimits, resolve_model
from intake.schema import JobRequest, estimate_tokens
from penny.errors import InvalidRequest, UnknownModel

LIMITS = IntakeLimits(
    models=frozenset({"tiny", "small"}),
    default_model="tiny",
    max_output_tokens=100,
    max_prompt_chars=20,
)
USER_HI = [{"role": "user", "content": "hi"}]


def test_prompt_request_defaults() -> None:
    request = JobRequest.model_validate({"prompt": "hello"})
    assert (request.model, request.messages, request.prompt) == (None, None, "hello")
    assert (request.max_tokens, request.temperature, request.top_p) == (256, 0.0, 1.0)
    assert (request.stop, request.seed, request.priority, request.metadata) == (
        None, None, 0, {},
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        pytest.param({}, "exactly one", id="neither-prompt-nor-messages"),
        pytest.param({"prompt": "p", "messages": USER_HI}, "exactly one", id="both"),
        pytest.param({"messages": []}, "messages", id="empty-messages"),
        pytest.param({"prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param({"prompt": "p", "max_tokens": 0}, "max_tokens", id="zero-max-tokens"),
        pytest.param({"prompt": "p", "max_tokens": -3}, "max_tokens", id="negative-max-tokens"),
        pytest.param({"prompt": "p", "temperature": 2.5}, "temperature", id="hot"),
        pytest.param({"prompt": "p", "top_p": 0}, "top_p", id="zero-top-p"),
        pytest.param({"prompt": "p", "stop": ["a", "b", "c", "d", "e"]}, "stop", id="5-stops"),
        pytest.param({"prompt": "p", "stop": ["ok", ""]}, "stop sequences", id="empty-stop"),
        pytest.param({"prompt": "p", "seed": -1}, "seed", id="negative-seed"),
        pytest.param({"prompt": "p", "priority": 101}, "priority", id="priority-too-high"),
        pytest.param({"prompt": "p", "model": ""}, "model", id="empty-model"),
        pytest.param({"prompt": "p", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"messages": [{"role": "tool", "content": "x"}]}, "role", id="bad-role"),
        pytest.param({"messages": [{"role": "user", "content": ""}]}, "content", id="empty"),
        pytest.param(
            {"prompt": "p", "metadata": {f"k{i}": i for i in range(17)}}, "metadata",
            id="too-many-tags",
        ),
    ],
)
def test_invalid_requests_are_rejected(payload: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate(payload)
    assert fragment in str(caught.value)


def test_prompt_chars_counts_every_message() -> None:
    request = JobRequest.model_validate(
        {"messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": "de"}]}
    )
    assert request.prompt_chars() == 5


def test_estimate_tokens() -> None:
    request = JobRequest(prompt="x" * 31, max_tokens=10)
    assert estimate_tokens(request) == 31 // 3 + 8 + 10


def test_engine_request_for_messages() -> None:
    request = JobRequest.model_validate(
        {"messages": USER_HI, "max_tokens": 9, "temperature": 0.7, "top_p": 0.9,
         "stop": ["\n"], "seed": 3}
    )
    assert request.engine_request() == {
        "sampling": {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "stop": ["\n"],
                     "seed": 3},
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_engine_request_for_prompt() -> None:
    assert JobRequest(prompt="go").engine_request() == {
        "sampling": {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0, "stop": [],
                     "seed": None},
        "prompt": "go",
    }


def test_engine_request_asks_for_logprobs_only_when_the_job_does() -> None:
    # Absent rather than false by default: the stored document, and with it the
    # single-flight key, of a job that does not ask stays what it always was.
    assert "logprobs" not in JobRequest(prompt="go").engine_request()["sampling"]
    assert "logprobs" not in JobRequest(prompt="go", logprobs=False).engine_request()["sampling"]
    assert JobRequest(prompt="go", logprobs=True).engine_request()["sampling"]["logprobs"] is True


def test_default_model_used_when_omitted() -> None:
    assert resolve_model(JobRequest(prompt="hi", max_tokens=5), LIMITS) == "tiny"


def test_named_model_used_when_served() -> None:
    assert resolve_model(JobRequest(prompt="hi", model="small", max_tokens=5), LIMITS) == "small"


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel) as caught:
        resolve_model(JobRequest(prompt="hi", model="huge", max_tokens=5), LIMITS)
    assert caught.value.param == "model"
    assert caught.value.code == "model_not_found"
    assert "'huge'" in caught.value.message
    assert "small, tiny" in caught.value.message


def test_unknown_default_model_is_also_rejected() -> None:
    limits = IntakeLimits(frozenset({"small"}), "tiny", 100, 20)
    with pytest.raises(UnknownModel):
        resolve_model(JobRequest(prompt="hi", max_tokens=5), limits)


@pytest.mark.parametrize(("max_tokens", "ok"), [(100, True), (101, False)])
def test_max_tokens_limit(max_tokens: int, ok: bool) -> None:
    request = JobRequest(prompt="hi", max_tokens=max_tokens)
    if ok:
        assert resolve_model(request, LIMITS) == "tiny"
        return
    with pytest.raises(InvalidRequest) as caught:
        resolve_model(request, LIMITS)
    assert caught.value.param == "max_tokens"
    assert "101" in caught.value.message


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        pytest.param({"prompt": "x" * 21}, "prompt", id="prompt"),
        pytest.param(
            {"messages": [{"role": "system", "content": "x" * 11},
                          {"role": "user", "content": "y" * 10}]},
            "messages", id="messages",
        ),
    ],
)
def test_prompt_too_long(payload: dict[str, Any], param: str) -> None:
    request = JobRequest.model_validate({**payload, "max_tokens": 5})
    with pytest.raises(InvalidRequest) as caught:
        resolve_model(request, LIMITS)
    assert caught.value.param == param
    assert "21 characters" in caught.value.message


def test_prompt_exactly_at_the_limit_is_fine() -> None:
    assert resolve_model(JobRequest(prompt="x" * 20, max_tokens=5), LIMITS) == "tiny"
