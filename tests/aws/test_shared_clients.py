"""AWS clients shared per target: made once however many FlowExports ask at once, other
targets not held up, a failure not kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import botocore.session
import pytest

from flowexport.aws import session
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, shared_clients

KEYS = AwsKeys("AKIDEXAMPLE", "secret")
#: Set when the slow target's STS answers.
STS = threading.Event()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[AwsTarget]:
    calls: list[AwsTarget] = []
    monkeypatch.setattr(session, "_shared", type(session._shared)())

    def make(target: AwsTarget) -> AwsClients:
        calls.append(target)
        if target.region == "slow-1":
            assert STS.wait(30)  # an AssumeRole waiting on STS
        if target.region == "fail-1" and len(calls) == 1:
            raise RuntimeError("STS unreachable")
        time.sleep(0.05)
        return AwsClients(object(), object(), target)

    monkeypatch.setattr(session, "make_clients", make)
    return calls


def test_many_first_calls_for_one_target_make_its_clients_once(made: list[AwsTarget]) -> None:
    targets = [AwsTarget("eu-west-1", keys=KEYS, requests_per_second=r) for r in range(1, 51)]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(shared_clients, targets))
    assert len(made) == 1
    assert len({id(r.logs) for r in results}) == 1, "one set of clients, shared"
    assert [r.target for r in results] == targets, "each caller keeps its own rate"


def test_a_slow_target_does_not_hold_up_another(made: list[AwsTarget]) -> None:
    STS.clear()
    slow = threading.Thread(target=shared_clients, args=(AwsTarget("slow-1", keys=KEYS),))
    slow.start()
    other = threading.Thread(target=shared_clients, args=(AwsTarget("eu-west-1", keys=KEYS),))
    other.start()
    other.join(10)
    done_first = not other.is_alive()
    STS.set()
    slow.join(10)
    assert done_first, "another target's clients waited for the slow target's"


def test_a_failure_is_not_kept(made: list[AwsTarget]) -> None:
    target = AwsTarget("fail-1", keys=KEYS)
    with pytest.raises(RuntimeError):
        shared_clients(target)
    assert shared_clients(target).target == target
    assert len(made) == 2


def test_clients_of_different_targets_share_their_class_and_keep_their_own_state() -> None:
    """botocore's client class (a method and docstring per operation: about 1 MiB for EC2 and
    Logs) is made once per service, not once per account and region; each client keeps its
    own region, endpoint and credentials. Clients of other botocore sessions are untouched."""
    one = session.make_clients(AwsTarget("eu-west-1", "http://127.0.0.1:1", keys=KEYS))
    other_keys = AwsKeys("AKIDOTHER", "other")
    two = session.make_clients(AwsTarget("us-east-1", "http://127.0.0.2:1", keys=other_keys))
    assert type(one.ec2) is type(two.ec2) and type(one.logs) is type(two.logs)
    assert one.ec2.meta.region_name == "eu-west-1" and two.ec2.meta.region_name == "us-east-1"
    assert one.logs.meta.endpoint_url == "http://127.0.0.1:1"
    assert two.logs.meta.endpoint_url == "http://127.0.0.2:1"
    assert one.ec2._request_signer._credentials.access_key == "AKIDEXAMPLE"
    assert two.ec2._request_signer._credentials.access_key == "AKIDOTHER"
    assert callable(two.ec2.describe_vpcs) and callable(two.logs.describe_log_groups)
    plain = botocore.session.get_session().create_client(
        "ec2", region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    assert type(plain) is not type(one.ec2)
