"""AWS failures classified: terminal (the spec, a permission or a resource must change) or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from flowexport.errors import FlowExportError, Reason

# The code tables below keep `# fmt: skip`: several codes a line read as a table.
_THROTTLING = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ProvisionedThroughputExceededException", "KMSThrottlingException",
}  # fmt: skip
_UNAVAILABLE = {
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalServerError", "RequestTimeout", "RequestTimeoutException", "Unavailable",
}  # fmt: skip
_DENIED = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess",
}  # fmt: skip
_BAD_CREDENTIALS = {
    "AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "RequestExpired",
}  # fmt: skip
#: What to do when the operator has no AWS identity (the likeliest first error on EKS).
IDENTITY_ADVICE = (
    "give the operator an identity: annotate its ServiceAccount with "
    "eks.amazonaws.com/role-arn (IRSA), or set spec.aws.credentialsSecretRef"
)
_SERVICE_PREFIX = {
    "ec2": "ec2", "logs": "logs", "cloudwatch logs": "logs", "sts": "sts", "kinesis": "kinesis",
}  # fmt: skip


class AwsError(FlowExportError):
    """A classified AWS failure; retryable as its reason says."""

    reason = Reason.AWS_UNAVAILABLE


T = TypeVar("T")


def call(service: str, operation: str, fn: Callable[..., T], **kw: Any) -> T:
    """`fn(**kw)`, its failure raised as a classified AwsError."""
    try:
        return fn(**kw)
    except AwsError:
        raise
    except Exception as exc:
        raise classify(exc, service, operation) from None


def error_code(exc: Exception) -> str:
    """The AWS error code of a ClientError ("" for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def classify(exc: Exception, service: str, operation: str) -> AwsError:
    """Turn a boto3/botocore exception into an AwsError that says what to do.

    An assumed role's credentials are fetched (and refreshed) inside other calls: a failure of
    STS shows as its own reasons whatever call triggered it.
    """
    action = f"{_SERVICE_PREFIX.get(service.lower(), service.lower())}:{operation}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsError(
            f"no AWS credentials for {action}: {IDENTITY_ADVICE}", Reason.AWS_CREDENTIALS_MISSING
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        detail = str(error.get("Message", "")).strip()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if exc.operation_name == "AssumeRole" and operation != "AssumeRole":
            return classify(exc, "sts", "AssumeRole")
        if code in _THROTTLING:
            return AwsError(f"AWS throttled {action} ({code}); backing off", Reason.AWS_THROTTLED)
        if code in _UNAVAILABLE or (isinstance(status, int) and status >= 500):
            return AwsError(f"AWS failed {action} ({code}); retrying", Reason.AWS_UNAVAILABLE)
        if code in _BAD_CREDENTIALS:
            return AwsError(
                f"AWS refused the operator's credentials for {action} ({code}): they are "
                "expired or wrong; rotate the keys Secret or check the IRSA role",
                Reason.AWS_CREDENTIALS_INVALID,
            )
        if code in _DENIED and operation == "AssumeRole":
            return AwsError(
                f"AWS denied sts:AssumeRole ({code}): let the operator's identity assume "
                "spec.aws.roleArn (its policy and the role's trust policy)",
                Reason.AWS_ASSUME_ROLE_DENIED,
            )
        if code in _DENIED:
            hint = (
                " (and iam:PassRole on the delivery role)" if operation == "CreateFlowLogs" else ""
            )
            return AwsError(
                f"AWS denied {action} ({code}): grant the operator's identity {action}{hint}",
                Reason.AWS_ACCESS_DENIED,
            )
        if code == "InvalidVpcID.NotFound":
            return AwsError(f"the VPC does not exist ({code}: {detail})", Reason.VPC_NOT_FOUND)
        return AwsError(f"AWS rejected {action} ({code}: {detail})", Reason.AWS_INVALID_REQUEST)
    if isinstance(exc, EndpointConnectionError | ConnectionError | HTTPClientError):
        # no connection, a closed one, or no answer in time: the endpoint is out of reach
        if service.lower() == "sts":
            return AwsError(f"cannot reach STS to assume the role: {exc}", Reason.STS_UNREACHABLE)
        return AwsError(f"cannot reach AWS for {action}: {exc}", Reason.AWS_UNREACHABLE)
    if isinstance(exc, BotoCoreError):
        return AwsError(f"AWS call {action} failed: {exc}", Reason.AWS_UNAVAILABLE)
    return AwsError(f"AWS call {action} failed: {type(exc).__name__}", Reason.AWS_UNAVAILABLE)
