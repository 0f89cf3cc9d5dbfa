"""Object store on S3 or any S3-compatible endpoint, through boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

import boto3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3Store:
    def __init__(self, url: str, *, endpoint_url: str | None, region: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 object store URL looks like s3://bucket/prefix, not {url!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client: S3Client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> str:
        full_key = self._key(key)
        self.client.put_object(Bucket=self.bucket, Key=full_key, Body=data,
                               ContentType=content_type)
        return f"s3://{self.bucket}/{full_key}"

    def get(self, key: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        return response["Body"].read()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def download_url(self, uri: str, seconds: int) -> str | None:
        """A presigned GET URL for an object this store wrote (signed locally: no request
        is made); None for any other URI."""
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or parsed.netloc != self.bucket or not key:
            return None
        if self.prefix and not key.startswith(self.prefix + "/"):
            return None
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds)
