import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from flowexport.aws.errors import AwsError, classify
from flowexport.aws.session import AwsKeys, AwsTarget, make_clients


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


def sts_error(code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "AssumeRole",
    )


def test_no_credentials_is_its_own_terminal_reason_with_irsa_advice() -> None:
    error = classify(NoCredentialsError(), "logs", "DescribeLogGroups")
    assert error.reason == "AWSCredentialsMissing" and not error.retryable
    assert "eks.amazonaws.com/role-arn" in str(error)


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidClientTokenId", "SignatureDoesNotMatch"])
def test_expired_or_wrong_credentials_are_named(code: str) -> None:
    error = classify(client_error(code, 403), "logs", "FilterLogEvents")
    assert error.reason == "AWSCredentialsInvalid" and not error.retryable


def test_a_denied_assume_role_is_named_wherever_it_surfaces() -> None:
    direct = classify(sts_error("AccessDenied"), "sts", "AssumeRole")
    assert direct.reason == "AWSAssumeRoleDenied" and "spec.aws.roleArn" in str(direct)
    # a refresh of the assumed role's credentials fails inside another call
    during_read = classify(sts_error("AccessDenied"), "logs", "FilterLogEvents")
    assert during_read.reason == "AWSAssumeRoleDenied"


def test_an_unreachable_sts_is_retryable_and_named() -> None:
    error = classify(EndpointConnectionError(endpoint_url="http://sts"), "sts", "AssumeRole")
    assert error.reason == "STSUnreachable" and error.retryable


def test_make_clients_classifies_what_assuming_the_role_raises() -> None:
    target = AwsTarget(
        "us-east-1",
        endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
        role_arn="arn:aws:iam::123456789012:role/x",
        keys=AwsKeys("AKIAEXAMPLE", "secret"),
    )
    with pytest.raises(AwsError) as caught:
        make_clients(target)
    assert caught.value.reason == "STSUnreachable"


def test_each_service_can_have_its_own_endpoint() -> None:
    target = AwsTarget(
        "us-east-1",
        endpoint_url="https://vpce-1.example",
        service_endpoints=(("sts", "https://sts.example"),),
    )
    assert target.endpoint("sts") == "https://sts.example"
    assert target.endpoint("logs") == "https://vpce-1.example"
    assert AwsTarget("us-east-1").endpoint("ec2") is None
