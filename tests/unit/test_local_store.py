"""storage.local: the directory-backed object store."""

from __future__ import annotations

from pathlib import Path

import pytest

from penny.errors import InvalidRequest
from storage.local import LocalDirectoryStore


def test_put_then_get_round_trips(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "objects")
    uri = store.put("sub-1/results.jsonl", b'{"a": 1}\n', "application/jsonl")
    assert store.get("sub-1/results.jsonl") == b'{"a": 1}\n'
    target = (tmp_path / "objects" / "sub-1" / "results.jsonl").resolve()
    assert uri == target.as_uri()
    assert target.read_bytes() == b'{"a": 1}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.jsonl"]


def test_put_overwrites(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("k.csv", b"old", "text/csv")
    store.put("k.csv", b"new", "text/csv")
    assert store.get("k.csv") == b"new"


def test_get_of_a_missing_key_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalDirectoryStore(tmp_path).get("nope")


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/escape"])
def test_keys_escaping_the_root_are_rejected(tmp_path: Path, key: str) -> None:
    store = LocalDirectoryStore(tmp_path / "objects")
    with pytest.raises(InvalidRequest, match="escapes the store"):
        store.put(key, b"x", "text/plain")
    with pytest.raises(InvalidRequest, match="escapes the store"):
        store.get(key)
    assert list(tmp_path.iterdir()) == []


def test_dot_segments_inside_the_root_are_fine(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path)
    store.put("a/../b.txt", b"ok", "text/plain")
    assert (tmp_path / "b.txt").read_bytes() == b"ok"


def test_empty_key_is_rejected(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "objects")
    with pytest.raises(InvalidRequest):
        store.put("", b"x", "text/plain")
