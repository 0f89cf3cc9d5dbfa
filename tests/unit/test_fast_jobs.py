"""intake.fast_jobs and the single-flight key's fast encoding: the quick path builds the
very job (and key) the general one does, or leaves the decision to it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cache.keys import CachePolicy
from coalescer import single_flight
from coalescer.single_flight import canonical_json
from intake.compress_option import CompressOption, TagCompression
from intake.csv_mapping import CsvOptions, csv_mapping, plain_row_job, row_outcome
from intake.csv_reader import CsvRow
from intake.fast_jobs import plain_job
from intake.limits import IntakeLimits, resolve_model
from intake.max_tokens_caps import JobCaps
from intake.schema import JobRequest
from intake.service import jobs_for_bulk, jobs_for_file, new_job
from models.submissions import NewJob, job_keys, lookup_keys
from penny.errors import InvalidRequest, PennyError
from routing.policy import TagRoute

LIMITS = IntakeLimits(
    models=frozenset({"tiny", "small", "emb"}),
    default_model="tiny",
    max_output_tokens=512,
    max_prompt_chars=60,
    context_tokens=300,
    model_context_tokens={"small": 1000},
    embedding_models={"emb": 4},
    tiers=("tiny", "small"),
    tag_compression=(TagCompression("team=a", CompressOption(ratio=0.3)),),
)
ROUTED = IntakeLimits(models=frozenset({"tiny", "small"}), default_model="tiny",
                      max_output_tokens=512, max_prompt_chars=60,
                      tag_routes=(TagRoute("team=b", "small"),))


def general_job(payload: Any, limits: IntakeLimits) -> NewJob | None:
    """What the general path builds for `payload`; None when it refuses it."""
    try:
        request = JobRequest.model_validate(payload)
        return new_job(0, request, resolve_model(request, limits), limits)
    except (ValidationError, PennyError):
        return None


text = st.one_of(st.sampled_from(["", " ", "hi", "x" * 61, "a\x00b", "\ud800", "é ok",
                                  "tiny", "small", "emb", "auto", "cascade", "nope"]),
                 st.text(max_size=8))
number = st.one_of(st.integers(-3, 3), st.sampled_from([0, 1, 2**63, 300, 512, 513, 1000]),
                   st.floats(allow_nan=True), st.booleans(), st.none(), text)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                           "content": text}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), text, max_size=3),
    text)
metadata = st.one_of(st.dictionaries(text, st.one_of(text, st.integers()), max_size=3),
                     st.just({f"k{i}": "v" for i in range(17)}), st.just({"team": "a"}),
                     st.just({"team": "b"}), st.none(), text)
FIELDS = {
    "model": st.one_of(text, st.none()), "prompt": st.one_of(text, st.none()),
    "messages": st.one_of(st.lists(message, max_size=3), st.none(), text),
    "max_tokens": number, "temperature": number, "top_p": number, "seed": number,
    "priority": number, "custom_id": st.one_of(text, st.none(), st.just("i" * 501)),
    "metadata": metadata, "cache": st.one_of(st.sampled_from(["on", "off", "refresh",
                                                              "semantic", "x"]), number),
    "stop": st.just(["x"]), "n": st.just(2), "unknown": st.just(1),
}
# Mostly valid items, so the quick path is taken often and compared field by field.
NEAR_VALID = {
    "model": st.sampled_from(["tiny", "small", "auto", "emb", None]),
    "max_tokens": st.sampled_from([1, 16, 299, 300, 512]),
    "temperature": st.sampled_from([0, 0.0, 0.7, 2, 2.5]),
    "top_p": st.sampled_from([1, 0.5, 0.0]), "seed": st.sampled_from([None, 0, 42, -1]),
    "priority": st.sampled_from([0, -100, 100, 101]),
    "custom_id": st.sampled_from(["a", "row-9", "", None]),
    "metadata": st.sampled_from([{}, {"team": "a"}, {"team": "b", "k": "v"}, {"n": 1}]),
    "cache": st.sampled_from(["on", "off", "refresh"]),
}
near_valid = st.one_of(
    st.fixed_dictionaries({"prompt": st.sampled_from(["hi", "hello world", "x" * 60])},
                          optional=NEAR_VALID),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system"]), "content": st.sampled_from(
            ["hi", "a b c"])}), min_size=1, max_size=3)}, optional=NEAR_VALID))
payloads = st.one_of(st.fixed_dictionaries({}, optional=FIELDS), near_valid)


@settings(max_examples=1500, deadline=None)
@given(payloads, st.sampled_from([LIMITS, ROUTED]))
def test_a_plain_job_is_the_job_the_general_path_builds(payload: dict[str, Any],
                                                         limits: IntakeLimits) -> None:
    fast = plain_job(payload, 0, limits)
    if fast is not None:
        assert fast == general_job(payload, limits)


PLAIN = [
    {"prompt": "hello"},
    {"messages": [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "hello"}], "model": "small",
     "max_tokens": 500, "temperature": 1, "top_p": 0.5, "seed": 7, "priority": -3,
     "custom_id": "row-1", "metadata": {"team": "a", "x": "y"}, "cache": "off"},
    {"prompt": "hi", "model": None, "seed": None, "custom_id": None, "temperature": 0.7},
]


# Team "a" capped below most max_tokens the strategies ask for, team "b" at 1.
CAPS = JobCaps({"a": 20, "b": 1}, "team")


@settings(max_examples=600, deadline=None)
@given(near_valid, st.sampled_from([LIMITS, ROUTED]))
def test_a_capped_plain_job_is_the_general_job_with_the_cap_applied(
        payload: dict[str, Any], limits: IntakeLimits) -> None:
    fast = plain_job(payload, 0, limits, caps=CAPS)
    if fast is not None:
        general = general_job(payload, limits)
        assert general is not None
        assert fast == CAPS.job(general)


def test_a_plain_job_of_a_capped_feature_is_stored_capped() -> None:
    payload = {"prompt": "hi", "max_tokens": 200, "metadata": {"team": "a"}}
    job = plain_job(payload, 0, LIMITS, caps=CAPS)
    assert job is not None
    assert job.request["sampling"]["max_tokens"] == 20
    assert job.request["sampling"]["requested_max_tokens"] == 200
    uncapped = plain_job(payload, 0, LIMITS)
    assert uncapped is not None and uncapped.request["sampling"]["max_tokens"] == 200
    assert job.estimated_tokens == uncapped.estimated_tokens - 180
    other = {**payload, "metadata": {"team": "c"}}
    assert plain_job(other, 0, LIMITS, caps=CAPS) == plain_job(other, 0, LIMITS)


def test_plain_jobs_take_the_quick_path_and_match() -> None:
    for payload in PLAIN:
        fast = plain_job(payload, 0, LIMITS)
        assert fast is not None, payload
        assert fast == general_job(payload, LIMITS)
    # The tag's compression policy is applied as the general path applies it.
    assert plain_job(PLAIN[1], 0, LIMITS).request["compress"] == {  # type: ignore[union-attr]
        "ratio": 0.3, "min_context_chars": 2000}


def test_what_the_quick_path_leaves_to_the_general_one() -> None:
    left = [
        {"prompt": "hi", "model": "auto"},  # routed
        {"prompt": "hi", "model": "emb"},  # an embedding model
        {"prompt": "hi", "cache": "semantic"},
        {"prompt": "hi", "stop": ["x"]},  # a field outside the plain shape
        {"prompt": "hi", "max_tokens": True},  # strict numbers
        {"prompt": "hi", "temperature": None},
        {"prompt": "hi", "metadata": None},
        {"prompt": "hi", "max_tokens": 300},  # no room in tiny's window
        {"prompt": " "},
        {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
    ]
    for payload in left:
        assert plain_job(payload, 0, LIMITS) is None, payload
    # With a tag route in force a job naming no model is the general path's to place.
    assert plain_job({"prompt": "hi", "metadata": {"team": "b"}}, 0, ROUTED) is None


def test_bulk_names_every_bad_item_with_the_quick_path_on() -> None:
    items: list[object] = [{"prompt": "ok"}, {"prompt": "ok", "max_tokens": "8"},
                           {"prompt": "ok", "model": "nope"}, {"prompt": "ok"}]
    try:
        jobs_for_bulk(items, LIMITS, keep_requests=False)
    except InvalidRequest as error:
        assert [d["index"] for d in error.details or []] == [1, 2]
        assert error.message == "2 of 4 jobs are invalid; nothing was queued"
    else:
        raise AssertionError("bad items were accepted")
    requests, jobs = jobs_for_bulk([items[0], items[3]], LIMITS, keep_requests=False)
    assert requests == [] and [j.line_no for j in jobs] == [0, 1]
    kept, same = jobs_for_bulk([items[0], items[3]], LIMITS)
    assert len(kept) == 2 and same == jobs


cells = st.lists(st.one_of(text, st.sampled_from(["1", "0", "-1", "1.5", "nan", "x", "",
                                                  "9" * 30])), min_size=6, max_size=6)


@settings(max_examples=800, deadline=None)
@given(cells, st.sampled_from([None, "Say {body} to {team}"]))
def test_a_plain_csv_row_is_the_job_the_general_path_builds(row: list[str],
                                                             template: str | None) -> None:
    header = ("custom_id", "prompt", "body", "team", "max_tokens", "temperature")
    mapping = csv_mapping(header, CsvOptions(template=template))
    csv_row = CsvRow(7, tuple(row))
    fast = plain_row_job(mapping, csv_row, LIMITS)
    if fast is not None:
        (general,) = jobs_for_file([row_outcome(mapping, csv_row)], LIMITS)
        assert general.error is None
        assert fast == NewJob(**{**general.__dict__, "input_row": list(row)})
        capped = plain_row_job(mapping, csv_row, LIMITS, CAPS)
        assert capped == CAPS.job(fast)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                                                                 allow_infinity=False),
              st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_canonical_json_is_json_dumps_bytes(document: Any) -> None:
    try:
        expected = json.dumps(document, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: neither encoder may pass it
        return
    assert canonical_json(document) == expected


def test_canonical_json_spells_floats_as_json_does() -> None:
    for value in [1e-05, 1e16, 1.7976931348623157e308, 5e-324, 0.0001, 123.0, -0.0]:
        assert canonical_json({"v": value}) == json.dumps({"v": value},
                                                          separators=(",", ":")).encode()


def test_a_stored_request_is_encoded_without_json_dumps(monkeypatch: Any) -> None:
    from coalescer import single_flight

    def refuse(*_: Any, **__: Any) -> str:
        raise AssertionError("json.dumps was called")

    job = plain_job(PLAIN[1], 0, LIMITS)
    assert job is not None
    expected = single_flight.single_flight_key("4e5a0d3c-1e00-4c6e-9e2f-0123456789ab",
                                               job.model, job.request)
    monkeypatch.setattr(single_flight.json, "dumps", refuse)
    assert single_flight.single_flight_key("4e5a0d3c-1e00-4c6e-9e2f-0123456789ab",
                                           job.model, job.request) == expected


# The check before the faster one: a number at the start or after a separator, spelled
# with an exponent or as a tiny fraction.
_FIRST_FLOAT_CHECK = re.compile(rb"(?:^|[:\[,])-?(?:[0-9]+(?:\.[0-9]+)?[eE]|0\.0000)")
spelled = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([b"-", b"0", b"1", b"9", b".", b"e", b"E", b":", b"[", b",",
                              b'"', b"{", b"0.0000", b"x"]), max_size=14).map(b"".join),
    json_values.map(lambda v: json.dumps(v, separators=(",", ":")).encode()))


@settings(max_examples=1000, deadline=None)
@given(spelled)
def test_the_float_check_finds_what_the_first_one_found(encoded: bytes) -> None:
    assert (single_flight._may_spell_floats_apart(encoded)
            == (_FIRST_FLOAT_CHECK.search(encoded) is not None))


sampling = st.fixed_dictionaries({}, optional={
    "max_tokens": st.integers(1, 600), "temperature": st.sampled_from([0.0, 0, 0.7, 1e-05]),
    "seed": st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    "top_p": st.floats(allow_nan=False, allow_infinity=False), "stop": st.lists(st.text())})
requests = st.fixed_dictionaries({"sampling": sampling},
                                 optional={"messages": json_values, "prompt": st.text(),
                                           "x": json_values})
names = st.one_of(st.text(max_size=12), st.sampled_from(["tiny", "a,1e5", ":0.00001", "é"]))


@settings(max_examples=500, deadline=None)
@given(requests, names, names)
def test_keys_from_parts_are_the_keys_of_the_whole(request: dict[str, Any], model: str,
                                                  tenant: str) -> None:
    try:
        whole = canonical_json({"tenant": tenant, "model": model, "request": request})
        cache_whole = canonical_json({"tenant": "", "model": model, "request": request})
    except UnicodeEncodeError:  # a lone surrogate: no key is made for it either way
        return
    keys = single_flight.single_flight_keys((tenant, ""), model, request)
    if keys is None:
        assert request["sampling"].get("temperature", 0) > 0
        assert request["sampling"].get("seed") is None
        return
    assert keys == [hashlib.sha256(whole).hexdigest(), hashlib.sha256(cache_whole).hexdigest()]
    assert keys[0] == single_flight.single_flight_key(tenant, model, request)


def test_job_keys_are_the_lookup_and_stored_keys() -> None:
    tenant = uuid.uuid4()
    cache = CachePolicy(enabled=True, ttl=timedelta(days=1),
                        identities={"tiny": "w1", "small": None})
    jobs = [job for payload in [*PLAIN, {"prompt": "x", "cache": "off"},
                                {"prompt": "y", "cache": "refresh"}]
            if (job := plain_job(payload, 0, LIMITS)) is not None]
    jobs.append(dataclasses.replace(jobs[0], single_flight=False))
    jobs.append(dataclasses.replace(jobs[0], error={"code": "invalid_line", "message": "m"}))
    assert len(jobs) == 7
    for policy in (cache, None, dataclasses.replace(cache, enabled=False)):
        cache_keys, flight_keys = job_keys(jobs, tenant, policy)
        assert cache_keys == lookup_keys(jobs, policy)
        assert flight_keys == [
            None if job.error or not job.single_flight
            else single_flight.single_flight_key(str(tenant), job.model, job.request)
            for job in jobs]
    cache_keys, flight_keys = job_keys(jobs, tenant, cache)
    # A cache key: a mode that reads, a model with an identity, a deterministic request.
    # A single-flight key: a deterministic request that does not opt out, and no error.
    assert [k is not None for k in cache_keys] == [True, False, False, False, False, True,
                                                   False]
    assert [k is not None for k in flight_keys] == [True, True, False, True, True, False,
                                                    False]
