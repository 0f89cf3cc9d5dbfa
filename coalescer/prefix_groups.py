"""Prefix grouping over token ids: a radix tree flattened into sorted order.

Sorting prompts lexicographically by token ids puts every set of prompts that share a
prefix into one contiguous run, and the longest common prefix (LCP) of two neighbours is
the depth at which their paths in the radix tree part. So the sorted list plus the LCP of
each adjacent pair *is* the radix tree: a subtree is a run whose inner links are all at
least its depth. Cutting a run at its weakest links splits the tree at its root, keeping
deeper subtrees whole. Token ids are packed big-endian so that byte order equals token
order and the comparisons run as memcmp.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
TOKEN_BYTES = 4


def pack_tokens(token_ids: Sequence[int]) -> bytes:
    return struct.pack(f">{len(token_ids)}I", *token_ids)


def shared_prefix_tokens(a: bytes, b: bytes) -> int:
    """Length in tokens of the longest common prefix of two packed token sequences."""
    low, high = 0, min(len(a), len(b)) // TOKEN_BYTES
    while low < high:  # binary search on slice equality: log n memcmp calls
        middle = (low + high + 1) // 2
        end = middle * TOKEN_BYTES
        if a[:end] == b[:end]:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class PrefixRun(Generic[Item]):
    """Items in radix-tree order; `links[i]` is the shared prefix of items i and i+1."""

    items: tuple[Item, ...]
    links: tuple[int, ...]

    @property
    def shared_tokens(self) -> int:
        """The prefix every item in the run shares (0 for a single item)."""
        return min(self.links) if self.links else 0

    def split_at_weakest_links(self) -> list[PrefixRun[Item]]:
        """Split where the run's paths part closest to the root; deeper subtrees stay
        whole. A run whose links are all equal (one flat group) cannot be split this way
        and comes back as is."""
        if not self.links:
            return [self]
        weakest = min(self.links)
        parts: list[PrefixRun[Item]] = []
        start = 0
        for index, link in enumerate(self.links):
            if link == weakest:
                parts.append(self._slice(start, index + 1))
                start = index + 1
        parts.append(self._slice(start, len(self.items)))
        return parts if len(parts) > 1 and weakest < max(self.links) else [self]

    def _slice(self, start: int, stop: int) -> PrefixRun[Item]:
        return PrefixRun(self.items[start:stop], self.links[start:stop - 1])


def prefix_runs(
    items: Sequence[Item],
    sort_key: Callable[[Item], tuple[str, bytes]],
    min_shared_tokens: int,
) -> list[PrefixRun[Item]]:
    """Sort items by (namespace, packed tokens) and cut them into maximal runs whose
    neighbours share at least `min_shared_tokens` tokens within one namespace.

    The namespace keeps tenants apart: their prefixes never share a cache entry, so
    grouping them would buy nothing.
    """
    ordered = sorted(items, key=sort_key)
    runs: list[PrefixRun[Item]] = []
    current: list[Item] = []
    links: list[int] = []
    previous: tuple[str, bytes] | None = None
    for item in ordered:
        key = sort_key(item)
        link = -1
        if previous is not None and previous[0] == key[0]:
            link = shared_prefix_tokens(previous[1], key[1])
        if current and link < min_shared_tokens:
            runs.append(PrefixRun(tuple(current), tuple(links)))
            current, links = [], []
        elif current:
            links.append(link)
        current.append(item)
        previous = key
    if current:
        runs.append(PrefixRun(tuple(current), tuple(links)))
    return runs
