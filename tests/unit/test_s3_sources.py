"""storage.s3_sources: which s3:// objects a tenant may have penny read."""

from __future__ import annotations

import pytest

from penny.errors import InvalidRequest, SourceNotAllowed
from storage.s3_sources import S3Location, SourcePolicy, parse_s3_url

POLICY = SourcePolicy.from_config({
    "acme": ["s3://acme-in/batches", "s3://shared-in/acme/"],
    "globex": ["s3://globex-in"],
})


@pytest.mark.parametrize(
    ("tenant", "url", "location"),
    [
        ("acme", "s3://acme-in/batches/q1.csv", S3Location("acme-in", "batches/q1.csv")),
        ("acme", "s3://acme-in/batches/2026/q1.csv",
         S3Location("acme-in", "batches/2026/q1.csv")),
        ("acme", "s3://shared-in/acme/x.jsonl", S3Location("shared-in", "acme/x.jsonl")),
        ("globex", "s3://globex-in/anything/at/all.csv",
         S3Location("globex-in", "anything/at/all.csv")),
    ],
)
def test_objects_under_an_allowed_folder_are_allowed(tenant: str, url: str,
                                                     location: S3Location) -> None:
    assert POLICY.check(tenant, url) == location
    assert location.url == url


@pytest.mark.parametrize(
    ("tenant", "url"),
    [
        ("acme", "s3://acme-in/private/x.csv"),  # another prefix, same bucket
        ("acme", "s3://acme-in/batches-private/x.csv"),  # a prefix is a folder
        ("acme", "s3://acme-in/batches"),  # the folder itself is no object in it
        ("acme", "s3://globex-in/x.csv"),  # another tenant's bucket
        ("acme", "s3://shared-in/globex/x.csv"),  # another tenant's folder
        ("globex", "s3://acme-in/batches/q1.csv"),
        ("initech", "s3://acme-in/batches/q1.csv"),  # a tenant with no sources
        ("acme", "s3://ACME-IN/batches/q1.csv"),  # bucket names are lower case
    ],
)
def test_anything_else_is_not_allowed(tenant: str, url: str) -> None:
    with pytest.raises((SourceNotAllowed, InvalidRequest)) as caught:
        POLICY.check(tenant, url)
    assert caught.value.param == "source"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://acme-in.s3.amazonaws.com/batches/q1.csv", "is not an s3://bucket/key URL"),
        ("S3://acme-in/batches/q1.csv", "is not an s3://bucket/key URL"),
        ("s3:/acme-in/batches/q1.csv", "is not an s3://bucket/key URL"),
        ("s3://acme-in/", "names a bucket but no object"),
        ("s3://a/x.csv", "does not name a valid S3 bucket"),
        ("s3://acme..in/x.csv", "does not name a valid S3 bucket"),
        ("s3://acme-in/batches/../private/x.csv", "'..' segment"),
        ("s3://acme-in/batches/./q1.csv", "'..' segment"),
        ("s3://acme-in/batches//q1.csv", "empty"),
        ("s3://acme-in/batches/q1.csv\x00", "control character"),
        ("s3://acme-in/batches/q1\n.csv", "control character"),
        ("s3://acme-in/batches/\ud800.csv", "unpaired surrogate"),
        ("s3://acme-in/" + "k" * 1100, "longer than 1024 bytes"),
    ],
)
def test_malformed_urls_are_refused_before_any_check(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_s3_url(url)
    assert fragment in caught.value.message


def test_a_bad_configured_prefix_is_refused_at_start() -> None:
    with pytest.raises(InvalidRequest, match="tenant_s3_sources"):
        SourcePolicy.from_config({"acme": ["https://example.com/x"]})
