"""The simulator's label selectors and what a label change is to a selecting watch, as the API
server has them."""

from __future__ import annotations

import pytest

from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.selectors import as_seen_by, parse_label_selector, selects


def obj(**labels: str) -> dict[str, object]:
    return {"metadata": {"name": "x", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "a"}, False),
        ("app=a", {"app": "a"}, True),
        ("app==a", {"app": "b"}, False),
        ("app!=a", {}, True),
        ("app!=a", {"app": "a"}, False),
        ("env in (prod, dev)", {"env": "dev"}, True),
        ("env in (prod,dev)", {"env": "qa"}, False),
        ("env notin (prod)", {}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("app=a,env in (prod,dev),!tmp", {"app": "a", "env": "prod"}, True),
        ("app=a,env in (prod,dev),!tmp", {"app": "a", "env": "prod", "tmp": "1"}, False),
    ],
)
def test_selectors_select_as_the_api_server_does(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    assert selects(parse_label_selector(selector), obj(**labels)) is expected


@pytest.mark.parametrize("selector", ["a b", "a=(b)", "=a", "a in b", "a in (b"])
def test_a_malformed_selector_is_a_bad_request(selector: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_label_selector(selector)
    assert raised.value.code == 400


def test_starting_and_stopping_to_match_are_added_and_deleted() -> None:
    sel = parse_label_selector("flowexport.io/secret-type")
    marked, plain = obj(**{"flowexport.io/secret-type": "x"}), obj()
    assert as_seen_by(sel, "MODIFIED", plain, marked) == "ADDED"
    assert as_seen_by(sel, "MODIFIED", marked, plain) == "DELETED"
    assert as_seen_by(sel, "MODIFIED", marked, marked) == "MODIFIED"
    assert as_seen_by(sel, "MODIFIED", plain, plain) is None
    assert as_seen_by(sel, "ADDED", None, marked) == "ADDED"
    assert as_seen_by(sel, "DELETED", marked, marked) == "DELETED"
    assert as_seen_by(sel, "DELETED", plain, plain) is None
