"""The object store port."""

from __future__ import annotations

from typing import Protocol


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (overwriting) and return the object's URI."""
        ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None:
        """Remove the object under `key`; removing a missing object is not an error."""
        ...

    def download_url(self, uri: str, seconds: int) -> str | None:
        """A plain-HTTP link to the object at `uri` (as `put` returned it), valid for
        `seconds`; None when the store has no such links (a local directory)."""
        ...
