"""Prefix affinity across workers: consistent hashing with bounded loads.

Every worker keeps its own prefix cache, so a batch should go where its prefix was last
computed. Rendezvous (highest-random-weight) hashing gives each prefix key a stable
preference order over the live workers; a worker joining or leaving moves only the keys
it wins or held. The load bound (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
with Bounded Loads") caps every worker at ceil((1 + epsilon) * average load): a hot prefix
fills its favourite worker up to the cap and then spills to its second choice instead of
starving the other prefixes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence


def _weight(prefix_key: str, worker: str) -> int:
    digest = hashlib.blake2b(f"{worker}\x00{prefix_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preference_order(prefix_key: str, workers: Sequence[str]) -> list[str]:
    return sorted(workers, key=lambda w: (-_weight(prefix_key, w), w))


def load_cap(total_load: int, worker_count: int, epsilon: float) -> int:
    """The most batches one worker may hold once the new one is placed."""
    return max(1, math.ceil((1 + epsilon) * (total_load + 1) / worker_count))


def choose_worker(
    prefix_key: str, workers: Sequence[str], loads: Mapping[str, int], epsilon: float
) -> str | None:
    """The first worker in the key's preference order that stays within the load cap.
    None when there are no workers (the batch then goes to the model's shared queue)."""
    if not workers:
        return None
    cap = load_cap(sum(loads.get(w, 0) for w in workers), len(workers), epsilon)
    order = preference_order(prefix_key, workers)
    for worker in order:
        if loads.get(worker, 0) + 1 <= cap:
            return worker
    return min(order, key=lambda w: loads.get(w, 0))  # unreachable with epsilon >= 0


def assign_workers(
    prefix_keys: Sequence[str], workers: Sequence[str], loads: Mapping[str, int],
    epsilon: float,
) -> list[str | None]:
    """Place batches one after another, each seeing the load the previous ones added."""
    current = dict(loads)
    chosen: list[str | None] = []
    for key in prefix_keys:
        worker = choose_worker(key, workers, current, epsilon)
        if worker is not None:
            current[worker] = current.get(worker, 0) + 1
        chosen.append(worker)
    return chosen
