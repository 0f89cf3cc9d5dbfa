"""The SSRF policy on its own: every spelling of an address penny must not call is
refused, naming the field and the reason; public addresses pass; allowing loopback (tests
only) allows this machine and nothing else."""

from __future__ import annotations

import pytest

from delivery.addresses import check_url
from delivery.guard import checked_callback_url
from delivery.sender import IPAddress
from penny.errors import UnsafeUrl

# (url, a piece of the reason). Every one of these must be refused.
REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0x7F.0x0.0x0.0x1/", "loopback"),
    ("http://127.000.000.001/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST./", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[::127.0.0.1]/", "IPv4-compatible form of 127.0.0.1"),
    ("http://[::ffff:0:127.0.0.1]/", "IPv4-translated form of 127.0.0.1"),
    ("http://[64:ff9b::127.0.0.1]/", "NAT64 form of 127.0.0.1"),
    ("http://[64:ff9b::a00:1]/", "NAT64 form of 10.0.0.1"),
    ("http://[2002:7f00:1::]/", "6to4 form of 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::1]/", "6to4 form of 169.254.169.254"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://2852039166/", "cloud metadata"),  # 169.254.169.254 as one number
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://012.0.0.1/", "private"),  # octal 012 = 10
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fc00::1]/", "unique local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved or broadcast"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.2.1/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[2001:0:4136:e378::1]/", "Teredo"),
    ("http://256.0.0.1/", "not a valid IPv4"),
    ("http://1.2.3.4.5/", "not a valid IPv4"),
    ("http://09.1.1.1/", "not a valid IPv4"),  # 09 is not octal
    ("http://example.123/", "not a valid IPv4"),
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("ftp://example.com/", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("gopher://example.com:70/", "http or https"),
    ("//example.com/", "http or https"),
    ("http://", "no host"),
    ("http://[::1/", "not a valid URL"),
    ("http://[zz::1]/", "Invalid IPv6 address"),
]


def test_the_corpus_is_large() -> None:
    assert len(REFUSED) >= 30


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_at_registration_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        checked_callback_url(url, allow_loopback=False, resolve=_no_dns)
    assert refused.value.param == "callback_url"
    assert reason in refused.value.message


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/penny",
    "http://8.8.8.8:8080/hook",
    "http://134744072/",  # 8.8.8.8 as one number: a spelling, not a refusal
    "https://[2606:4700:4700::1111]/x",
    "http://[::ffff:8.8.8.8]/",
    "http://[64:ff9b::8.8.8.8]/",  # NAT64 of a public address is public
    "http://[2002:808:808::1]/",  # 6to4 of a public address too
])
def test_public_addresses_pass(url: str) -> None:
    assert checked_callback_url(url, allow_loopback=False, resolve=_no_dns) == url


def _no_dns(host: str, port: int) -> list[IPAddress]:
    return []


def _dns(*answers: str) -> object:
    import ipaddress

    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers]

    return resolve


@pytest.mark.parametrize("answers", [
    ("127.0.0.1",),
    ("93.184.216.34", "10.1.2.3"),  # one inside address refuses the name whole
    ("::1",),
    ("169.254.169.254",),
])
def test_a_name_resolving_inside_is_refused(answers: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeUrl, match="resolves to") as refused:
        checked_callback_url("https://hooks.example.com/", allow_loopback=False,
                             param="url", resolve=_dns(*answers))  # type: ignore[arg-type]
    assert refused.value.param == "url"


def test_allowing_loopback_allows_this_machine_only() -> None:
    for url in ("http://127.0.0.1:9/", "http://[::1]:9/", "http://localhost:9/",
                "http://[::ffff:127.0.0.1]:9/", "http://2130706433:9/"):
        assert check_url(url, allow_loopback=True).port == 9
    for url in ("http://10.0.0.1/", "http://[64:ff9b::127.0.0.1]/",
                "http://169.254.169.254/", "http://0.0.0.0/"):
        with pytest.raises(UnsafeUrl):
            check_url(url, allow_loopback=True)


def test_a_long_url_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="longer than"):
        check_url("https://example.com/" + "a" * 2000, allow_loopback=False)
