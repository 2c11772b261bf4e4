"""URL rules shared by the API models, the CRD and the CLI.

`check_url` is the whole rule in Python; `URL_PATTERN` and the `CREDENTIALS`/`HTTP_LOOPBACK`
regexes express as much of it as the API server can check (a pattern and CEL rules, all RE2).
"""

from __future__ import annotations

import ipaddress
import re

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_NAME = rf"{_LABEL}(\.{_LABEL})*"
_IPV6 = r"\[[0-9A-Fa-f:.]+\]"
_LOOPBACK = rf"(localhost|localhost\.localdomain|ip6-localhost|127(\.{_OCTET}){{3}}|\[::1\])"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
#: Printable ASCII but `#` and `?`: no query, no fragment, no spaces.
_PATH = r'(/[!-"$->@-~]*)?'
_STRICT = rf"(https://({_NAME}|{_IPV6})|http://{_LOOPBACK})(:{_PORT})?{_PATH}"

#: A value with userinfo (`user:pass@`) before its first `/`, `?` or `#` after the scheme.
CREDENTIALS = r"^([^/?#@]*//)?[^/?#@]*@"
#: An http URL whose host is a loopback one (the only hosts plain http may go to).
HTTP_LOOPBACK = rf"^http://{_LOOPBACK}([:/]|$)"
#: A URL whose host is all digits and dots (so it must be an IPv4 address), and one whose
#: host is a valid IPv4 address.
NUMERIC_HOST = r"^[a-z]+://[0-9.]+([:/]|$)"
VALID_IPV4_HOST = rf"^[a-z]+://{_OCTET}(\.{_OCTET}){{3}}([:/]|$)"
#: A URL whose path has an /api/vN segment (the PCE URL is the base, without it).
API_PATH = r"^[a-z]+://[^/]*/(.*/)?api/v"
#: The OpenAPI pattern. A pattern failure echoes the value in the API server's answer, so
#: values carrying credentials pass it and are refused by a CEL rule (whose message does not).
URL_PATTERN = rf"^({CREDENTIALS[1:]}|{_STRICT}$)"

_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(:(?P<port>.*))?", re.DOTALL)


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, field: str) -> str:
    """`value` without a trailing slash if it is a safe http(s) URL; else ValueError naming
    `field` (e.g. "the PCE URL"). Messages never repeat the value."""
    if re.match(CREDENTIALS, value):
        raise ValueError(
            f"{field} must not contain credentials (user:password@); they belong in a Secret"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{field} must not contain spaces or control characters")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(
            f"{field} must look like https://host[:port] (http:// only for a loopback host)"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(f"{field} must not have a query (?...) or fragment (#...)")
    authority = rest.split("/", 1)[0]
    hostport = _HOST_PORT.fullmatch(authority)
    host, port = (hostport["host"], hostport["port"]) if hostport else ("", None)
    if port is not None and not re.fullmatch(_PORT, port):
        raise ValueError(f"{field} has an invalid port: give a number from 1 to 65535")
    if not _valid_host(host):
        raise ValueError(
            f"{field} has an invalid host: give a DNS name, an IPv4 address or an [IPv6] address"
        )
    if scheme == "http" and not re.fullmatch(_LOOPBACK, host):
        raise ValueError(
            "plain http is only allowed for loopback hosts (localhost, 127.0.0.0/8, [::1]); "
            "use https"
        )
    if not re.fullmatch(_STRICT, value):
        raise ValueError(f"{field} must look like https://host[:port][/path], in ASCII")
    return value.rstrip("/")


def check_pce_url(url: str, field: str = "the PCE URL") -> str:
    """The PCE base URL without a trailing slash; ValueError says what is wrong with it."""
    url = check_url(url, field)
    if re.match(API_PATH, url):
        raise ValueError("give the PCE base URL without the /api/v2 path")
    return url


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return re.fullmatch(_IPV6, host) is not None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return re.fullmatch(_NAME, host) is not None
