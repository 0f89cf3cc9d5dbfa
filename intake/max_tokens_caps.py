"""The opt-in per-feature max_tokens cap, applied at intake. Pure.

A tenant may cap max_tokens for one value of the feature tag (PENNY_REPORT_FEATURE_TAG),
usually at what the max_tokens audit recommends. A job of that feature asking for more is
stored with `max_tokens` lowered to the cap and `requested_max_tokens` keeping what the
client asked for: the ledger's `saving_output_limit_usd` counts a job the cap cut short
(finish_reason "length") as if it had made all it asked for, and the job's answer says
"length" for everyone to see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from models.submissions import NewJob


def feature_of(tags: Mapping[str, Any] | None, feature_tag: str) -> str | None:
    """The job's feature: its tag's value as text, None without one."""
    if not tags or feature_tag not in tags:
        return None
    value = tags[feature_tag]
    return value if isinstance(value, str) else str(value)


def capped(job: NewJob, cap: int) -> NewJob:
    """`job` with its max_tokens lowered to `cap`; as it was when it asked for no more."""
    sampling = job.request.get("sampling")
    if job.error is not None or not isinstance(sampling, dict):
        return job  # a failed line, or an embeddings job: nothing to cap
    asked = int(sampling.get("max_tokens", 0))
    if asked <= cap:
        return job
    request = {**job.request, "sampling": {**sampling, "max_tokens": cap,
                                           "requested_max_tokens": asked}}
    return replace(job, request=request,
                   estimated_tokens=max(0, job.estimated_tokens - (asked - cap)))


def apply_caps(jobs: Sequence[NewJob], caps: Mapping[str, int], feature_tag: str
               ) -> list[NewJob]:
    """Every job with the cap of its feature applied (no caps: the jobs as they were)."""
    if not caps:
        return list(jobs)
    out = []
    for job in jobs:
        feature = feature_of(job.tags, feature_tag)
        cap = caps.get(feature) if feature is not None else None
        out.append(capped(job, cap) if cap is not None else job)
    return out
