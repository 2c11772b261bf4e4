"""URL rules shared by the API models and the CLI."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_pce_url(url: str) -> str:
    """The PCE base URL without a trailing slash; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the PCE URL must look like https://pce.example.com:8443")
    if "/api/v" in parts.path:
        raise ValueError("give the PCE base URL without the /api/v2 path")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("plain http is only allowed for loopback hosts; use https")
    return url.rstrip("/")
