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

#: Host names no URL of the spec may name: the in-cluster API server and the clouds' instance
#: metadata services (a FlowExport's author must not aim the operator's requests at them).
FORBIDDEN_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "metadata",
    "metadata.google.internal",
    "instance-data",
    "instance-data.ec2.internal",
)
_FORBIDDEN_NAME = (
    r"(?i:kubernetes(\.default(\.svc(\.[^:/]*)?)?)?"
    r"|metadata(\.google\.internal)?|instance-data(\.ec2\.internal)?)"
)
#: Link-local (169.254.0.0/16: the metadata services), unspecified, and in brackets: IPv6
#: link-local (fe80::/10), EC2's metadata prefix (fd00:ec2::/32), unspecified, and IPv4
#: link-local embedded (::ffff:169.254.x.x, ::a9fe:x).
_FORBIDDEN_ADDRESS = (
    r"(169\.254\.[0-9]{1,3}\.[0-9]{1,3}|0\.0\.0\.0"
    r"|\[(?i:fe[89ab][0-9a-f]:|fd00:0?ec2:|[0:]*\]|[0:]*(ffff:)?(169\.254\.|a9fe:))[^\]]*\]?)"
)
#: A URL whose host is one of those (the CRD's CEL rule; `forbidden_host` is the whole rule).
FORBIDDEN_HOST = rf"^[A-Za-z]+://({_FORBIDDEN_NAME}|{_FORBIDDEN_ADDRESS})([:/]|$)"
#: What a URL naming a forbidden host is told (the CRD's message and the models').
FORBIDDEN_HOST_MESSAGE = (
    "must not name a link-local or cloud metadata address (169.254.0.0/16, fe80::/10, "
    "fd00:ec2::/32), an unspecified one, or the Kubernetes API server (kubernetes.default.svc)"
)

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
    if forbidden_host(host):
        raise ValueError(f"{field} {FORBIDDEN_HOST_MESSAGE}")
    return value.rstrip("/")


def forbidden_host(host: str) -> bool:
    """Whether `host` (as in a URL: an IPv6 address in brackets) is one no URL may name:
    see `FORBIDDEN_NAMES` and `FORBIDDEN_HOST_MESSAGE`."""
    name = host.lower().rstrip(".")
    if name in FORBIDDEN_NAMES or name.startswith("kubernetes.default.svc."):
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        elif 1 < int(address) < 2**32:  # IPv4-compatible (::a.b.c.d)
            candidates.append(ipaddress.IPv4Address(int(address)))
        if address in _EC2_METADATA_V6:
            return True
    return any(a.is_link_local or a.is_unspecified for a in candidates)


_EC2_METADATA_V6 = ipaddress.IPv6Network("fd00:ec2::/32")


def endpoint_of(url: str) -> tuple[str, int]:
    """(host, port) an http(s) URL connects to: the host in lower case (an IPv6 address in
    canonical form, in brackets), the port given or the scheme's default (443, 80)."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].rpartition("@")[2]
    match = _HOST_PORT.fullmatch(authority)
    host, port = (match["host"], match["port"]) if match else (authority, None)
    default = 80 if scheme.lower() == "http" else 443
    return _canonical_host(host), int(port) if port and port.isdigit() else default


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST` or `HOST:PORT` (an IPv6 address in brackets) as (host, port), canonical as
    `endpoint_of` gives them; HOST alone means port 443. ValueError says what is wrong."""
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None or "/" in text or not _valid_host(match["host"]):
        raise ValueError(
            f"{text!r} is not HOST or HOST:PORT (a DNS name, an IPv4 address or an [IPv6] one; "
            "no scheme or path)"
        )
    port = match["port"]
    if port is not None and not re.fullmatch(_PORT, port):
        raise ValueError(f"{text!r} has an invalid port: give a number from 1 to 65535")
    return _canonical_host(match["host"]), int(port) if port is not None else 443


def _canonical_host(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return host
    return host


def host_port_text(endpoint: tuple[str, int]) -> str:
    """(host, port) as `host:port`."""
    return f"{endpoint[0]}:{endpoint[1]}"


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
