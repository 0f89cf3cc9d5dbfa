"""The pure planning core: queued jobs in, batches out. No I/O, no clock (`now` is given).

One window's plan, per model:
1. order jobs by urgency (near their deadline first, then priority, then arrival);
2. single-flight: identical deterministic requests collapse onto one leader;
3. prefix grouping: leaders sorted into radix-tree order over their prompt token ids and
   cut into runs that share a prefix;
4. packing: runs that fit a batch are never split; a run bigger than a batch is split at
   its weakest links (its subtrees stay whole), and a flat group bigger than a batch is cut
   into consecutive full batches; runs are packed into as few batches as the bounds allow;
5. batches come out most urgent first, each with a prefix key for worker affinity.

With grouping off (the baseline the benchmark compares against) step 3-4 become: cut the
leaders in urgency order.

`top_up` grows a batch that is still waiting for its engine with jobs queued since it was
planned, by the same rules: copies collapse, whole prefix runs join while the batch has
room, and the batch keeps radix order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coalescer.prefix_groups import PrefixRun, pack_tokens, prefix_runs, shared_prefix_tokens
from coalescer.single_flight import Collapsed, collapse

# vLLM caches the KV of whole blocks of 16 tokens: a shorter shared prefix saves nothing.
DEFAULT_MIN_SHARED_TOKENS = 16
# How much of a batch's shared prefix names it for worker affinity.
AFFINITY_KEY_TOKENS = 64


@dataclass(frozen=True)
class QueuedJob:
    id: str
    model: str
    estimated_tokens: int
    priority: int
    created_at: datetime
    tenant: str = ""
    deadline_at: datetime | None = None
    single_flight_key: str | None = None
    # The exact token ids the engine will see (chat template applied); empty if unknown.
    prompt_tokens: tuple[int, ...] = ()
    # The output allowance (max_tokens times n) inside `estimated_tokens`.
    output_tokens: int = 0

    @property
    def budget_tokens(self) -> int:
        """What the job counts against a batch's token budget: its prompt alone. vLLM
        admits a batch's requests as its KV cache frees, so output allowances need no room
        reserved up front; counting them cut a day's work into several engine calls, each
        as long as its longest answer (one call ran 1.33x faster than four, same output)."""
        return max(0, self.estimated_tokens - self.output_tokens)


@dataclass(frozen=True)
class BatchLimits:
    max_jobs: int
    max_tokens: int


@dataclass(frozen=True)
class PlanOptions:
    limits: BatchLimits
    now: datetime
    # A job whose deadline is this close goes out in the next window, ahead of the rest.
    urgent_within: timedelta = timedelta(seconds=60)
    group_prefixes: bool = True
    single_flight: bool = True
    min_shared_tokens: int = DEFAULT_MIN_SHARED_TOKENS


@dataclass(frozen=True)
class PlannedBatch:
    model: str
    job_ids: tuple[str, ...]  # what the engine runs, in this order
    estimated_tokens: int  # against the token budget: prompts, each shared prefix once
    prefix_key: str = ""  # the batch's main shared prefix, for worker affinity
    shared_prefix_tokens: int = 0
    # Copies of a leader in this batch: answered from the leader's generation.
    follower_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class WindowPlan:
    batches: list[PlannedBatch]
    followers: dict[str, str] = field(default_factory=dict)  # follower -> leader (in plan)
    # follower -> leader already batched or running in an earlier window
    joined_in_flight: dict[str, str] = field(default_factory=dict)


def is_urgent(job: QueuedJob, now: datetime, urgent_within: timedelta) -> bool:
    return job.deadline_at is not None and job.deadline_at - now <= urgent_within


def urgency_order(jobs: Iterable[QueuedJob], now: datetime,
                  urgent_within: timedelta) -> list[QueuedJob]:
    far_future = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(jobs, key=lambda j: (
        not is_urgent(j, now, urgent_within),
        j.deadline_at if is_urgent(j, now, urgent_within) and j.deadline_at else far_future,
        j.priority, j.created_at, j.id,
    ))


def _ordered_and_collapsed(jobs: Iterable[QueuedJob], options: PlanOptions,
                           in_flight: Mapping[str, str] | None
                           ) -> tuple[list[QueuedJob], Collapsed]:
    """`jobs` most urgent first, and their copies collapsed onto leaders when single-flight
    is on (every job its own leader when it is off)."""
    ordered = urgency_order(jobs, options.now, options.urgent_within)
    if options.single_flight:
        return ordered, collapse(ordered, in_flight or {})
    return ordered, Collapsed(leaders=[job.id for job in ordered], followers={},
                              joined_in_flight={})


def plan_window(
    jobs: Iterable[QueuedJob], options: PlanOptions, in_flight: Mapping[str, str] | None = None
) -> WindowPlan:
    """Plan one window. Every job ends up in exactly one place: a batch, a follower of a
    leader in the plan, or a follower of a leader in flight (`in_flight`: key -> job id)."""
    ordered, collapsed = _ordered_and_collapsed(jobs, options, in_flight)
    by_id = {job.id: job for job in ordered}
    rank = {job.id: index for index, job in enumerate(ordered)}
    followers_of: dict[str, list[str]] = {}
    for follower, leader in collapsed.followers.items():
        followers_of.setdefault(leader, []).append(follower)

    per_model: dict[str, list[QueuedJob]] = {}
    for leader_id in collapsed.leaders:
        per_model.setdefault(by_id[leader_id].model, []).append(by_id[leader_id])

    batches: list[PlannedBatch] = []
    for model, leaders in per_model.items():
        if options.group_prefixes:
            runs = _fit_runs(prefix_runs(leaders, _radix_key, options.min_shared_tokens),
                             options.limits)
            batches_of_groups = _pack(runs, options.limits)
        else:
            batches_of_groups = [[_Group(tuple(chunk), 0)]
                                 for chunk in _cut_in_order(leaders, options.limits)]
        batches.extend(_to_batch(model, groups, followers_of) for groups in batches_of_groups)
    batches.sort(key=lambda b: min(rank[j] for j in b.job_ids))
    return WindowPlan(batches, collapsed.followers, collapsed.joined_in_flight)


@dataclass(frozen=True)
class TopUp:
    """A waiting batch grown by queued jobs."""

    job_ids: tuple[str, ...]  # the batch's engine jobs, old and new, in engine order
    added: tuple[str, ...]  # queued leaders that joined it
    followers: dict[str, str]  # queued copy -> its leader among `added`
    # queued copy -> a leader already batched or running (this batch's own included)
    joined_in_flight: dict[str, str]
    estimated_tokens: int

    @property
    def taken(self) -> set[str]:
        """Every queued job this top-up placed."""
        return {*self.added, *self.followers, *self.joined_in_flight}


def top_up(members: Sequence[QueuedJob], queued: Iterable[QueuedJob], options: PlanOptions,
           in_flight: Mapping[str, str] | None = None) -> TopUp:
    """Grow a waiting batch (`members`, its engine jobs) with queued jobs. Copies of a
    request batched or running (`in_flight`: key -> leader id, this batch's leaders among
    them) join their leader; the rest join as whole prefix runs, most urgent run first,
    while the batch stays within its limits; runs that do not fit stay queued whole."""
    ordered, collapsed = _ordered_and_collapsed(queued, options, in_flight)
    by_id = {job.id: job for job in ordered}
    rank = {job.id: index for index, job in enumerate(ordered)}
    candidates = [by_id[leader] for leader in collapsed.leaders]
    runs: list[tuple[QueuedJob, ...]]
    if options.group_prefixes:
        runs = [group.jobs for group in _fit_runs(
            prefix_runs(candidates, _radix_key, options.min_shared_tokens), options.limits)]
        runs.sort(key=lambda run: min(rank[job.id] for job in run))
    else:
        runs = [(job,) for job in candidates]
    chosen = list(members)
    for run in runs:
        grown = [*chosen, *run]
        if _fits(len(grown), _batch_tokens(grown, options), options.limits):
            chosen = grown
    if options.group_prefixes:
        chosen.sort(key=_radix_key)
    added = tuple(job.id for job in chosen if job.id in by_id)
    joined = set(added)
    return TopUp(
        job_ids=tuple(job.id for job in chosen),
        added=added,
        followers={f: leader for f, leader in collapsed.followers.items() if leader in joined},
        joined_in_flight=dict(collapsed.joined_in_flight),
        estimated_tokens=_batch_tokens(chosen, options),
    )


def _batch_tokens(jobs: Sequence[QueuedJob], options: PlanOptions) -> int:
    """A batch's token budget use: prompts, and with prefix grouping each prefix shared by
    radix neighbours (at least `min_shared_tokens` long) once."""
    if not options.group_prefixes:
        return sum(job.budget_tokens for job in jobs)
    total = 0
    previous: tuple[str, bytes] | None = None
    for job in sorted(jobs, key=_radix_key):
        key = _radix_key(job)
        shared = 0
        if previous is not None and previous[0] == key[0]:
            shared = shared_prefix_tokens(previous[1], key[1])
        total += max(0, job.budget_tokens - (shared if shared >= options.min_shared_tokens
                                             else 0))
        previous = key
    return total


def _radix_key(job: QueuedJob) -> tuple[str, bytes]:
    return job.tenant, pack_tokens(job.prompt_tokens)


def _fits(jobs: int, tokens: int, limits: BatchLimits) -> bool:
    return jobs <= limits.max_jobs and tokens <= limits.max_tokens


@dataclass(frozen=True)
class _Group:
    """Jobs that go to one batch together, and the prefix they share (a single job split
    off a bigger group still carries that group's prefix, for affinity)."""

    jobs: tuple[QueuedJob, ...]
    shared_tokens: int

    @property
    def tokens(self) -> int:
        """The group's share of a batch's token budget. The engine computes and holds the
        shared prefix once for the whole group, so only the first job counts it; counting
        it per job cut big prefix groups into many small batches."""
        if not self.jobs:
            return 0
        first, *rest = self.jobs
        return first.budget_tokens + sum(
            max(0, job.budget_tokens - self.shared_tokens) for job in rest)


def _fit_runs(runs: Iterable[PrefixRun[QueuedJob]], limits: BatchLimits) -> list[_Group]:
    """Split runs that no batch can hold: at their weakest links first, so each subtree
    stays whole, and a flat group into consecutive chunks of a full batch each."""
    fitted: list[_Group] = []
    pending = [(run, run.shared_tokens) for run in runs]
    while pending:
        run, inherited = pending.pop(0)
        shared = run.shared_tokens if run.links else inherited
        group = _Group(run.items, shared)
        if _fits(len(group.jobs), group.tokens, limits):
            fitted.append(group)
            continue
        parts = run.split_at_weakest_links()
        if len(parts) > 1:
            pending[:0] = [(part, shared) for part in parts]
            continue
        fitted.extend(_Group(chunk, shared) for chunk in _chunk(run.items, limits))
    return fitted


def _chunk(jobs: Sequence[QueuedJob], limits: BatchLimits) -> list[tuple[QueuedJob, ...]]:
    return [tuple(chunk) for chunk in _cut_in_order(jobs, limits)]


def _pack(groups: Sequence[_Group], limits: BatchLimits) -> list[list[_Group]]:
    """First-fit decreasing: big groups placed first, each into the first batch with room.
    Inside a batch the groups keep radix order, so shared prefixes sit next to each other."""
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i].jobs), i))
    bins: list[list[int]] = []
    used: list[tuple[int, int]] = []
    for index in order:
        size, tokens = len(groups[index].jobs), groups[index].tokens
        for slot, (jobs_used, tokens_used) in enumerate(used):
            if _fits(jobs_used + size, tokens_used + tokens, limits):
                bins[slot].append(index)
                used[slot] = (jobs_used + size, tokens_used + tokens)
                break
        else:
            bins.append([index])
            used.append((size, tokens))
    return [[groups[index] for index in sorted(slot)] for slot in bins]


