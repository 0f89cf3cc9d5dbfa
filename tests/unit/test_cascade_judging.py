"""The worker's cascade step: which answers of a batch go on to the next tier, and what
the kept ones' ledger rows say."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from models.queue import ClaimedJob, JobOutcome
from penny.settings import Settings
from workers.cascade import judge_cascade
from workers.engine import Generation

SETTINGS = Settings(data_dir=Path("/nonexistent"),
                    models={"small": "s", "large": "l", "other": "o"},
                    tiers=["small", "large"], default_model="large")


def _outcome(route: dict[str, Any] | None) -> JobOutcome:
    job = ClaimedJob(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), {}, "off", route)
    return JobOutcome(job, {"text": "x"}, {"cost_usd": 1, "route": None}, None)


def _generation(mean: float | None, finish: str = "stop") -> Generation:
    return Generation(key="k", text="x", finish_reason=finish, output_tokens=3,
                      mean_logprob=mean, min_logprob=mean)


CASCADE = {"mode": "cascade", "tier": "small", "reason": "...", "attempts": []}


def test_unconfident_cascade_answers_escalate_and_others_are_untouched() -> None:
    outcomes = [_outcome(CASCADE), _outcome(CASCADE), _outcome(None),
                _outcome({"mode": "auto", "tier": "small", "reason": "easy"})]
    generations = [_generation(-0.1), _generation(-2.0), _generation(-2.0),
                   _generation(-2.0)]
    judged = judge_cascade("small", outcomes, generations, SETTINGS)
    assert judged[0].escalation is None
    assert judged[0].ledger is not None
    assert judged[0].ledger["route"] == "cascade: confident on the first try (small)"
    assert judged[1].escalation is not None
    assert judged[1].escalation.to_model == "large"
    assert "mean token logprob -2.000" in judged[1].escalation.reason
    assert judged[2:] == outcomes[2:]


def test_the_last_tier_keeps_whatever_it_answers() -> None:
    route = {**CASCADE, "attempts": [{"model": "small"}]}
    judged = judge_cascade("large", [_outcome(route)], [_generation(-5.0, "length")],
                           SETTINGS)
    assert judged[0].escalation is None
    assert judged[0].ledger is not None
    assert judged[0].ledger["route"] == "cascade: kept on the last tier (large)"


def test_a_failed_cascade_job_is_not_judged() -> None:
    failed = JobOutcome(_outcome(CASCADE).job, None, None, {"code": "engine_error"})
    assert judge_cascade("small", [failed], [_generation(None)], SETTINGS) == [failed]


VERIFIED = Settings(data_dir=Path("/nonexistent"), models={"small": "s", "large": "l"},
                    tiers=["small", "large"], default_model="large",
                    cascade_verifiers={"feature=extract": {"kind": "json"},
                                       "feature": {"kind": "regex", "pattern": r"\d+"}})


def _tagged(tags: dict[str, Any] | None) -> JobOutcome:
    job = ClaimedJob(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), {}, "off", CASCADE, tags)
    return JobOutcome(job, {"text": "x"}, {"cost_usd": 1, "route": None}, None)


def _confident(text: str) -> Generation:
    return Generation(key="k", text=text, finish_reason="stop", output_tokens=3,
                      mean_logprob=-0.01, min_logprob=-0.02)


def test_a_failed_verifier_escalates_a_confident_answer_and_a_passed_one_keeps_it() -> None:
    outcomes = [_tagged({"feature": "extract"}), _tagged({"feature": "extract"}),
                _tagged({"feature": "count"}), _tagged({"feature": "count"}),
                _tagged(None)]
    generations = [_confident("Sure! {\"a\": 1}"), _confident(' {"a": 1} '),
                   _confident("about 12"), _confident("12\n"), _confident("not checked")]
    judged = judge_cascade("small", outcomes, generations, VERIFIED)
    escalated = [o.escalation.reason if o.escalation else None for o in judged]
    assert escalated[0] is not None
    assert escalated[0].startswith("verifier feature=extract: the answer is not JSON")
    assert escalated[2] == r"verifier feature: the answer does not match /\d+/"
    assert escalated[1] is escalated[3] is escalated[4] is None
    # On the last tier a failed check changes nothing: its answer is the cascade's last.
    [last] = judge_cascade("large", outcomes[:1], generations[:1], VERIFIED)
    assert last.escalation is None
