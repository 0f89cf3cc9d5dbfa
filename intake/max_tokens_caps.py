"""The opt-in per-feature max_tokens cap, applied at intake. Pure.

A tenant may cap max_tokens for one value of the feature tag (PENNY_REPORT_FEATURE_TAG),
usually at what the max_tokens audit recommends. A job of that feature asking for more is
stored with `max_tokens` lowered to the cap and `requested_max_tokens` keeping what the
client asked for: the ledger's `saving_output_limit_usd` counts a job the cap cut short
(finish_reason "length") as if it had made all it asked for, and the job's answer says
"length" for everyone to see.

Every intake path applies the caps (single jobs, bulk, OpenAI batch files, Anthropic
message batches, CSV and JSONL uploads, `penny run`, a batch's retry): the caller reads the
tenant's caps once per submission or file into a `JobCaps` and applies it to each job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models.submissions import NewJob

DEFAULT_FEATURE_TAG = "feature"  # PENNY_REPORT_FEATURE_TAG's default


def feature_of(tags: Mapping[str, Any] | None, feature_tag: str) -> str | None:
    """The job's feature: its tag's value as text, None without one."""
    if not tags or feature_tag not in tags:
        return None
    value = tags[feature_tag]
    return value if isinstance(value, str) else str(value)


def capped_sampling(sampling: Mapping[str, Any], cap: int) -> dict[str, Any] | None:
    """The sampling parameters with max_tokens lowered to `cap`; None when they ask for no
    more. `requested_max_tokens` is what the client first asked for: a request capped
    before (a retried batch line) keeps its original ask whatever cap it meets now."""
    applied = int(sampling.get("max_tokens", 0))
    if applied <= cap:
        return None
    return {**sampling, "max_tokens": cap,
            "requested_max_tokens": int(sampling.get("requested_max_tokens", applied))}


def capped(job: NewJob, cap: int) -> NewJob:
    """`job` with its max_tokens lowered to `cap`; as it was when it asked for no more."""
    sampling = job.request.get("sampling")
    if job.error is not None or not isinstance(sampling, dict):
        return job  # a failed line, or an embeddings job: nothing to cap
    lowered = capped_sampling(sampling, cap)
    if lowered is None:
        return job
    cut = int(sampling.get("max_tokens", 0)) - cap
    return replace(job, request={**job.request, "sampling": lowered},
                   estimated_tokens=max(0, job.estimated_tokens - cut))


@dataclass(frozen=True)
class JobCaps:
    """A tenant's caps by feature, read once for a whole submission or file, and the tag
    whose value names a job's feature. Without caps every method answers at once."""

    by_feature: Mapping[str, int] = field(default_factory=dict)
    feature_tag: str = DEFAULT_FEATURE_TAG

    def cap_of(self, tags: Mapping[str, Any] | None) -> int | None:
        """The cap for a job with these tags; None when its feature has none."""
        if not self.by_feature:
            return None
        feature = feature_of(tags, self.feature_tag)
        return None if feature is None else self.by_feature.get(feature)

    def job(self, job: NewJob) -> NewJob:
        cap = self.cap_of(job.tags)
        return job if cap is None else capped(job, cap)

    def jobs(self, jobs: Sequence[NewJob]) -> list[NewJob]:
        if not self.by_feature:
            return list(jobs)
        return [self.job(job) for job in jobs]


NO_CAPS = JobCaps()


def apply_caps(jobs: Sequence[NewJob], caps: Mapping[str, int], feature_tag: str
               ) -> list[NewJob]:
    """Every job with the cap of its feature applied (no caps: the jobs as they were)."""
    return JobCaps(caps, feature_tag).jobs(jobs)
