"""The cascade at the worker: which answers of a batch go on to the next tier.

A cascade job's answer on a tier that is not the last is judged by `routing.cascade`; a
confident one is kept like any other, an unconfident one becomes an escalation that
`models.cascade` records (the attempt billed, the job queued again on the next tier, to
be batched by the coalescer like everything else). A verifier configured for a tag the
job carries (`routing.verifiers`) can force the escalation of a confident answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from models.cascade import Escalation
from models.queue import JobOutcome
from penny.settings import Settings
from routing.cascade import CascadePolicy, Confidence, escalation_reason, next_tier
from routing.verifiers import TaggedVerifier, build_verifier, verifier_for
from workers.engine import Generation

CASCADE_MODE = "cascade"


def cascade_verifiers(settings: Settings) -> list[TaggedVerifier]:
    return [TaggedVerifier(tag, build_verifier(spec.kind, spec.pattern))
            for tag, spec in settings.cascade_verifiers.items()]


def cascade_policy(settings: Settings) -> CascadePolicy:
    return CascadePolicy(
        min_mean_logprob=settings.cascade_min_mean_logprob,
        min_token_logprob=settings.cascade_min_token_logprob,
        escalate_on_length=settings.cascade_escalate_on_length,
    )


def judge_cascade(
    model: str,
    outcomes: Sequence[JobOutcome],
    generations: Sequence[Generation],
    settings: Settings,
) -> list[JobOutcome]:
    """`outcomes` with each unconfident cascade answer marked for the next tier, and each
    kept one's ledger route saying so."""
    policy = cascade_policy(settings)
    verifiers = cascade_verifiers(settings)
    judged = []
    for outcome, generation in zip(outcomes, generations, strict=True):
        route = outcome.job.route
        if (route is None or route.get("mode") != CASCADE_MODE or outcome.ledger is None
                or outcome.result is None):  # a failed job is judged by no one
            judged.append(outcome)
            continue
        upward = next_tier(settings.tiers, model)
        reason = None
        if upward is not None:
            # A failed check is decisive whatever the confidence, so it is asked first.
            tagged = verifier_for(outcome.job.tags, verifiers)
            failure = tagged.verifier(generation.text) if tagged is not None else None
            reason = (f"verifier {tagged.tag}: {failure}"
                      if tagged is not None and failure is not None
                      else escalation_reason(
                          Confidence(generation.mean_logprob, generation.min_logprob,
                                     generation.finish_reason), policy))
        if reason is None or upward is None:
            kept = ("kept on the last tier" if upward is None
                    else "confident on the first try" if not route.get("attempts")
                    else "confident after escalating")
            judged.append(replace(outcome, ledger={
                **outcome.ledger, "route": f"cascade: {kept} ({model})"}))
            continue
        judged.append(replace(outcome, escalation=Escalation(
            to_model=upward, reason=reason, min_logprob=generation.min_logprob)))
    return judged
