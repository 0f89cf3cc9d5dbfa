"""Reading a tenant's `s3://` objects through boto3, as a stream.

Only locations `storage.s3_sources.SourcePolicy` allowed reach here: the check comes
first, this module only reads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from penny.errors import NotFound, SourceUnavailable, TooLarge
from storage.s3_sources import S3Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"}


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str


class _Body(io.RawIOBase):
    """boto3's streaming body as a raw stream, for a buffered reader to read lines from."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Reader:
    def __init__(self, *, endpoint_url: str | None, region: str) -> None:
        self.client: S3Client = boto3.client("s3", endpoint_url=endpoint_url,
                                             region_name=region)

    def _missing(self, location: S3Location, param: str) -> NotFound:
        # Denied and absent read alike: which objects exist is not the caller's to learn.
        return NotFound(f"penny cannot read {location.url[:300]!r}: no such object, or no "
                        "access to it", param=param)

    def _failed(self, location: S3Location, error: Exception, param: str) -> Exception:
        """What a failed S3 call means to the caller: no such object, or a store that
        did not answer (a 503, not a 500: the request was fine)."""
        if isinstance(error, ClientError):
            if str(error.response.get("Error", {}).get("Code")) in _MISSING:
                return self._missing(location, param)
            reason = f"the object store answered {error.response.get('Error', {}).get('Code')}"
        else:
            reason = f"the object store could not be used ({type(error).__name__})"
        return SourceUnavailable(f"penny could not read {location.url[:300]!r}: {reason}; "
                                 "try again later", param=param)

    def info(self, location: S3Location, param: str = "source") -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=location.bucket, Key=location.key)
        except (ClientError, BotoCoreError) as error:
            raise self._failed(location, error, param) from error
        return ObjectInfo(size=int(head["ContentLength"]), etag=str(head.get("ETag", "")))

    def open(self, location: S3Location, info: ObjectInfo, param: str = "source"
             ) -> IO[bytes]:
        """The object as a buffered stream, pinned to the version `info` described (a
        concurrent overwrite makes the read fail instead of mixing two files)."""
        try:
            response = self.client.get_object(Bucket=location.bucket, Key=location.key,
                                              IfMatch=info.etag)
        except (ClientError, BotoCoreError) as error:
            raise self._failed(location, error, param) from error
        return io.BufferedReader(_Body(response["Body"]), buffer_size=1 << 16)

    def read(self, location: S3Location, limit: int, param: str = "source") -> bytes:
        """The whole object, when it is at most `limit` bytes."""
        info = self.info(location, param)
        if info.size > limit:
            raise TooLarge(f"{location.url[:300]!r} is {info.size} bytes; the limit is "
                           f"{limit}", param=param)
        with self.open(location, info, param) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:  # pragma: no cover - the object grew under the same ETag
            raise TooLarge(f"{location.url[:300]!r} is larger than {limit} bytes",
                           param=param)
        return data
