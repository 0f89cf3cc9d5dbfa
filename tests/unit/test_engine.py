"""workers.engine: a stored job request becomes a GenerationRequest without loss."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from intake.schema import JobRequest
from workers.engine import GenerationRequest, Sampling, context_overflow

PROPERTY = settings(database=None, deadline=None, max_examples=200)


def test_from_stored_messages_request() -> None:
    request = JobRequest.model_validate(
        {"messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
         "max_tokens": 12, "temperature": 0.3, "top_p": 0.8, "stop": ["\n", "END"], "seed": 9}
    )
    built = GenerationRequest.from_stored("job-1", request.engine_request(), "tenant-a")
    assert built == GenerationRequest(
        key="job-1",
        sampling=Sampling(max_tokens=12, temperature=0.3, top_p=0.8, stop=("\n", "END"), seed=9),
        messages=(("system", "terse"), ("user", "hi")),
        prompt=None,
        cache_salt="tenant-a",
    )


def test_from_stored_prompt_request_with_defaults() -> None:
    built = GenerationRequest.from_stored("k", JobRequest(prompt="go").engine_request(), "s")
    assert built == GenerationRequest(
        key="k", sampling=Sampling(max_tokens=256), messages=None, prompt="go", cache_salt="s"
    )
    assert built.sampling.logprobs is False  # logprobs cost engine speed: only on request


def test_from_stored_asks_for_logprobs_when_the_job_did() -> None:
    stored = JobRequest(prompt="go", logprobs=True).engine_request()
    assert GenerationRequest.from_stored("k", stored, "s").sampling.logprobs is True


# What intake lets through: no NUL, no lone surrogate (Postgres stores neither), not blank.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                min_size=1, max_size=20).filter(str.strip)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def job_requests(draw: st.DrawFn) -> JobRequest:
    payload: dict[str, Any] = {
        "max_tokens": draw(st.integers(min_value=1, max_value=4096)),
        "temperature": draw(st.floats(min_value=0.0, max_value=2.0)),
        "top_p": draw(st.floats(min_value=0.0, max_value=1.0, exclude_min=True)),
        "stop": draw(st.none() | st.lists(texts, max_size=4)),
        "seed": draw(st.none() | st.integers(min_value=0, max_value=2**63 - 1)),
        "logprobs": draw(st.booleans()),
    }
    if draw(st.booleans()):
        payload["messages"] = draw(messages)
    else:
        payload["prompt"] = draw(texts)
    return JobRequest.model_validate(payload)


@PROPERTY
@given(job_requests(), st.text(max_size=10))
def test_from_stored_round_trips_engine_request(request: JobRequest, salt: str) -> None:
    # The request document is stored as JSON on the job row, so go through JSON too.
    stored = json.loads(json.dumps(request.engine_request()))
    built = GenerationRequest.from_stored("key", stored, salt)
    assert built.key == "key"
    assert built.cache_salt == salt
    assert built.sampling == Sampling(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=tuple(request.stop or ()),
        seed=request.seed,
        logprobs=request.logprobs,
    )
    if request.messages is not None:
        assert built.messages == tuple((m.role, m.content) for m in request.messages)
        assert built.prompt is None
    else:
        assert built.messages is None
        assert built.prompt == request.prompt


def test_context_overflow_counts_the_whole_answer_allowance() -> None:
    assert context_overflow(1748, 300, 2048, "m") is None  # exactly full still fits
    message = context_overflow(1749, 300, 2048, "m")
    assert message is not None
    assert "the prompt has 1749 tokens and max_tokens is 300: 2049 tokens" in message
    assert "context window of 2048" in message and "at most 299" in message
    assert "at most 0" in (context_overflow(3000, 1, 2048, "m") or "")
