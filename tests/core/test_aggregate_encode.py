import pytest

from flowexport.core.aggregate import Aggregator
from flowexport.core.encode import PCE_MAX_BATCH, batched, encode_batches, encode_csv
from flowexport.core.flows import Flow

WEB = Flow("10.0.1.15", "10.0.2.40", 443, 6)
DNS = Flow("10.0.1.15", "10.0.0.2", 53, 17)


def test_aggregator_counts_duplicates_in_first_seen_order() -> None:
    agg = Aggregator()
    agg.add(WEB)
    agg.add(DNS)
    agg.add(WEB, records=3)
    assert agg.flows() == [WEB, DNS]
    assert dict(agg.items()) == {WEB: 4, DNS: 1}
    assert agg.records == 5
    assert WEB in agg
    assert len(agg) == 2


def test_drain_closes_the_window() -> None:
    agg = Aggregator()
    agg.add(WEB)
    assert agg.drain() == [(WEB, 1)]
    assert len(agg) == 0
    assert agg.drain() == []


def test_merge() -> None:
    a, b = Aggregator(), Aggregator()
    a.add(WEB)
    b.add(WEB, records=2)
    b.add(DNS)
    a.merge(b)
    assert dict(a.items()) == {WEB: 3, DNS: 1}


def test_csv_has_no_header_and_four_columns() -> None:
    v6 = Flow("2001:db8::1", "2001:db8::2", 0, 58)
    assert encode_csv([WEB, DNS, v6]) == (
        "10.0.1.15,10.0.2.40,443,6\n10.0.1.15,10.0.0.2,53,17\n2001:db8::1,2001:db8::2,0,58\n"
    )
    assert encode_csv([]) == ""


def test_batches_never_exceed_the_limit() -> None:
    flows = [Flow(f"10.0.{i // 250}.{i % 250}", "10.1.0.1", 443, 6) for i in range(2500)]
    sizes = [len(b) for b in batched(flows)]
    assert sizes == [1000, 1000, 500]
    bodies = list(encode_batches(flows, batch_size=300))
    assert [body.count("\n") for body in bodies] == [300] * 8 + [100]
    assert "".join(bodies) == encode_csv(flows)


@pytest.mark.parametrize("size", [0, -1, PCE_MAX_BATCH + 1])
def test_batch_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 1000"):
        list(batched([WEB], size))
