import pytest

from flowexport.core.direction import port_rank, source_is_client


@pytest.mark.parametrize(
    ("port", "rank"),
    [
        (22, 0),
        (443, 0),
        (1023, 0),
        (8080, 1),
        (30080, 1),
        (3306, 2),
        (1030, 2),
        (40000, 3),
        (50000, 3),
        (65535, 3),
        (61500, 3),
    ],
)
def test_port_rank(port: int, rank: int) -> None:
    assert port_rank(port) == rank


def test_syn_marks_the_client_even_against_the_port_rule() -> None:
    # A client on port 80 connecting to a server on 50051: only the SYN tells.
    assert source_is_client("10.0.0.1", "10.0.0.2", 80, 50051, 6, 2)
    assert source_is_client("10.0.0.1", "10.0.0.2", 80, 50051, 6, 3)  # SYN + FIN


def test_syn_ack_marks_the_server() -> None:
    assert not source_is_client("10.0.0.2", "10.0.0.1", 50051, 80, 6, 18)
    assert not source_is_client("10.0.0.2", "10.0.0.1", 50051, 80, 6, 19)


@pytest.mark.parametrize(
    ("srcport", "dstport", "client_is_src"),
    [
        (48512, 5432, True),  # Linux ephemeral -> registered port
        (5432, 48512, False),
        (61522, 443, True),  # IANA ephemeral -> well-known
        (1030, 8080, True),  # old Windows ephemeral -> non-ephemeral
        (40000, 3306, True),  # both look ephemeral-ish: the more ephemeral one is the client
        (9200, 9300, False),  # same rank: the lower port (9200, the source's) is the service
    ],
)
def test_port_rule_without_flags(srcport: int, dstport: int, client_is_src: bool) -> None:
    assert source_is_client("10.0.0.1", "10.0.0.2", srcport, dstport, 17, None) is client_is_src


def test_fin_or_rst_only_falls_back_to_ports() -> None:
    assert not source_is_client("10.0.0.2", "10.0.0.1", 443, 50000, 6, 1)
    assert source_is_client("10.0.0.1", "10.0.0.2", 50000, 443, 6, 4)


def test_equal_ports_pick_one_orientation_for_both_legs() -> None:
    forward = source_is_client("10.0.0.1", "10.0.0.2", 123, 123, 17, None)
    backward = source_is_client("10.0.0.2", "10.0.0.1", 123, 123, 17, None)
    assert forward != backward
