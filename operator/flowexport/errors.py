"""The one error base of the product: every failure says its `Reason` and whether to retry.

The edges (AWS, PCE, Secrets, spec validation) raise these; the front ends (the operator and
`flowexport sync`) map them to conditions in one place, `flowexport.lifecycle`.

Hierarchy:

    FlowExportError(reason, retryable)
    ├── SpecError              InvalidSpec: a spec field is invalid (`problems` names them)
    ├── ConfigError            SecretNotFound, SecretInvalid: a Secret the user provides
    ├── AwsError               AWS* reasons, VPCNotFound, LogGroupNotFound, FlowLog*
    └── PCEError               PCEError: any PCE failure; subclasses by cause
        ├── PCEConfigError           PCEConfigInvalid: bad URL or CA bundle
        ├── PCEAuthError             PCEUnauthorized: 401
        ├── PCEPermissionError       PCEForbidden: 403
        ├── PCENotFoundError         PCENotFound: 404
        ├── PCERequestError          PCERequestRejected: another 4xx
        ├── PCETLSError              PCETLSVerificationFailed
        ├── PCEProtocolError         PCEUnexpectedResponse
        └── PCEUnavailableError      PCEUnavailable (retryable): 429, 5xx, timeouts

`retryable` defaults to what the reason says (`Reason.retryable`). No message carries a
credential: the edges build messages from names, codes and documented details only.
"""

from __future__ import annotations

from flowexport.api.conditions import Reason


class FlowExportError(Exception):
    """A failure with a condition `reason`; `retryable` when backing off can clear it."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(
        self, message: str, reason: Reason | None = None, *, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.retryable: bool = self.reason.retryable if retryable is None else retryable


class ConfigError(FlowExportError):
    """A Secret or key the user must provide (the FlowExport's own configuration)."""

    reason = Reason.SECRET_INVALID


def unexpected(exc: BaseException) -> FlowExportError:
    """An error the code did not foresee, as an `InternalError` (retryable; a bug to report).

    Only the type is kept: the text of an arbitrary exception could carry anything.
    """
    return FlowExportError(
        f"unexpected {type(exc).__name__}; see the operator's log", Reason.INTERNAL_ERROR
    )
