"""urls.py: where a URL connects, the allowed PCE hosts and ports, and the hosts no URL may
name (issue 23 item 8; the CRD's CEL rule agreeing with it is in tests/api/test_crd.py)."""

from __future__ import annotations

import re

import pytest

from flowexport.urls import (
    FORBIDDEN_HOST,
    check_pce_url,
    check_url,
    endpoint_of,
    forbidden_host,
    parse_host_port,
)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://PCE.example.com", ("pce.example.com", 443)),
        ("https://pce.example.com:8443/base", ("pce.example.com", 8443)),
        ("http://127.0.0.1", ("127.0.0.1", 80)),
        ("https://[0:0::1]:9443", ("[::1]", 9443)),
    ],
)
def test_a_url_connects_to_its_host_and_port(url: str, endpoint: tuple[str, int]) -> None:
    assert endpoint_of(url) == endpoint


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("pce.example.com", ("pce.example.com", 443)),
        ("PCE.example.com:8443", ("pce.example.com", 8443)),
        ("10.0.0.5:443", ("10.0.0.5", 443)),
        ("[FD00::5]:8443", ("[fd00::5]", 8443)),
    ],
)
def test_an_allowed_host_is_a_host_and_a_port(text: str, endpoint: tuple[str, int]) -> None:
    assert parse_host_port(text) == endpoint


def test_a_host_alone_allows_port_443_only() -> None:
    assert parse_host_port("pce.example.com") != endpoint_of("https://pce.example.com:8443")
    assert parse_host_port("pce.example.com") == endpoint_of("https://pce.example.com")


@pytest.mark.parametrize(
    "text", ["", "https://pce", "pce.example.com:", "pce:0", "pce:65536", "a b", "*", "[::1"]
)
def test_what_is_not_host_or_host_port_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST|port"):
        parse_host_port(text)


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.0.1",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "[::ffff:169.254.169.254]",
        "[::169.254.169.254]",
        "0.0.0.0",
        "[::]",
        "kubernetes",
        "kubernetes.default",
        "KUBERNETES.default.svc",
        "kubernetes.default.svc.cluster.local",
        "metadata.google.internal",
        "instance-data.ec2.internal",
    ],
)
def test_metadata_link_local_and_the_api_server_are_forbidden(host: str) -> None:
    assert forbidden_host(host)
    for check in (check_pce_url, lambda u: check_url(u, "the endpoint URL")):
        with pytest.raises(ValueError, match="link-local or cloud metadata"):
            check(f"https://{host}:443")
    assert re.search(FORBIDDEN_HOST, f"https://{host}:443")


@pytest.mark.parametrize(
    "host", ["pce.example.com", "10.169.254.1", "[::1]", "127.0.0.1", "kubernetes-pce.example.com"]
)
def test_other_hosts_are_not(host: str) -> None:
    assert not forbidden_host(host)
    assert not re.search(FORBIDDEN_HOST, f"https://{host}")
