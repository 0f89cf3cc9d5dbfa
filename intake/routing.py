"""`model: "auto"` and `model: "cascade"` at intake: which tier a job is queued on, and
the route it records. The decision itself is the pure `routing` package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from intake.schema import JobRequest
from penny.errors import UnknownModel
from routing.features import RequestFeatures, features_of
from routing.policy import TagRoute, requested_model
from routing.router import AUTO_MODEL, CASCADE_MODEL, ROUTED_MODELS, assess, route

AUTO_MODE = "auto"
CASCADE_MODE = "cascade"
# A tier named by the per-tag policy (routing.policy), not by the client.
POLICY_MODE = "policy"


def request_features(request: JobRequest) -> RequestFeatures:
    if request.messages is not None:
        text = "\n".join(m.content for m in request.messages)
    else:
        text = request.prompt or ""
    return features_of(text, request.max_tokens,
                       constrained_output=request.output_constraint() is not None)


def routed_model(request: JobRequest, model: str, tiers: Sequence[str]) -> str:
    """The tier a job asking for `model` runs on: itself unless it names the router."""
    if model not in ROUTED_MODELS:
        return model
    if not tiers:
        raise UnknownModel(f"model {model!r} needs model tiers, and this deployment declares "
                           "none (PENNY_TIERS)", param="model")
    if model == CASCADE_MODEL:
        return tiers[0]
    return route(request_features(request), tiers).model


def job_route(request: JobRequest, model: str, routes: Sequence[TagRoute] = ()
              ) -> dict[str, Any] | None:
    """What the job records about its route, given the tier it was queued on (`routes`:
    the per-tag policy); None for a job that named its model or took the default."""
    asked, policy = requested_model(request.model, request.metadata, model, routes)
    # A policy's tag leads the reason: it, not the client, chose the way here.
    by_tag = f"tag {policy.tag}: " if policy is not None else ""
    route: dict[str, Any]
    if asked == AUTO_MODEL:
        assessment = assess(request_features(request))
        reason = f"{assessment.difficulty.name.lower()}: {assessment.reason}"
        # The level lets a worker's router classifier (routing.classifier) take it on.
        route = {"mode": AUTO_MODE, "tier": model, "reason": by_tag + reason,
                 "difficulty": assessment.difficulty.name.lower()}
    elif asked == CASCADE_MODEL:
        route = {"mode": CASCADE_MODE, "tier": model,
                 "reason": by_tag + "a cascade starts on the cheapest tier", "attempts": []}
    elif policy is not None:
        route = {"mode": POLICY_MODE, "tier": model, "reason": f"tag {policy.tag} names it"}
    else:
        return None
    if policy is not None:
        route["policy"] = policy.tag
    return route

