"""The routing core: features, the router's tiers, the cascade's rule, calibration and the
catalog, as plain tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from penny.settings import Settings
from routing.calibration import LabelledOutcome, calibrate, estimate
from routing.cascade import CascadePolicy, Confidence, escalation_reason, next_tier
from routing.catalog import build_catalog
from routing.features import features_of
from routing.policy import requested_model, tag_routes
from routing.router import Difficulty, assess, route, tier_for
from routing.verifiers import TaggedVerifier, build_verifier, verifier_for

TWO = ["small", "large"]
THREE = ["small", "medium", "large"]


@pytest.mark.parametrize(("prompt", "max_tokens", "expected"), [
    ("What is the capital of France?", 32, Difficulty.EASY),
    ("Is the sun a star? Answer yes or no.", 16, Difficulty.EASY),
    ("Convert 3 km to metres.", 16, Difficulty.EASY),
    ("Hello there", 16, Difficulty.EASY),
    ("What is 12 + 7?", 16, Difficulty.MEDIUM),
    ("Explain why the sky is blue.", 64, Difficulty.MEDIUM),
    ("Tell me about France.", 512, Difficulty.MEDIUM),
    ("What is (12 + 7) * 3 - 4?", 16, Difficulty.HARD),
    ("Write a python function that reverses a list.", 64, Difficulty.HARD),
    ("```\nx = 1\n```\nWhat does this print?", 64, Difficulty.HARD),
    ("a" * 2000, 16, Difficulty.HARD),
])
def test_difficulty_from_cheap_features(prompt: str, max_tokens: int,
                                        expected: Difficulty) -> None:
    assert assess(features_of(prompt, max_tokens)).difficulty is expected


def test_constrained_output_from_a_long_prompt_is_medium() -> None:
    text = "Extract the year. Record: " + "name Ada, born 1815, London. " * 12
    assert assess(features_of(text, 32)).difficulty is Difficulty.EASY
    assert assess(features_of(text, 32, constrained_output=True)).difficulty \
        is Difficulty.MEDIUM


@pytest.mark.parametrize(("count", "expected"), [
    (1, [0, 0, 0]), (2, [0, 1, 1]), (3, [0, 1, 2]), (4, [0, 2, 3]),
])
def test_levels_spread_over_any_number_of_tiers(count: int, expected: list[int]) -> None:
    assert [tier_for(level, count) for level in Difficulty] == expected


def test_tier_for_needs_a_tier() -> None:
    with pytest.raises(ValueError, match="at least one tier"):
        tier_for(Difficulty.EASY, 0)


def test_route_names_the_tier_and_the_reason() -> None:
    easy = route(features_of("What is the capital of Peru?", 16), TWO)
    assert (easy.model, easy.tier) == ("small", 0)
    assert easy.reason == "easy: lookup question"
    hard = route(features_of("def f(x): return x", 16), THREE)
    assert (hard.model, hard.tier, hard.reason) == ("large", 2, "hard: code markers")
    medium = route(features_of("Summarize this.", 16), THREE)
    assert medium.model == "medium"


def test_one_tier_takes_everything() -> None:
    assert route(features_of("def f(): pass", 16), ["only"]).model == "only"


@pytest.mark.parametrize(("confidence", "reason"), [
    (Confidence(-0.1, -2.0, "stop"), None),
    (Confidence(-0.5, -2.0, "stop"), "mean token logprob -0.500 < -0.350"),
    (Confidence(-0.1, -2.0, "length"), "the answer was cut off at max_tokens"),
    (Confidence(None, None, "stop"), "no tokens to judge confidence by"),
])
def test_escalation_reason_default_policy(confidence: Confidence, reason: str | None) -> None:
    assert escalation_reason(confidence, CascadePolicy()) == reason


def test_min_token_logprob_and_length_are_optional_rules() -> None:
    answer = Confidence(-0.1, -4.0, "length")
    strict = CascadePolicy(min_mean_logprob=-1.0, min_token_logprob=-3.0,
                           escalate_on_length=False)
    assert escalation_reason(answer, strict) == "lowest token logprob -4.000 < -3.000"
    lax = CascadePolicy(min_mean_logprob=-1.0, escalate_on_length=False)
    assert escalation_reason(answer, lax) is None


def test_next_tier_stops_at_the_last() -> None:
    assert next_tier(THREE, "small") == "medium"
    assert next_tier(THREE, "medium") == "large"
    assert next_tier(THREE, "large") is None
    assert next_tier(THREE, "elsewhere") is None


def _labelled() -> list[LabelledOutcome]:
    # Confident answers are right; unconfident ones wrong on small, right on large.
    return [
        LabelledOutcome(Confidence(-0.05, None, "stop"), True, True),
        LabelledOutcome(Confidence(-0.10, None, "stop"), True, True),
        LabelledOutcome(Confidence(-0.20, None, "stop"), True, False),
        LabelledOutcome(Confidence(-0.60, None, "stop"), False, True),
        LabelledOutcome(Confidence(-0.90, None, "stop"), False, True),
    ]


def test_estimate_counts_both_attempts_of_an_escalation() -> None:
    result = estimate(_labelled(), CascadePolicy(-0.5), small_cost=1, large_cost=4)
    assert result.accuracy == 1.0
    assert result.escalation_rate == pytest.approx(0.4)
    # 5 small runs + 2 large runs against 5 large runs.
    assert result.relative_cost == pytest.approx((5 * 1 + 2 * 4) / (5 * 4))


def test_estimate_needs_outcomes() -> None:
    with pytest.raises(ValueError, match="no labelled"):
        estimate([], CascadePolicy(), small_cost=1, large_cost=2)


def test_calibrate_picks_the_cheapest_threshold_reaching_the_target() -> None:
    best = calibrate(_labelled(), 1.0, small_cost=1, large_cost=4)
    assert best.accuracy == 1.0
    assert best.escalation_rate == pytest.approx(0.4)
    assert -0.6 < best.policy.min_mean_logprob <= -0.2


def test_calibrate_keeps_every_small_answer_when_that_is_enough() -> None:
    best = calibrate(_labelled(), 0.6, small_cost=1, large_cost=4)
    assert best.escalation_rate == 0.0
    assert best.policy.min_mean_logprob == float("-inf")


def test_calibrate_falls_back_to_the_most_accurate() -> None:
    outcomes = [LabelledOutcome(Confidence(-0.1, None, "stop"), False, False)]
    best = calibrate(outcomes, 0.9, small_cost=1, large_cost=4)
    assert best.accuracy == 0.0
    assert best.escalation_rate == 0.0  # escalating buys nothing, so it is not paid for


def test_catalog_lists_tiers_labels_and_routed_names() -> None:
    entries = {e.id: e for e in build_catalog(
        ["large", "small", "other"], ["embed"], TWO,
        {"small": "pruned copy"}, {"small": {"dtype": "float32"}})}
    assert entries["small"].penny_fields() == {
        "penny_kind": "chat", "penny_tier": 0, "penny_description": "pruned copy",
        "penny_engine": {"dtype": "float32"}}
    assert entries["large"].tier == 1
    assert entries["other"].tier is None
    assert entries["embed"].kind == "embedding"
    assert entries["auto"].kind == entries["cascade"].kind == "router"
    assert "small < large" in (entries["cascade"].description or "")


def test_catalog_without_tiers_has_no_routed_names() -> None:
    names = [e.id for e in build_catalog(["m"], [], [], {}, {})]
    assert names == ["m"]


def test_parse_labelled_reads_costs_and_names_a_bad_line() -> None:
    from routing.calibration import parse_labelled

    good = ('{"mean_logprob": -0.2, "finish_reason": "stop", "small_correct": true, '
            '"large_correct": true, "small_cost_usd": "1", "large_cost_usd": "3"}\n\n'
            '{"mean_logprob": null, "small_correct": false, "large_correct": true, '
            '"small_cost_usd": "3", "large_cost_usd": "5"}\n')
    parsed = parse_labelled(good)
    assert len(parsed.outcomes) == 2
    assert (parsed.small_cost, parsed.large_cost) == (2.0, 4.0)
    assert parsed.outcomes[1].confidence == Confidence(None, None, "stop")
    with pytest.raises(ValueError, match="line 2: KeyError"):
        parse_labelled(good.splitlines()[0] + '\n{"mean_logprob": -1}\n')


POLICY = tag_routes({"feature=faq": "cascade", "feature=code": "large", "tier=1": "medium",
                     "batch": "auto"})


@pytest.mark.parametrize(("model", "metadata", "expected"), [
    (None, {"feature": "faq"}, ("cascade", "feature=faq")),
    (None, {"feature": "code", "batch": "x"}, ("large", "feature=code")),  # first declared
    (None, {"feature": "other", "batch": "nightly"}, ("auto", "batch")),  # `key`: any value
    (None, {"tier": 1}, ("medium", "tier=1")),  # a number matches its JSON text
    (None, {"tier": "2"}, ("default", None)),
    (None, {}, ("default", None)),
    ("small", {"feature": "faq"}, ("small", None)),  # a named model is never rerouted
])
def test_the_first_matching_tag_routes_a_job_that_names_no_model(
    model: str | None, metadata: dict[str, object], expected: tuple[str, str | None],
) -> None:
    asked, policy = requested_model(model, metadata, "default", POLICY)
    assert (asked, policy.tag if policy is not None else None) == expected


def test_tag_routes_must_name_a_chat_model_or_a_router_with_tiers() -> None:
    base = {"data_dir": Path("/nonexistent"), "models": {"small": "s", "large": "l"}}
    assert Settings(**base, tiers=TWO, tag_routes={"f=x": "auto"}).tag_routes == {"f=x": "auto"}
    with pytest.raises(ValidationError, match="tag_routes"):
        Settings(**base, tag_routes={"f=x": "auto"})  # no tiers: nothing to route among
    with pytest.raises(ValidationError, match="tag_routes"):
        Settings(**base, tiers=TWO, tag_routes={"f=x": "huge"})
    with pytest.raises(ValidationError, match="metadata key"):
        Settings(**base, tiers=TWO, tag_routes={"=x": "small"})


def test_the_built_in_verifiers_and_the_first_matching_tag() -> None:
    as_json = build_verifier("json")
    assert as_json('{"ok": true}') is None and as_json("[1, 2]") is None
    assert "not JSON" in (as_json("ok: true") or "")
    yes_no = build_verifier("regex", r"(?i)(yes|no)\.?")
    assert yes_no(" Yes.\n") is None
    assert yes_no("Yes, because...") == r"the answer does not match /(?i)(yes|no)\.?/"
    with pytest.raises(ValueError, match="pattern"):
        build_verifier("regex")
    verifiers = [TaggedVerifier("kind=yesno", yes_no), TaggedVerifier("kind", as_json)]
    assert verifier_for({"kind": "yesno"}, verifiers) == verifiers[0]
    assert verifier_for({"kind": "other"}, verifiers) == verifiers[1]
    assert verifier_for({}, verifiers) is verifier_for(None, verifiers) is None


@pytest.mark.parametrize("spec", [{"kind": "regex"}, {"kind": "regex", "pattern": "("},
                                  {"kind": "json", "pattern": "x"}, {"kind": "xml"}])
def test_a_verifier_setting_that_cannot_work_is_refused(spec: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="cascade_verifiers"):
        Settings(data_dir=Path("/nonexistent"), cascade_verifiers={"f": spec})


def test_calibrate_cascade_reads_a_labelled_file_and_names_the_threshold(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from penny.cli import app

    # Confident answers the small tier gets right, unsure ones only the large tier gets.
    lines = [{"mean_logprob": -0.1, "finish_reason": "stop", "small_correct": True,
              "large_correct": True}] * 6 + [
             {"mean_logprob": -1.5, "finish_reason": "stop", "small_correct": False,
              "large_correct": True}] * 4
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(line) for line in lines))
    runner = CliRunner()
    done = runner.invoke(app, ["calibrate-cascade", str(labelled), "--target", "0.95",
                               "--small-cost", "1", "--large-cost", "10"])
    assert done.exit_code == 0, done.output
    assert "accuracy 100.0%" in done.output
    threshold = float(done.output.split("PENNY_CASCADE_MIN_MEAN_LOGPROB=")[1])
    # Just above the unsure answers (printed to 4 places): they escalate, the six stay.
    assert -1.5 <= threshold < -0.1
    no_costs = runner.invoke(app, ["calibrate-cascade", str(labelled)])
    assert no_costs.exit_code == 2 and "give --small-cost and --large-cost" in no_costs.output
