"""Builds the configured object store."""

from __future__ import annotations

from penny.settings import Settings
from storage.local import LocalDirectoryStore
from storage.port import ObjectStore
from storage.s3 import S3Store


def object_store(settings: Settings) -> ObjectStore:
    url = settings.object_store_url
    if url is None:
        return LocalDirectoryStore(settings.data_dir / "objects")
    if url.startswith("s3://"):
        return S3Store(url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    if url.startswith("file://"):
        from pathlib import Path

        return LocalDirectoryStore(Path(url.removeprefix("file://")))
    raise ValueError(f"unsupported object store URL {url!r}: use s3://bucket/prefix or file://")
