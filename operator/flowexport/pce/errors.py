"""PCE errors that say what to fix; the hierarchy is drawn in `flowexport.errors`.

No message carries a credential.
"""

from __future__ import annotations

from flowexport.errors import FlowExportError, Reason


class PCEError(FlowExportError):
    """Base of every PCE failure; subclasses name the cause."""

    reason = Reason.PCE_ERROR


class PCEConfigError(PCEError):
    """The client is configured wrongly (bad URL, bad CA bundle)."""

    reason = Reason.PCE_CONFIG_INVALID


class PCEAuthError(PCEError):
    """401: the API key's username or secret is wrong."""

    reason = Reason.PCE_UNAUTHORIZED


class PCEPermissionError(PCEError):
    """403: the API key is valid but lacks a permission."""

    reason = Reason.PCE_FORBIDDEN


class PCENotFoundError(PCEError):
    """404: wrong PCE URL or org id (or an object that does not exist)."""

    reason = Reason.PCE_NOT_FOUND


class PCERequestError(PCEError):
    """Another 4xx: the PCE refused the request as sent; retrying will not help."""

    reason = Reason.PCE_REQUEST_REJECTED


class PCETLSError(PCEError):
    """The PCE's certificate could not be verified."""

    reason = Reason.PCE_TLS_VERIFICATION_FAILED


class PCEProtocolError(PCEError):
    """The PCE answered success with a body that is not what the API documents."""

    reason = Reason.PCE_UNEXPECTED_RESPONSE


class PCEUnavailableError(PCEError):
    """Retries exhausted on 429, 5xx, timeouts or connection failures."""

    reason = Reason.PCE_UNAVAILABLE
