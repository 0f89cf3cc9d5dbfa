"""cache.keys and cache.model_identity: which requests share an answer, per-job modes, the
penny_cache field of hosted-API bodies, and the model fingerprint."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.keys import CacheMode, CachePolicy, parse_cache_mode, result_cache_key
from cache.model_identity import directory_fingerprint, source_identity
from intake.anthropic_requests import parse_requests
from intake.embeddings import parse_embedding_body
from intake.limits import IntakeLimits
from intake.line_problem import LineProblem
from intake.openai_lines import parse_batch_file
from intake.schema import JobRequest
from tests.support import jsonl

POLICY = CachePolicy(enabled=True, ttl=timedelta(days=1), identities={"m": "weights-1"})
LIMITS = IntakeLimits(models=frozenset({"m"}), default_model="m", max_output_tokens=1000,
                      max_prompt_chars=1000, embedding_models={"e": 4},
                      default_embedding_model="e")


def stored(**sampling: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}],
            "sampling": {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": [],
                         "seed": None, **sampling}}


SAMPLING_CHANGES = st.sampled_from([
    {"max_tokens": 9}, {"top_p": 0.5}, {"stop": ["x"]}, {"seed": 1},
    {"temperature": 0.7, "seed": 1},
])


@given(change=SAMPLING_CHANGES)
def test_equal_requests_share_a_key_and_any_sampling_change_splits_it(
    change: dict[str, Any]
) -> None:
    # (Tenants are kept apart by the entry's tenant column, not by the key: see
    # tests/integration/test_result_cache.py.)
    key = POLICY.key("m", stored())
    assert key is not None and key == POLICY.key("m", stored())
    assert POLICY.key("m", stored(**change)) not in (None, key)


@given(content=st.text(min_size=1, max_size=20), other=st.text(min_size=1, max_size=20))
def test_different_messages_never_share_a_key(content: str, other: str) -> None:
    one = {**stored(), "messages": [{"role": "user", "content": content}]}
    two = {**stored(), "messages": [{"role": "user", "content": other}]}
    assert (POLICY.key("m", one) == POLICY.key("m", two)) == (content == other)


def test_the_model_identity_is_part_of_the_key() -> None:
    swapped = CachePolicy(enabled=True, ttl=timedelta(days=1), identities={"m": "weights-2"})
    assert POLICY.key("m", stored()) != swapped.key("m", stored())
    assert result_cache_key("request", None) is None
    assert POLICY.key("unknown-model", stored()) is None  # weights not visible here


def test_sampled_requests_without_a_seed_have_no_key() -> None:
    assert POLICY.key("m", stored(temperature=0.7)) is None
    assert POLICY.key("m", stored(temperature=0.7, seed=3)) is not None


def test_modes_and_the_global_switch() -> None:
    assert (POLICY.reads("on"), POLICY.writes("on")) == (True, True)
    assert (POLICY.reads("off"), POLICY.writes("off")) == (False, False)
    assert (POLICY.reads("refresh"), POLICY.writes("refresh")) == (False, True)
    off = CachePolicy(enabled=False, ttl=timedelta(0), identities={"m": "weights-1"})
    assert (off.reads("on"), off.writes("on"), off.key("m", stored())) == (
        False, False, None)
    assert parse_cache_mode("refresh") == CacheMode.REFRESH
    with pytest.raises(ValueError, match="on, off, refresh"):
        parse_cache_mode("sometimes")


def test_the_native_field_is_validated() -> None:
    assert JobRequest.model_validate({"prompt": "x", "cache": "off"}).cache == CacheMode.OFF
    assert JobRequest.model_validate({"prompt": "x"}).cache == CacheMode.ON
    with pytest.raises(ValueError, match="cache"):
        JobRequest.model_validate({"prompt": "x", "cache": "maybe"})


def openai_line(body: dict[str, Any], url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": "a", "method": "POST", "url": url, "body": body}


def test_penny_cache_rides_in_openai_line_bodies() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    parsed = parse_batch_file(jsonl([openai_line({**chat, "penny_cache": "refresh"})]),
                              "/v1/chat/completions", LIMITS, 10)
    assert not parsed.errors
    assert isinstance(parsed.lines[0].request, JobRequest)
    assert parsed.lines[0].request.cache == CacheMode.REFRESH
    bad = parse_batch_file(jsonl([openai_line({**chat, "penny_cache": "no"})]),
                           "/v1/chat/completions", LIMITS, 10)
    assert [(e.line, e.code, e.param) for e in bad.errors] == [
        (1, "invalid_request", "body.penny_cache")]
    embedding = parse_embedding_body({"input": "x", "penny_cache": "off"}, "a", LIMITS)
    assert embedding.cache == CacheMode.OFF
    with pytest.raises(LineProblem) as problem:
        parse_embedding_body({"input": "x", "penny_cache": 1}, "a", LIMITS)
    assert problem.value.param == "body.penny_cache"


def test_penny_cache_rides_in_anthropic_params() -> None:
    params = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    good, bad = parse_requests([
        {"custom_id": "a", "params": {**params, "penny_cache": "off"}},
        {"custom_id": "b", "params": {**params, "penny_cache": "never"}},
    ], LIMITS, 10)
    assert good.request is not None and good.request.cache == CacheMode.OFF
    assert bad.request is None and bad.error is not None
    assert "params.penny_cache" in bad.error["message"]


def model_dir(root: Path, weights: bytes, config: str = '{"layers": 2}') -> Path:
    root.mkdir()
    (root / "config.json").write_text(config)
    (root / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (root / "model.safetensors").write_bytes(weights)
    (root / ".penny-prepared").write_text("marker\n")
    return root


BIG = 5 * 1024 * 1024  # hashed by its ends, as real weight files are


def test_the_fingerprint_follows_weights_config_and_template_but_not_file_times(
    tmp_path: Path,
) -> None:
    base = directory_fingerprint(model_dir(tmp_path / "a", b"\1" * BIG))
    assert directory_fingerprint(model_dir(tmp_path / "b", b"\1" * BIG)) == base  # a copy
    assert directory_fingerprint(model_dir(tmp_path / "c", b"\2" + b"\1" * (BIG - 1))) != base
    assert directory_fingerprint(model_dir(tmp_path / "d", b"\1" * BIG,
                                           config='{"layers": 3}')) != base
    template = model_dir(tmp_path / "e", b"\1" * BIG)
    (template / "tokenizer_config.json").write_text('{"chat_template": "{{ other }}"}')
    assert directory_fingerprint(template) != base
    touched = model_dir(tmp_path / "f", b"\1" * BIG)
    os.utime(touched / "model.safetensors", (1, 1))
    (touched / ".penny-prepared").write_text("converted again\n")  # hidden: not the model
    assert directory_fingerprint(touched) == base


def test_weights_this_process_cannot_see_have_no_identity(tmp_path: Path) -> None:
    assert source_identity(str(tmp_path / "missing"), tmp_path) is None
    assert source_identity("offline:smollm2", tmp_path) is None  # not prepared here
    assert source_identity("some-org/never-downloaded-model", tmp_path) is None
    assert source_identity(str(model_dir(tmp_path / "m", b"w")), tmp_path) is not None
