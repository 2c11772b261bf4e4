"""Encode flows as the PCE bulk traffic loader's CSV: `src_ip,dst_ip,dst_port,proto`, no header."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from flowexport.core.flows import Flow

#: The PCE accepts at most this many flows in one bulk_traffic_flows request.
PCE_MAX_BATCH = 1000


def flow_to_csv(flow: Flow) -> str:
    """One CSV line (without newline) for one flow."""
    return f"{flow.client_ip},{flow.server_ip},{flow.server_port},{flow.protocol}"


def encode_csv(flows: Iterable[Flow]) -> str:
    """The request body for a batch of flows: one line per flow, each ending in `\\n`."""
    return "".join(f"{flow_to_csv(flow)}\n" for flow in flows)


def check_batch_size(batch_size: int) -> int:
    """Return `batch_size` if the PCE accepts it (1..1000), else raise ValueError."""
    if not 1 <= batch_size <= PCE_MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {PCE_MAX_BATCH}, got {batch_size}")
    return batch_size


def batched(flows: Iterable[Flow], batch_size: int = PCE_MAX_BATCH) -> Iterator[list[Flow]]:
    """Split flows into lists of at most `batch_size` (1..1000)."""
    check_batch_size(batch_size)
    iterator = iter(flows)
    while batch := list(islice(iterator, batch_size)):
        yield batch


def encode_batches(flows: Iterable[Flow], batch_size: int = PCE_MAX_BATCH) -> Iterator[str]:
    """CSV request bodies of at most `batch_size` lines each."""
    for batch in batched(flows, batch_size):
        yield encode_csv(batch)
