"""PCE errors that say what to fix. No message carries a credential."""

from __future__ import annotations


class PCEError(Exception):
    """Base of every PCE failure; `reason` is a CamelCase word for conditions and metrics."""

    reason = "PCEError"
    retryable = False


class PCEConfigError(PCEError):
    """The client is configured wrongly (bad URL, bad CA bundle)."""

    reason = "PCEConfigInvalid"


class PCEAuthError(PCEError):
    """401: the API key's username or secret is wrong."""

    reason = "PCEUnauthorized"


class PCEPermissionError(PCEError):
    """403: the API key is valid but lacks a permission."""

    reason = "PCEForbidden"


class PCENotFoundError(PCEError):
    """404: wrong PCE URL or org id (or an object that does not exist)."""

    reason = "PCENotFound"


class PCERequestError(PCEError):
    """Another 4xx: the PCE refused the request as sent; retrying will not help."""

    reason = "PCERequestRejected"


class PCETLSError(PCEError):
    """The PCE's certificate could not be verified."""

    reason = "PCETLSVerificationFailed"


class PCEProtocolError(PCEError):
    """The PCE answered success with a body that is not what the API documents."""

    reason = "PCEUnexpectedResponse"


class PCEUnavailableError(PCEError):
    """Retries exhausted on 429, 5xx, timeouts or connection failures."""

    reason = "PCEUnavailable"
    retryable = True
