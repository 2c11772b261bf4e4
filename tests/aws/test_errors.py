import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from flowexport.aws.errors import classify


def client_error(code: str, status: int = 400, message: str = "nope") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Op",
    )


@pytest.mark.parametrize(
    ("code", "status", "reason", "terminal"),
    [
        ("ThrottlingException", 400, "AWSThrottled", False),
        ("RequestLimitExceeded", 503, "AWSThrottled", False),
        ("ServiceUnavailable", 503, "AWSUnavailable", False),
        ("SomethingNew", 500, "AWSUnavailable", False),
        ("AccessDeniedException", 400, "AWSAccessDenied", True),
        ("UnauthorizedOperation", 403, "AWSAccessDenied", True),
        ("InvalidVpcID.NotFound", 400, "VPCNotFound", True),
        ("InvalidParameterValue", 400, "AWSInvalidRequest", True),
    ],
)
def test_classification(code: str, status: int, reason: str, terminal: bool) -> None:
    error = classify(client_error(code, status), "ec2", "DescribeVpcs")
    assert (error.reason, not error.retryable) == (reason, terminal)


def test_denied_names_the_permission_to_grant() -> None:
    error = classify(client_error("UnauthorizedOperation", 403), "ec2", "CreateFlowLogs")
    assert "grant the operator's identity ec2:CreateFlowLogs" in str(error)
    assert "iam:PassRole" in str(error)
    logs = classify(client_error("AccessDeniedException"), "logs", "FilterLogEvents")
    assert "logs:FilterLogEvents" in str(logs)


def test_connection_errors_are_retryable() -> None:
    error = classify(EndpointConnectionError(endpoint_url="http://x"), "logs", "FilterLogEvents")
    assert error.reason == "AWSUnreachable" and error.retryable
