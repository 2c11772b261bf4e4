"""The namespaced install's access keeper, its pure part: who still needs the clean-up, and
the finalizer list written (the loop itself runs against the simulator in
tests/e2e/test_rbac.py and the real server in tests/realkube/test_operator_namespaced.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flowexport.kube.access import ACCESS_FINALIZER, Holders, holders_of, wanted, with_finalizer

CLEANUP = "flowexport.io/cleanup"


def item(*finalizers: str, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"finalizers": list(finalizers)}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-07T04:00:00Z"
    return {"metadata": metadata}


def test_only_objects_holding_the_clean_up_finalizer_count() -> None:
    items = [
        item(CLEANUP),
        item(CLEANUP, "example.com/other", deleting=True),
        item("example.com/other", deleting=True),  # another controller's: not ours to wait for
        item(),
        {"metadata": {}},
        {},
    ]
    assert holders_of(items, CLEANUP) == Holders(count=2, deleting=1)
    assert wanted(holders_of(items, CLEANUP))
    assert not wanted(holders_of(items[2:], CLEANUP))


finalizer_names = st.sampled_from(
    [ACCESS_FINALIZER, "kubernetes", "example.com/a", "example.com/b", "flowexport.io/in-use"]
)


@given(st.lists(finalizer_names, unique=True), st.booleans())
def test_the_finalizer_is_added_or_removed_and_the_others_kept_in_order(
    current: list[str], present: bool
) -> None:
    new = with_finalizer(current, ACCESS_FINALIZER, present)
    others = [f for f in current if f != ACCESS_FINALIZER]
    assert [f for f in new if f != ACCESS_FINALIZER] == others
    assert (ACCESS_FINALIZER in new) is present
    assert new.count(ACCESS_FINALIZER) <= 1
    assert with_finalizer(new, ACCESS_FINALIZER, present) == new  # idempotent