def _cut_in_order(leaders: Sequence[QueuedJob], limits: BatchLimits) -> list[list[QueuedJob]]:
    groups: list[list[QueuedJob]] = []
    current: list[QueuedJob] = []
    tokens = 0
    for job in leaders:
        if current and not _fits(len(current) + 1, tokens + job.budget_tokens, limits):
            groups.append(current)
            current, tokens = [], 0
        current.append(job)
        tokens += job.budget_tokens
    if current:
        groups.append(current)
    return groups


def _to_batch(model: str, groups: Sequence[_Group],
              followers_of: Mapping[str, list[str]]) -> PlannedBatch:
    jobs = [job for group in groups for job in group.jobs]
    key, shared = _main_prefix(groups)
    return PlannedBatch(
        model=model,
        job_ids=tuple(job.id for job in jobs),
        estimated_tokens=sum(group.tokens for group in groups),
        prefix_key=key,
        shared_prefix_tokens=shared,
        follower_ids=tuple(f for job in jobs for f in followers_of.get(job.id, ())),
    )


def _main_prefix(groups: Sequence[_Group]) -> tuple[str, int]:
    """The batch's affinity key and its most valuable shared prefix (shared tokens times
    jobs sharing them). The key hashes at most the first AFFINITY_KEY_TOKENS of that
    prefix: the exact shared length wobbles with each wave's suffixes, its start does not,
    so the next wave with the same system prompt maps to the same worker."""
    best = max(groups, key=lambda g: g.shared_tokens * len(g.jobs))
    first = best.jobs[0]
    head = first.prompt_tokens[:min(best.shared_tokens or AFFINITY_KEY_TOKENS,
                                    AFFINITY_KEY_TOKENS)]
    # Without prompt tokens (an embedding model, or grouping off) there is no cache to
    # come back to: keyed by the tenant alone, every batch would prefer the same worker
    # while the others idle. Keyed by its first job, each batch lands anywhere.
    identity = pack_tokens(head) if head else b"job:" + first.id.encode()
    digest = hashlib.blake2b(first.tenant.encode() + b"\x00" + identity, digest_size=12)
    return digest.hexdigest(), best.shared_tokens
