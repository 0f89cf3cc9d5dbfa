"""Which `s3://bucket/key` objects a tenant may have penny read. Pure.

A tenant names an object instead of uploading it; penny reads it with its own
credentials, so the name is checked against the buckets and prefixes configured for that
tenant before anything is read (not even a HEAD): one tenant can never make penny read
another's objects, or anything outside its prefixes.

A prefix is a folder: `s3://acme-in/batches` allows `s3://acme-in/batches/q1.csv`, not
`s3://acme-in/batches-private/x.csv`. S3 keys are matched as written (S3 does not
resolve `..`), and a key with `.` or `..` segments, an empty segment, or a control
character is refused outright rather than reasoned about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from penny.errors import InvalidRequest, SourceNotAllowed

# S3's rules for bucket names (general purpose buckets).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The object's file name (the key's last segment)."""
        return self.key.rsplit("/", 1)[-1]


def _bad(url: str, why: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {url[:300]!r} {why}", param=param)


def parse_s3_url(url: str, param: str = "source", *, prefix: bool = False) -> S3Location:
    """`s3://bucket/key` as a location; InvalidRequest naming `param` when it is not one.
    With `prefix`, the key may be empty or end in `/` (a folder)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "s3":
        raise _bad(url, "is not an s3://bucket/key URL", param)
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise _bad(url, "does not name a valid S3 bucket", param)
    if any(ord(c) < 0x20 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise _bad(url, "holds a control character or an unpaired surrogate", param)
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise _bad(url, f"has a key longer than {_MAX_KEY_BYTES} bytes", param)
    segments = key.split("/")
    if prefix and segments and segments[-1] == "":
        segments = segments[:-1]  # "folder/" is a prefix's usual spelling
    if not key and not prefix:
        raise _bad(url, "names a bucket but no object", param)
    if key and any(s in ("", ".", "..") for s in segments):
        raise _bad(url, "has an empty, '.' or '..' segment in its key", param)
    return S3Location(bucket, key)


@dataclass(frozen=True)
class SourcePolicy:
    """Per tenant name, the `s3://bucket/prefix` folders penny may read for it."""

    allowed: Mapping[str, tuple[S3Location, ...]]

    @classmethod
    def from_config(cls, config: Mapping[str, Iterable[str]]) -> SourcePolicy:
        return cls({tenant: tuple(parse_s3_url(url, "tenant_s3_sources", prefix=True)
                                  for url in urls)
                    for tenant, urls in config.items()})

    def check(self, tenant: str, url: str, param: str = "source") -> S3Location:
        """The location `url` names, if `tenant` may have it read; else SourceNotAllowed
        (InvalidRequest when it is no S3 object URL at all)."""
        location = parse_s3_url(url, param)
        for folder in self.allowed.get(tenant, ()):
            if location.bucket != folder.bucket:
                continue
            base = folder.key.rstrip("/")
            if not base or location.key.startswith(base + "/"):
                return location
        raise SourceNotAllowed(
            f"{param} {location.url[:300]!r} is outside the S3 locations this tenant may "
            "read (ask an operator to add it to PENNY_TENANT_S3_SOURCES)", param=param)
